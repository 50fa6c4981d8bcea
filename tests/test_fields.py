"""Displacement fields carried onto other grids and inverted (bidsreg.fields)."""
from __future__ import annotations

import numpy as np
import pytest

from bidsreg.fields import invert_displacement, resample_displacement
from bidsreg.transform import Transform

from .grids import SHAPE, grid_affine, smooth_field, world_grid

def test_resample_displacement_onto_a_finer_oblique_grid():
    source = grid_affine(spacing=(2.0, 2.0, 2.0))
    # A field linear in world mm is reproduced exactly by trilinear interpolation.
    gradient = np.array([[0.02, -0.01, 0.03], [0.0, 0.05, -0.02], [0.01, 0.0, 0.04]])
    field = (world_grid(SHAPE, source) @ gradient.T + [1.0, -2.0, 0.5]).astype(np.float32)
    target = grid_affine(spacing=(1.0, 1.0, 1.0), signs=(-1, 1, 1), degrees=15)
    shape = (30, 36, 27)
    out = resample_displacement(field, source, shape, target)
    assert out.shape == shape + (3,) and out.dtype == np.float32
    world = world_grid(shape, target)
    voxels = (world - source[:3, 3]) / 2.0
    inside = np.all((voxels >= 0) & (voxels <= np.array(SHAPE) - 1), axis=-1)
    assert inside.mean() > 0.5 and not inside.all()
    np.testing.assert_allclose(out[inside], (world @ gradient.T + [1.0, -2.0, 0.5])[inside], atol=1e-4)
    # Outside the source grid the border values continue (the field is not cut to zero).
    corner = np.clip(voxels[~inside], 0, np.array(SHAPE) - 1) * 2.0 + source[:3, 3]
    np.testing.assert_allclose(out[~inside], corner @ gradient.T + [1.0, -2.0, 0.5], atol=1e-4)


def test_invert_displacement_residual():
    affine = grid_affine(spacing=(2.0, 2.0, 2.0), signs=(-1, 1, 1), degrees=10)
    displacement = smooth_field(SHAPE, affine, amplitude=5.0)
    inverse = invert_displacement(displacement, affine)
    assert inverse.shape == displacement.shape and inverse.dtype == np.float32
    # Residual of z -> z + w(z) -> (z + w) + d(z + w), away from the border by > 5 mm.
    world = world_grid(SHAPE, affine)[4:-4, 4:-4, 4:-4].reshape(-1, 3)
    transform = Transform(np.eye(4), displacement, inverse, affine)
    there_and_back = transform.map_points(transform.map_points_inverse(world))
    residual_voxels = np.linalg.norm(there_and_back - world, axis=1) / 2.0
    assert residual_voxels.max() < 0.1, residual_voxels.max()
    assert np.abs(inverse).max() > 4.0


def test_invert_displacement_errors():
    with pytest.raises(ValueError, match="iterations"):
        invert_displacement(np.zeros(SHAPE + (3,)), grid_affine(), iterations=0)
    with pytest.raises(ValueError, match=r"shape \(20, 24, 18, 3\)"):
        invert_displacement(np.zeros(SHAPE + (2,)), grid_affine())
