"""The inverse of a displacement field (bidsreg.fields)."""
from __future__ import annotations

import numpy as np
import pytest

from bidsreg.fields import invert_displacement
from bidsreg.transform import Transform

from .grids import SHAPE, grid_affine, smooth_field, world_grid

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
