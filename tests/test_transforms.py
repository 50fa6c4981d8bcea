"""Applying and inverting transforms in RAS+ (bidsreg.transforms)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from bidsreg.image import Volume
from bidsreg.transforms import (
    apply_inverse_transform,
    apply_transform,
    invert_displacement,
    map_points,
    map_points_inverse,
    resample_displacement,
)

SHAPE = (20, 24, 18)


def grid_affine(spacing=(2.0, 1.5, 2.5), signs=(1, 1, 1), degrees=0.0) -> np.ndarray:
    """Voxel -> RAS+ affine, optionally tilted about S, centred near the origin."""
    angle = np.deg2rad(degrees)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(np.multiply(signs, spacing))
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2)
    return affine


def world_grid(shape, affine) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def smooth_field(shape, affine, amplitude=5.0) -> np.ndarray:
    """(X, Y, Z, 3) RAS+ mm, sums of sines of about ``amplitude`` mm, |grad| < 0.5."""
    world = world_grid(shape, affine)
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    return amplitude * np.stack(
        [np.sin(y / 12 + 0.5), np.cos(z / 14 + x / 30), np.sin(x / 13 - 1.0)], axis=-1
    ).astype(np.float32)


def random_image(seed=0, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_identity_returns_the_image():
    affine = grid_affine(signs=(-1, 1, 1), degrees=7)
    moving = Volume(random_image(), affine)
    zero = np.zeros(SHAPE + (3,), np.float32)
    out = apply_transform(moving, SHAPE, affine, np.eye(4), zero)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, moving.data, atol=1e-4)
    labels = Volume(np.random.default_rng(1).integers(0, 9, SHAPE).astype(np.uint8), affine)
    out = apply_transform(labels, SHAPE, affine, np.eye(4), interpolation="nearest")
    np.testing.assert_array_equal(out, labels.data)


@pytest.mark.parametrize("signs", [(1, 1, 1), (-1, 1, 1)], ids=["RAS", "LAS"])
def test_translation_of_two_voxels(signs):
    affine = grid_affine(signs=signs, degrees=10)
    moving = Volume(random_image(2), affine)
    shift = np.eye(4)
    shift[:3, 3] = 2 * affine[:3, 0]  # two voxels along the first voxel axis, in mm
    out = apply_transform(moving, SHAPE, affine, shift, fill=-1)
    np.testing.assert_allclose(out[:-2], moving.data[2:], atol=1e-4)
    np.testing.assert_array_equal(out[-2:], -1)
    # The same shift as a displacement field along the second axis.
    displacement = np.broadcast_to(2 * affine[:3, 1], SHAPE + (3,)).astype(np.float32)
    out = apply_transform(moving, SHAPE, affine, np.eye(4), displacement)
    np.testing.assert_allclose(out[:, :-2], moving.data[:, 2:], atol=1e-4)
    np.testing.assert_array_equal(out[:, -2:], 0)


def test_linear_matches_scipy_on_other_grid():
    """An independent resampler (scipy, voxel maths) agrees: catches axis-order mistakes."""
    moving_affine = grid_affine(signs=(-1, 1, 1), degrees=5)
    moving = Volume(ndimage.gaussian_filter(random_image(3), 1.5), moving_affine)
    reference_shape = (16, 22, 14)
    reference_affine = np.diag([2.2, 1.8, 2.0, 1.0])
    reference_affine[:3, 3] = [-15.0, -18.0, -13.0]
    affine = np.eye(4)
    affine[:3, :3] = [[0.98, -0.1, 0.05], [0.1, 0.99, 0.0], [-0.05, 0.02, 1.02]]
    affine[:3, 3] = [1.5, -2.0, 0.7]
    displacement = smooth_field(reference_shape, reference_affine, amplitude=2.0)
    out = apply_transform(moving, reference_shape, reference_affine, affine, displacement)
    world = world_grid(reference_shape, reference_affine) + displacement
    voxels = map_points(world.reshape(-1, 3), np.linalg.inv(moving_affine) @ affine)
    inside = np.all((voxels >= 0) & (voxels <= np.array(SHAPE) - 1), axis=1)
    expected = ndimage.map_coordinates(moving.data, voxels.T, order=1)
    np.testing.assert_allclose(out.ravel()[inside], expected[inside], atol=1e-4)
    assert inside.mean() > 0.5


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_nearest_keeps_labels(dtype):
    affine = grid_affine()
    labels = np.random.default_rng(4).choice([0, 3, 7, 42, 250], size=SHAPE).astype(dtype)
    moving = Volume(labels, affine)
    transform = np.eye(4)
    transform[:3, :3] = [[0.97, 0.1, 0], [-0.1, 0.97, 0.05], [0, -0.05, 1.03]]
    transform[:3, 3] = [0.37, -1.21, 0.55]  # fractional voxels
    displacement = smooth_field(SHAPE, affine, 1.3)
    out = apply_transform(moving, SHAPE, affine, transform, displacement, interpolation="nearest")
    assert out.dtype == dtype
    assert set(np.unique(out)) <= set(np.unique(labels))
    assert len(np.unique(out)) == len(np.unique(labels))


def test_apply_transform_errors():
    moving = Volume(random_image(), grid_affine())
    with pytest.raises(ValueError, match="interpolation"):
        apply_transform(moving, SHAPE, grid_affine(), np.eye(4), interpolation="cubic")
    with pytest.raises(ValueError, match=r"\(20, 24, 18, 3\)"):
        apply_transform(moving, SHAPE, grid_affine(), np.eye(4), np.zeros((20, 24, 3)))
    with pytest.raises(ValueError, match="4, 4"):
        apply_transform(moving, SHAPE, np.eye(3), np.eye(4))
    labels = Volume(np.zeros(SHAPE, np.uint8), grid_affine())
    with pytest.raises(ValueError, match="fill"):
        apply_transform(labels, SHAPE, grid_affine(), np.eye(4), interpolation="nearest", fill=-1)


def test_map_points():
    affine = grid_affine(degrees=20)
    transform = np.eye(4)
    transform[:3, 3] = [1.0, 2.0, 3.0]
    displacement = np.zeros(SHAPE + (3,), np.float32)
    displacement[4, 5, 6] = [0.5, -1.0, 2.0]
    voxel_centre = affine[:3, :3] @ [4, 5, 6] + affine[:3, 3]
    between = affine[:3, :3] @ [4.5, 5, 6] + affine[:3, 3]
    outside = affine[:3, :3] @ [-3, 5, 6] + affine[:3, 3]
    got = map_points(np.array([voxel_centre, between, outside]), transform, displacement, affine)
    np.testing.assert_allclose(got[0], voxel_centre + [1.5, 1.0, 5.0], atol=1e-5)
    np.testing.assert_allclose(got[1], between + [1.25, 1.5, 4.0], atol=1e-5)  # half the vector
    np.testing.assert_allclose(got[2], outside + [1.0, 2.0, 3.0], atol=1e-5)  # zero outside
    with pytest.raises(ValueError, match="reference_affine"):
        map_points(got, transform, displacement)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        map_points(np.zeros(3), transform)


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
    back = map_points_inverse(map_points_inverse(world, np.eye(4)), np.eye(4), inverse, affine)
    there_and_back = map_points(back, np.eye(4), displacement, affine)
    residual_voxels = np.linalg.norm(there_and_back - world, axis=1) / 2.0
    assert residual_voxels.max() < 0.1, residual_voxels.max()
    assert np.abs(inverse).max() > 4.0


def test_inverse_round_trip_of_points():
    affine = grid_affine(spacing=(2.0, 2.0, 2.0))
    displacement = smooth_field(SHAPE, affine, amplitude=3.0)
    inverse = invert_displacement(displacement, affine)
    transform = np.eye(4)
    transform[:3, :3] = [[0.99, -0.1, 0], [0.1, 0.99, 0], [0, 0, 1.0]]
    transform[:3, 3] = [2.0, -1.0, 0.5]
    points = world_grid(SHAPE, affine)[5:-5, 5:-5, 5:-5].reshape(-1, 3)
    moved = map_points(points, transform, displacement, affine)
    np.testing.assert_allclose(map_points_inverse(moved, transform, inverse, affine), points, atol=0.05)


def test_apply_inverse_transform_undoes_forward():
    affine = grid_affine(spacing=(2.0, 2.0, 2.0))
    moving = Volume(ndimage.gaussian_filter(random_image(5), 2.0), affine)
    displacement = smooth_field(SHAPE, affine, amplitude=2.0)
    transform = np.eye(4)
    transform[:3, 3] = [1.0, -1.5, 0.5]
    warped = Volume(apply_transform(moving, SHAPE, affine, transform, displacement), affine)
    back = apply_inverse_transform(
        warped, SHAPE, affine, transform, invert_displacement(displacement, affine), affine
    )
    core = (slice(5, -5),) * 3
    assert np.corrcoef(back[core].ravel(), moving.data[core].ravel())[0, 1] > 0.95
    with pytest.raises(ValueError, match="reference_affine"):
        apply_inverse_transform(warped, SHAPE, affine, transform, displacement)


def test_invert_displacement_errors():
    with pytest.raises(ValueError, match="iterations"):
        invert_displacement(np.zeros(SHAPE + (3,)), grid_affine(), iterations=0)
    with pytest.raises(ValueError, match=r"shape \(20, 24, 18, 3\)"):
        invert_displacement(np.zeros(SHAPE + (2,)), grid_affine())


@pytest.mark.slow
def test_full_size_speed():
    """A 256 x 256 x 160 image and label map warp in a few seconds on two threads."""
    shape = (256, 256, 160)
    affine = np.diag([1.0, 1.0, 1.2, 1.0])
    rng = np.random.default_rng(6)
    image = Volume(rng.random(shape, dtype=np.float32), affine)
    labels = Volume(rng.integers(0, 100, shape, dtype=np.int32), affine)
    transform = np.eye(4)
    transform[:3, 3] = [2.5, -1.2, 3.3]
    displacement = np.full(shape + (3,), 1.5, np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for volume, interpolation in ((image, "linear"), (labels, "nearest")):
            start = time.perf_counter()
            apply_transform(volume, shape, affine, transform, displacement, interpolation=interpolation)
            assert time.perf_counter() - start < 5.0, interpolation
    finally:
        torch.set_num_threads(threads)
