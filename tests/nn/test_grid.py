"""The network grid (bidsreg.nn.grid): intensity normalisation, the grid covering the fixed brain,
resampling through world maps, on the synthetic phantom of conftest.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from bidsreg.image import Volume
from bidsreg.nn.augment import rotation_matrix
from bidsreg.nn.grid import (
    NetworkGrid,
    PreparedImage,
    PreprocessConfig,
    centre_of_mass,
    normalise_intensity,
    prepare_image,
    translation,
)
from bidsreg.nn.grid import _gaussian_blur
from bidsreg.nn.layers import AffineTransformer, affine_coordinates, identity_grid


def theta(degrees=(4.0, -3.0, 6.0), shift=(0.05, -0.08, 0.03), scale=(1.04, 0.97, 1.02)) -> np.ndarray:
    """A network affine [A | t]: small rotation and scaling, a translation of a few voxels."""
    out = np.zeros((3, 4))
    out[:, :3] = rotation_matrix(degrees) @ np.diag(scale)
    out[:, 3] = shift
    return out


@pytest.fixture(scope="module")
def prepared(phantom, preprocess_config) -> PreparedImage:
    return prepare_image(phantom.volume(), preprocess_config)


def test_normalise_intensity_maps_percentiles_to_unit_range():
    rng = np.random.default_rng(0)
    data = np.zeros((20, 20, 20), dtype=np.float32)
    data[4:16, 4:16, 4:16] = rng.uniform(100, 500, (12, 12, 12))
    out = normalise_intensity(data)
    assert out.dtype == np.float32 and out.shape == data.shape
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[data == 0] == 0)  # background stays at 0
    # The 0.5/99.5 percentiles of the foreground go to 0 and 1, linearly between.
    lo, hi = np.percentile(data[data > 0], [0.5, 99.5])
    inside = (data > lo) & (data < hi)
    assert np.allclose(out[inside], (data[inside] - lo) / (hi - lo), atol=1e-6)
    order = np.argsort(data[inside])
    assert np.all(np.diff(out[inside][order]) >= 0)


def test_normalise_intensity_is_invariant_to_scale_and_handles_a_binary_image():
    data = np.zeros((10, 10, 10), dtype=np.float32)
    data[2:8, 3:7, 1:9] = np.linspace(1, 2, 6)[:, None, None]
    assert np.allclose(normalise_intensity(data), normalise_intensity(data * 250.0), atol=1e-6)
    mask = (data > 0).astype(np.float32)
    out = normalise_intensity(mask)  # percentiles coincide: falls back to min/max
    assert np.array_equal(out, mask)


def test_normalise_intensity_does_not_depend_on_storage_order(phantom):
    data = phantom.image()  # 40 x 48 x 40: even sides
    reference = normalise_intensity(data)
    for axes in [(0,), (1,), (0, 1, 2)]:
        flipped_back = np.flip(normalise_intensity(np.flip(data, axes).copy()), axes)
        assert np.allclose(flipped_back, reference, atol=1e-6), axes


@pytest.mark.parametrize("orientation, degrees", [("RAS", (0, 0, 0)), ("LPS", (0, 0, 0)), ("LAS", (10, -20, 5))])
def test_centre_of_mass_of_a_blob(phantom, orientation, degrees):
    shape = (20, 24, 18)
    affine = phantom.affine(shape, (2.0, 1.5, 2.5), orientation, degrees)
    affine[:3, 3] += [3.0, -4.0, 5.0]
    centre = np.array([4.0, -6.0, 7.5])
    world = phantom.world(shape, affine)
    data = np.exp(-((world - centre) ** 2).sum(-1) / (2 * 4.0**2))
    found = centre_of_mass(torch.from_numpy(data)[None, None], affine)
    assert np.allclose(found, centre, atol=1e-3)


def test_centre_of_mass_of_an_empty_image_raises():
    with pytest.raises(ValueError, match="centre of mass"):
        centre_of_mass(torch.zeros(1, 1, 4, 4, 4), np.eye(4))


def test_prepare_image_blurs_only_for_a_coarser_grid(phantom):
    volume = phantom.volume()  # 3 mm voxels
    fine = prepare_image(volume, PreprocessConfig(spacing=2.0))
    coarse = prepare_image(volume, PreprocessConfig(spacing=4.0))
    normalised = normalise_intensity(volume.data)
    assert fine.tensor.shape == coarse.tensor.shape == (1, 1, *volume.shape)
    assert torch.equal(fine.tensor[0, 0], torch.from_numpy(normalised))
    blurred = coarse.tensor[0, 0].numpy()
    assert not np.allclose(blurred, normalised, atol=1e-3)
    assert abs(blurred.sum() - normalised.sum()) < 1e-3 * normalised.sum()  # mass kept
    assert np.allclose(coarse.centre, fine.centre, atol=0.5)
    assert np.allclose(fine.centre, centre_of_mass(torch.from_numpy(normalised)[None, None], volume.affine))


def test_prepare_image_blur_is_the_sampled_gaussian_of_each_axis():
    """The anti-aliasing is scipy's Gaussian (kernel radius ceil(3 sigma), zeros beyond the image) along
    each axis finer than the grid, and nothing along an axis as coarse as it."""
    rng = np.random.default_rng(0)
    data = rng.random((20, 17, 11)).astype(np.float32) + 0.5
    affine = np.diag([1.0, 0.5, 2.0, 1.0])
    prepared = prepare_image(Volume(data, affine), PreprocessConfig(spacing=2.0, low_percentile=0, high_percentile=100))
    sigmas = [2.0 / 1.0 / 2.3548, 2.0 / 0.5 / 2.3548, 0.0]
    radii = [int(np.ceil(3 * sigma)) for sigma in sigmas]
    expected = ndimage.gaussian_filter(normalise_intensity(data, 0, 100).astype(np.float64), sigmas,
                                       mode="constant", radius=radii)
    assert np.abs(prepared.tensor[0, 0].numpy() - expected).max() < 1e-5


@pytest.mark.parametrize("multiple", [16, 8])
@pytest.mark.parametrize("orientation, degrees", [("RAS", (0, 0, 0)), ("LPI", (12, -8, 20))])
def test_network_grid_covers_the_foreground(phantom, multiple, orientation, degrees):
    config = PreprocessConfig(spacing=4.0, multiple=multiple, margin=6.0)
    affine = phantom.affine(orientation=orientation, degrees=degrees)
    image = prepare_image(phantom.volume(affine=affine), config)
    grid = NetworkGrid.covering(image, config)
    assert all(side % multiple == 0 for side in grid.shape)
    assert np.array_equal(grid.affine[:3, :3], np.eye(3) * 4.0) and grid.spacing == 4.0
    assert np.array_equal(grid.affine[3], [0, 0, 0, 1])
    foreground = phantom.world(image.shape, image.affine)[image.tensor[0, 0].numpy() > config.foreground]
    low = grid.affine[:3, 3] - grid.spacing / 2
    high = low + grid.spacing * np.array(grid.shape)
    assert np.all(foreground >= low + config.margin - 1e-6)
    assert np.all(foreground <= high - config.margin + 1e-6)
    # Not wasteful, whatever the storage: at most one extra block of ``multiple`` voxels per
    # axis beyond the world box of the foreground voxels (half a voxel's extent included) and
    # the margins, not the larger world box of an oblique image's rotated voxel box.
    half = np.abs(image.affine[:3, :3]) @ np.full(3, 0.5)
    extent = foreground.max(0) - foreground.min(0) + 2 * half + 2 * config.margin
    assert np.all(grid.spacing * np.array(grid.shape) < extent + grid.spacing * multiple)


def test_network_grid_with_shape_keeps_centre_and_spacing():
    grid = NetworkGrid((32, 48, 32), np.array([[4.0, 0, 0, -62.0], [0, 4.0, 0, -90.0], [0, 0, 4.0, -50.0], [0, 0, 0, 1]]))
    assert grid.with_shape(grid.shape) is grid

    def centre(g):
        return g.affine[:3, :3] @ ((np.array(g.shape) - 1) / 2) + g.affine[:3, 3]

    wider = grid.with_shape((48, 48, 64))
    assert wider.shape == (48, 48, 64) and wider.spacing == grid.spacing
    np.testing.assert_allclose(centre(wider), centre(grid), atol=1e-12)


def test_network_grid_of_an_empty_image_raises():
    image = PreparedImage(torch.zeros(1, 1, 8, 8, 8), np.eye(4), np.zeros(3), "empty.nii.gz")
    with pytest.raises(ValueError, match="empty.nii.gz"):
        NetworkGrid.covering(image, PreprocessConfig())


def test_theta_to_world_of_identity_is_identity(prepared, preprocess_config):
    grid = NetworkGrid.covering(prepared, preprocess_config)
    assert np.allclose(grid.theta_to_world(np.eye(3, 4)), np.eye(4), atol=1e-12)


def test_theta_to_world_rejects_bad_shape(prepared, preprocess_config):
    grid = NetworkGrid.covering(prepared, preprocess_config)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        grid.theta_to_world(np.eye(4))


def test_theta_to_world_matches_affine_coordinates_exactly(prepared, preprocess_config):
    grid = NetworkGrid.covering(prepared, preprocess_config)
    t = theta()
    voxel_map = np.linalg.inv(grid.affine) @ grid.theta_to_world(t) @ grid.affine
    coords = affine_coordinates(torch.from_numpy(t)[None], grid.shape)[0].reshape(3, -1).numpy()
    voxels = identity_grid(grid.shape, dtype=torch.float64)[0].reshape(3, -1).numpy()
    assert np.allclose(voxel_map[:3, :3] @ voxels + voxel_map[:3, 3:], coords, atol=1e-9)


def test_theta_to_world_resampling_matches_affine_transformer(prepared, preprocess_config):
    grid = NetworkGrid.covering(prepared, preprocess_config)
    t = theta()
    on_grid = grid.resample(prepared)
    warped = AffineTransformer()(on_grid, torch.from_numpy(t).float()[None])[0, 0]
    direct = grid.resample(prepared, grid.theta_to_world(t))[0, 0]
    inner = (slice(4, -4),) * 3
    difference = (warped - direct)[inner].abs()
    # Two trilinear resamplings against one: close, far closer than a wrong map would be.
    wrong = grid.resample(prepared, grid.theta_to_world(theta(degrees=(-4.0, 3.0, -6.0))))[0, 0]
    assert difference.max() < 0.05
    assert difference.mean() < 0.2 * (wrong - direct)[inner].abs().mean()


def test_resample_follows_the_world_map_exactly_for_a_linear_image(phantom):
    """Trilinear interpolation of a linear function is exact: image(x) = a·x + b."""
    shape = (30, 34, 28)
    affine = phantom.affine(shape, 3.0, "LAS", (5, -10, 15))
    a, b = np.array([0.01, -0.02, 0.015]), 2.0
    data = phantom.world(shape, affine) @ a + b
    image = PreparedImage(torch.from_numpy(data)[None, None], affine, np.zeros(3), "ramp")
    grid = NetworkGrid((16, 16, 16), np.diag([2.0, 2.0, 2.0, 1.0]) + np.array([[0, 0, 0, -15.0]] * 3 + [[0, 0, 0, 0]]))
    world_map = translation([3.0, -2.0, 1.5]) @ np.block([[np.eye(3) * 1.05, np.zeros((3, 1))], [np.zeros((1, 3)), 1.0]])
    out = grid.resample(image, world_map)[0, 0].numpy()
    expected = phantom.world(grid.shape, world_map @ grid.affine) @ a + b
    assert np.allclose(out, expected, atol=1e-9)


def test_displacement_to_world_scales_by_the_spacing():
    grid = NetworkGrid((16, 16, 16), np.diag([2.5, 2.5, 2.5, 1.0]))
    field = torch.ones(1, 3, 16, 16, 16)
    assert torch.equal(grid.displacement_to_world(field), field * 2.5)


def test_prepare_image_keeps_the_brain_box_and_resamples_as_the_whole_image():
    """The prepared image is the box of the positive voxels with a margin of zeros: on any
    grid it resamples to the values of the whole image blurred (zero background); an image
    whose background normalises above zero (no voxel positive: the window is all voxels')
    is kept whole."""
    data = np.zeros((60, 64, 56), np.float32)
    data[20:41, 15:45, 18:36] = np.random.default_rng(3).random((21, 30, 18), dtype=np.float32) + 0.2
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-30.0, -32.0, -28.0]
    config = PreprocessConfig(spacing=2.0)
    prepared = prepare_image(Volume(data, affine), config)
    assert np.prod(prepared.shape) < 0.4 * data.size
    whole = PreparedImage(
        _gaussian_blur(torch.from_numpy(normalise_intensity(data))[None, None], np.full(3, 2.0 / 2.3548)), affine,
        np.zeros(3))
    np.testing.assert_allclose(prepared.centre, centre_of_mass(whole.tensor, affine), atol=1e-4)
    grid = NetworkGrid.covering(whole, config)
    assert NetworkGrid.covering(prepared, config).shape == grid.shape
    turn = np.eye(4)
    turn[:3, :3] = [[0.96, -0.2, 0.0], [0.2, 0.96, 0.1], [0.0, -0.1, 1.0]]
    for world_map in (None, turn):
        torch.testing.assert_close(grid.resample(prepared, world_map), grid.resample(whole, world_map), rtol=0, atol=1e-5)
    assert prepare_image(Volume(data - 2.0, affine), config).shape == data.shape
