"""One transform value, both directions, applied with SimpleITK (bidsreg.transform)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bidsreg.fields import invert_displacement
from bidsreg.image import Grid, Volume
from bidsreg.transform import Transform

from .grids import SHAPE, grid_affine, random_image, smooth_field, world_grid

GRID = Grid(SHAPE, grid_affine())


def test_identity_returns_the_image():
    affine = grid_affine(signs=(-1, 1, 1), degrees=7)
    moving = Volume(random_image(), affine)
    zero = np.zeros(SHAPE + (3,), np.float32)
    out = Transform(np.eye(4), zero, zero, affine).apply(moving, Grid(SHAPE, affine))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, moving.data, atol=1e-4)
    labels = Volume(np.random.default_rng(1).integers(0, 9, SHAPE).astype(np.uint8), affine)
    out = Transform(np.eye(4)).apply(labels, Grid(SHAPE, affine), nearest=True)
    np.testing.assert_array_equal(out, labels.data)


@pytest.mark.parametrize("signs", [(1, 1, 1), (-1, 1, 1)], ids=["RAS", "LAS"])
def test_translation_of_two_voxels(signs):
    affine = grid_affine(signs=signs, degrees=10)
    grid = Grid(SHAPE, affine)
    moving = Volume(random_image(2), affine)
    shift = np.eye(4)
    shift[:3, 3] = 2 * affine[:3, 0]  # two voxels along the first voxel axis, in mm
    out = Transform(shift).apply(moving, grid, fill=-1)
    np.testing.assert_allclose(out[:-2], moving.data[2:], atol=1e-4)
    np.testing.assert_array_equal(out[-2:], -1)
    # The same shift as a displacement field along the second axis.
    displacement = np.broadcast_to(2 * affine[:3, 1], SHAPE + (3,)).astype(np.float32)
    out = Transform(np.eye(4), displacement, field_affine=affine).apply(moving, grid)
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
    out = Transform(affine, displacement, field_affine=reference_affine).apply(moving, Grid(reference_shape,
                                                                                           reference_affine))
    world = world_grid(reference_shape, reference_affine) + displacement
    to_voxels = np.linalg.inv(moving_affine) @ affine
    voxels = world.reshape(-1, 3) @ to_voxels[:3, :3].T + to_voxels[:3, 3]
    inside = np.all((voxels >= 0) & (voxels <= np.array(SHAPE) - 1), axis=1)
    expected = ndimage.map_coordinates(moving.data, voxels.T, order=1)
    np.testing.assert_allclose(out.ravel()[inside], expected[inside], atol=1e-4)
    assert inside.mean() > 0.5


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_nearest_keeps_labels(dtype):
    affine = grid_affine()
    labels = np.random.default_rng(4).choice([0, 3, 7, 42, 250], size=SHAPE).astype(dtype)
    moving = Volume(labels, affine)
    matrix = np.eye(4)
    matrix[:3, :3] = [[0.97, 0.1, 0], [-0.1, 0.97, 0.05], [0, -0.05, 1.03]]
    matrix[:3, 3] = [0.37, -1.21, 0.55]  # fractional voxels
    displacement = smooth_field(SHAPE, affine, 1.3)
    out = Transform(matrix, displacement, field_affine=affine).apply(moving, Grid(SHAPE, affine), nearest=True)
    assert out.dtype == dtype
    assert set(np.unique(out)) <= set(np.unique(labels))
    assert len(np.unique(out)) == len(np.unique(labels))


def test_bad_transforms_and_fills():
    with pytest.raises(ValueError, match="singular"):
        Transform(np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="field_affine"):
        Transform(np.eye(4), np.zeros(SHAPE + (3,), np.float32))
    with pytest.raises(ValueError, match=r"\(X, Y, Z, 3\)"):
        Transform(np.eye(4), np.zeros((20, 24, 3)), field_affine=grid_affine())
    labels = Volume(np.zeros(SHAPE, np.uint8), grid_affine())
    with pytest.raises(ValueError, match="fill"):
        Transform(np.eye(4)).apply(labels, GRID, nearest=True, fill=-1)
    displacement = np.zeros(SHAPE + (3,), np.float32)
    with pytest.raises(ValueError, match="no inverse"):
        Transform(np.eye(4), displacement, field_affine=grid_affine()).apply_inverse(labels, GRID, nearest=True)


def test_map_points():
    affine = grid_affine(degrees=20)
    matrix = np.eye(4)
    matrix[:3, 3] = [1.0, 2.0, 3.0]
    displacement = np.zeros(SHAPE + (3,), np.float32)
    displacement[4, 5, 6] = [0.5, -1.0, 2.0]
    voxel_centre = affine[:3, :3] @ [4, 5, 6] + affine[:3, 3]
    between = affine[:3, :3] @ [4.5, 5, 6] + affine[:3, 3]
    outside = affine[:3, :3] @ [-3, 5, 6] + affine[:3, 3]
    got = Transform(matrix, displacement, field_affine=affine).map_points(np.array([voxel_centre, between, outside]))
    np.testing.assert_allclose(got[0], voxel_centre + [1.5, 1.0, 5.0], atol=1e-5)
    np.testing.assert_allclose(got[1], between + [1.25, 1.5, 4.0], atol=1e-5)  # half the vector
    np.testing.assert_allclose(got[2], outside + [1.0, 2.0, 3.0], atol=1e-5)  # zero outside
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        Transform(matrix).map_points(np.zeros(3))


def test_inverse_round_trip_of_points():
    affine = grid_affine(spacing=(2.0, 2.0, 2.0))
    displacement = smooth_field(SHAPE, affine, amplitude=3.0)
    matrix = np.eye(4)
    matrix[:3, :3] = [[0.99, -0.1, 0], [0.1, 0.99, 0], [0, 0, 1.0]]
    matrix[:3, 3] = [2.0, -1.0, 0.5]
    transform = Transform(matrix, displacement, invert_displacement(displacement, affine), affine)
    points = world_grid(SHAPE, affine)[5:-5, 5:-5, 5:-5].reshape(-1, 3)
    np.testing.assert_allclose(transform.map_points_inverse(transform.map_points(points)), points, atol=0.05)


def test_apply_inverse_undoes_forward():
    affine = grid_affine(spacing=(2.0, 2.0, 2.0))
    grid = Grid(SHAPE, affine)
    moving = Volume(ndimage.gaussian_filter(random_image(5), 2.0), affine)
    displacement = smooth_field(SHAPE, affine, amplitude=2.0)
    matrix = np.eye(4)
    matrix[:3, 3] = [1.0, -1.5, 0.5]
    transform = Transform(matrix, displacement, invert_displacement(displacement, affine), affine)
    warped = Volume(transform.apply(moving, grid), affine)
    back = transform.apply_inverse(warped, grid)
    core = (slice(5, -5),) * 3
    assert np.corrcoef(back[core].ravel(), moving.data[core].ravel())[0, 1] > 0.95


def test_write_and_read_both_directions(tmp_path):
    affine = grid_affine(spacing=(2.0, 2.0, 2.0), signs=(-1, 1, 1))
    displacement = smooth_field(SHAPE, affine, amplitude=2.0)
    matrix = np.eye(4)
    matrix[:3, 3] = [1.0, -1.5, 0.5]
    transform = Transform(matrix, displacement, invert_displacement(displacement, affine), affine)
    transform.write(tmp_path / "forward.h5", tmp_path / "inverse.h5")
    back = Transform.read(tmp_path / "forward.h5", tmp_path / "inverse.h5")
    np.testing.assert_allclose(back.affine, matrix, atol=1e-12)
    np.testing.assert_allclose(back.field_affine, affine, atol=1e-6)
    np.testing.assert_allclose(back.displacement, displacement, atol=1e-6)
    np.testing.assert_allclose(back.inverse_displacement, transform.inverse_displacement, atol=1e-6)
    other = Transform(np.eye(4))
    other.write(tmp_path / "other.h5", tmp_path / "other_inverse.h5")
    assert not Transform.read(tmp_path / "other.h5").deformable
    with pytest.raises(ValueError, match="not the inverse"):
        Transform.read(tmp_path / "forward.h5", tmp_path / "other_inverse.h5")


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_warping_only_where_the_image_lands_changes_no_voxel(inverse):
    """A brain-like image (zero around a small blob) warped through an oblique affine and a
    field on a smaller grid: resampled over the box where it can be non-zero, zeros elsewhere,
    it is the whole-grid resampling voxel for voxel, image and labels."""
    from bidsreg import itk
    from bidsreg.transform import _resample

    image_affine = grid_affine(signs=(-1, 1, 1), degrees=12)
    shape = (40, 44, 36)
    image_affine[:3, 3] = -image_affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    data = np.zeros(shape, np.float32)
    data[15:24, 18:27, 14:22] = ndimage.gaussian_filter(random_image(4, (9, 9, 8)), 1) + 0.5
    labels = (data * 10).astype(np.int16)
    affine = np.eye(4)
    affine[:3, :3] = [[0.97, -0.08, 0.04], [0.1, 1.02, 0.0], [-0.05, 0.02, 0.99]]
    affine[:3, 3] = [2.5, -1.0, 1.5]
    field_affine = grid_affine(spacing=(3.0, 3.0, 3.0))
    field = smooth_field(SHAPE, field_affine, amplitude=4.0)
    transform = Transform(affine, field, field, field_affine)
    reference = Grid(shape, image_affine)
    box = transform._nonzero_box(Volume(data, image_affine), reference, inverse)
    assert box is not None and np.prod(box[1] - box[0]) < 0.6 * np.prod(shape)  # a part of the grid
    warp = transform.apply_inverse if inverse else transform.apply
    for volume, nearest in ((Volume(data, image_affine), False), (Volume(labels, image_affine), True)):
        whole = _resample(volume, reference, transform._sitk(inverse), nearest, 0)
        assert whole.any()
        np.testing.assert_array_equal(warp(volume, reference, nearest=nearest), whole)
    # a non-zero fill is resampled on the whole grid: voxels mapped off the image get it
    filled = warp(Volume(data, image_affine), reference, fill=-1)
    assert (filled == -1).any()
    np.testing.assert_array_equal(filled, _resample(Volume(data, image_affine), reference,
                                                    itk.sitk_transform(affine, field, field_affine, inverse=inverse),
                                                    False, -1))
