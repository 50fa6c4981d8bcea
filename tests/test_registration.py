"""Pair preprocessing (bidsreg.preprocess) and registration with a trained model
(bidsreg.registration) on the synthetic phantom of conftest.py."""
from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from bidsreg.image import Volume, load_volume
from bidsreg.metrics import world_jacobian_determinant
from bidsreg.nn.layers import AffineTransformer, affine_coordinates, grid_frame, identity_grid
from bidsreg.nn.losses import LocalNCC
from bidsreg.nn.networks import AffineNet, DeformableNet
from bidsreg.preprocess import (
    NetworkGrid,
    PreparedImage,
    PreprocessConfig,
    centre_of_mass,
    normalise_intensity,
    prepare_image,
    translation,
)
from bidsreg.nn.train import rotation_matrix
from bidsreg.registration import (
    RegistrationModel,
    RegistrationResult,
    global_world_map,
    mean_world_map,
    register,
    register_global,
    resolve_device,
)
from bidsreg.transforms import apply_transform, map_points, map_points_inverse


def theta(degrees=(4.0, -3.0, 6.0), shift=(0.05, -0.08, 0.03), scale=(1.04, 0.97, 1.02)) -> np.ndarray:
    """A network affine [A | t]: small rotation and scaling, a translation of a few voxels."""
    out = np.zeros((3, 4))
    out[:, :3] = rotation_matrix(degrees) @ np.diag(scale)
    out[:, 3] = shift
    return out


def flip(data: np.ndarray, affine: np.ndarray, axes) -> tuple[np.ndarray, np.ndarray]:
    """Reverse array axes and adjust the affine so that the world content is unchanged."""
    index_map = np.eye(4)
    for axis in axes:
        index_map[axis, axis] = -1.0
        index_map[axis, 3] = data.shape[axis] - 1
    return np.flip(data, axis=axes).copy(), affine @ index_map


def local_ncc(fixed: np.ndarray, warped: np.ndarray) -> float:
    """Mean squared local NCC (9³) of two images on the same grid, 0..1."""
    scale = float(fixed.max())
    f, w = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32) / scale)[None, None] for a in (fixed, warped))
    return -LocalNCC(9)(f, w).item()


# ================================================================ preprocessing


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
    # Not wasteful: at most one extra block of ``multiple`` voxels per axis beyond the world
    # box of the foreground's voxel box (its corners, voxel edges included) and the margins.
    index = np.argwhere(image.tensor[0, 0].numpy() > config.foreground)
    corners = np.stack(np.meshgrid(*zip(index.min(0) - 0.5, index.max(0) + 0.5), indexing="ij"), -1).reshape(-1, 3)
    corners = corners @ image.affine[:3, :3].T
    extent = corners.max(0) - corners.min(0) + 2 * config.margin
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


# ================================================================ registration: cheap checks


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_untrained_model_registers_by_centre_of_mass(phantom, untrained_model, tmp_path):
    """An identity network leaves the centre-of-mass translation as the global map."""
    affine = phantom.affine()
    shift = np.array([6.0, -4.0, 3.0])
    fixed = phantom.write(tmp_path / "fixed.nii.gz", phantom.image(affine), affine)
    moving = phantom.write(tmp_path / "moving.nii.gz", phantom.image(affine, world_map=translation(shift)), affine)
    result = register(fixed, moving, untrained_model)
    assert isinstance(result, RegistrationResult)
    assert np.allclose(result.affine, result.com_affine, atol=1e-6)
    assert np.allclose(result.com_affine[:3, :3], np.eye(3))
    assert np.allclose(result.com_affine[:3, 3], shift, atol=0.3)
    assert np.abs(result.displacement).max() < 0.1
    assert result.inverse_displacement is None


def _network_predicting(model: RegistrationModel, theta: np.ndarray) -> None:
    """Make the global network output ``theta`` for any input (every pass: identity after)."""
    model.affine_net.config["passes"] = 1
    with torch.no_grad():
        model.affine_net.out.bias.copy_(torch.from_numpy((theta - np.eye(3, 4)).ravel()))


def _theta_of(grid, world_map: np.ndarray) -> np.ndarray:
    """Inverse of NetworkGrid.theta_to_world."""
    voxel_map = np.linalg.inv(grid.affine) @ world_map @ grid.affine
    centre, radius = grid_frame(grid.shape)
    c = np.asarray(centre)
    linear = voxel_map[:3, :3]
    return np.concatenate([linear, ((voxel_map[:3, 3] - c + linear @ c) / radius)[:, None]], axis=1)


def _global_stage_inputs(model: RegistrationModel, phantom_files):
    cfg = model.preprocess
    fixed, moving = (prepare_image(load_volume(phantom_files[key]), cfg) for key in ("fixed", "moving"))
    grid = NetworkGrid.covering(fixed, cfg)
    return grid, grid.resample(fixed), moving, translation(moving.centre - fixed.centre)


def test_global_stage_keeps_the_start_when_the_network_would_make_it_worse(phantom, phantom_files, known_map, untrained_model):
    """A network that predicts a 20° rotation is overruled; one that predicts the true
    affine is followed."""
    grid, fixed, moving, com = _global_stage_inputs(untrained_model, phantom_files)
    net = untrained_model.affine_net
    _network_predicting(untrained_model, np.concatenate([rotation_matrix((20, 0, 0)), np.zeros((3, 1))], 1))
    with torch.no_grad():
        assert np.array_equal(global_world_map(net, grid, fixed, moving, com), com)
    _network_predicting(untrained_model, _theta_of(grid, np.linalg.inv(com) @ known_map))
    with torch.no_grad():
        followed = global_world_map(net, grid, fixed, moving, com)
    points = phantom.brain_points(50)
    error = {
        name: np.linalg.norm(map_points(points, value) - map_points(points, known_map), axis=1).max()
        for name, value in (("com", com), ("network", followed))
    }
    assert error["com"] > 2.0 and error["network"] < 1e-6, error


def test_mean_world_map_is_symmetric_and_inverse_consistent():
    a = np.eye(4)
    a[:3, :3] = rotation_matrix((12, -5, 8)) @ np.diag([1.05, 0.97, 1.02])
    a[:3, 3] = (4.0, -3.0, 7.0)
    b = np.eye(4)
    b[:3, :3] = rotation_matrix((8, -1, 6)) @ np.diag([1.01, 0.99, 1.0])
    b[:3, 3] = (6.0, -1.0, 5.0)
    np.testing.assert_allclose(mean_world_map(a, a), a, atol=1e-10)
    np.testing.assert_allclose(mean_world_map(a, b), mean_world_map(b, a), atol=1e-10)
    inverse = mean_world_map(np.linalg.inv(a), np.linalg.inv(b))
    np.testing.assert_allclose(np.linalg.inv(mean_world_map(a, b)), inverse, atol=1e-10)
    # Half-way to the identity: applied twice, the mean is the map itself.
    mean = mean_world_map(a, np.eye(4))
    np.testing.assert_allclose(mean @ mean, a, atol=1e-10)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="too far apart"):
        mean_world_map(flip, np.eye(4))


def test_global_stage_is_inverse_consistent(phantom_files, trained_model):
    """Swapping fixed and moving inverts the global stage's map exactly (both directions of
    the network are averaged)."""
    with torch.no_grad():
        forward = register(phantom_files["fixed"], phantom_files["moving"], trained_model).affine
        backward = register(phantom_files["moving"], phantom_files["fixed"], trained_model).affine
    assert not np.allclose(forward[:3, :3], np.eye(3), atol=1e-3)
    np.testing.assert_allclose(forward @ backward, np.eye(4), atol=1e-6)


def test_global_instance_optimisation_recovers_an_affine_the_network_misses(phantom, phantom_files, known_map, untrained_model):
    """From an identity network, Adam steps on the 12 parameters (stage-1 loss on the grid the
    network reads: here the 4 mm grid itself, as the phantom is small) recover the
    8° / 4 mm / 5 % affine far better than the centre of mass alone."""
    identity = AffineNet(untrained_model.affine_net.config["features"], pool=1, passes=1).eval()
    model = dataclasses.replace(untrained_model, affine_net=identity)
    result = register(phantom_files["fixed"], phantom_files["moving"], model, global_instance_steps=200)
    points = phantom.brain_points(100)
    error = {
        name: np.linalg.norm(map_points(points, value) - map_points(points, known_map), axis=1).mean()
        for name, value in (("com", result.com_affine), ("refined", result.affine))
    }
    assert error["refined"] < 0.4 * error["com"], error


@pytest.mark.parametrize("stage", ["global", "local"])
def test_register_rejects_negative_instance_steps(phantom_files, untrained_model, stage):
    with pytest.raises(ValueError, match=f"{stage}_instance_steps must be >= 0"):
        register(phantom_files["fixed"], phantom_files["moving"], untrained_model, **{f"{stage}_instance_steps": -1})


def bad_image(kind: str, phantom, folder) -> str:
    affine, data = phantom.affine(), phantom.image()
    path = folder / f"sub-bad_{kind}.nii.gz"
    if kind == "constant":
        return phantom.write(path, np.full_like(data, 300.0), affine)
    if kind == "nan":
        data[10, 10, 10] = np.nan
        return phantom.write(path, data, affine)
    if kind == "4d":
        return phantom.write(path, np.stack([data, data], -1), affine)
    if kind == "anisotropic":
        return phantom.write(path, data[:, :, ::8], affine @ np.diag([1 / 3, 1 / 3, 8 / 3, 1]))
    if kind == "truncated":
        good = phantom.write(folder / "good.nii.gz", data, affine)
        raw = open(good, "rb").read()
        path.write_bytes(raw[: len(raw) // 3])
        return str(path)
    if kind == "not-gzip":
        path.write_bytes(gzip.compress(b"no image here")[:-4])
        return str(path)
    if kind == "no-overlap":
        # A small bright ball far from the brain: after centring it covers a tiny part of it.
        world = phantom.world(phantom.SHAPE, affine)
        ball = 1000.0 * (np.linalg.norm(world - [45.0, 55.0, 45.0], axis=-1) < 6.0)
        return phantom.write(path, ball.astype(np.float32), affine)
    raise AssertionError(kind)


BAD_KINDS = ["constant", "nan", "4d", "anisotropic", "truncated", "not-gzip"]


@pytest.mark.parametrize(
    "role, kind", [("moving", kind) for kind in BAD_KINDS + ["no-overlap"]] + [("fixed", kind) for kind in BAD_KINDS]
)
def test_register_rejects_bad_input_naming_the_file(phantom, phantom_files, untrained_model, tmp_path, kind, role):
    bad = bad_image(kind, phantom, tmp_path)
    pair = (phantom_files["fixed"], bad) if role == "moving" else (bad, phantom_files["moving"])
    with pytest.raises(ValueError) as info:
        register(*pair, untrained_model)
    assert bad in str(info.value)


def test_register_no_overlap_error_says_why(phantom, phantom_files, untrained_model, tmp_path):
    bad = bad_image("no-overlap", phantom, tmp_path)
    with pytest.raises(ValueError, match="overlap"):
        register(phantom_files["fixed"], bad, untrained_model)


def test_phantom_true_map_points_to_the_same_content(phantom, known_map):
    """Check of the fixture the accuracy tests rely on: the moving image shows the fixed
    content at ``true_map(x)``, and would not without the deformation."""
    from scipy import ndimage

    points = phantom.brain_points(300)
    affine = phantom.affine()
    moving = phantom.image(affine, world_map=known_map, deformed=True)
    fixed_values = phantom.intensity(points)

    def moving_at(world):
        voxels = (world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
        return ndimage.map_coordinates(moving, voxels.T, order=1)

    right = moving_at(phantom.true_map(points, known_map, deformed=True))
    wrong = moving_at(phantom.true_map(points, known_map, deformed=False))
    assert np.abs(right - fixed_values).mean() < 0.3 * np.abs(wrong - fixed_values).mean()
    assert np.corrcoef(right, fixed_values)[0, 1] > 0.99


# ================================================================ registration with a trained model


@pytest.mark.slow
def test_result_fields_have_documented_shapes_and_frames(phantom, known_map, phantom_files, trained_model):
    result = register(phantom_files["fixed"], phantom_files["deformed"], trained_model, inverse=True)
    fixed_affine = phantom.affine()
    assert result.fixed_shape == phantom.SHAPE
    assert np.allclose(result.fixed_affine, fixed_affine)
    for matrix in (result.affine, result.com_affine):
        assert matrix.shape == (4, 4) and matrix.dtype == np.float64
        assert np.array_equal(matrix[3], [0, 0, 0, 1])
    for field in (result.displacement, result.inverse_displacement):
        assert field.shape == (*phantom.SHAPE, 3) and field.dtype == np.float32
        assert np.all(np.isfinite(field))
    assert 0.5 < np.abs(result.displacement).max() < 20.0  # a real, bounded deformation (mm)
    assert all(side % 16 == 0 for side in result.grid.shape) and result.grid.spacing == 4.0
    assert {"load", "preprocess", "global", "local", "inverse"} <= set(result.seconds)
    # The global stage improves on the centre-of-mass start (true map: affine + deformation).
    points = phantom.brain_points()
    truth = phantom.true_map(points, known_map, deformed=True)
    error = np.linalg.norm(map_points(points, result.affine) - truth, axis=1)
    start = np.linalg.norm(map_points(points, result.com_affine) - truth, axis=1)
    assert error.mean() < 0.8 * start.mean()


@pytest.mark.slow
def test_registration_improves_local_similarity(phantom, known_map, phantom_files, trained_model):
    moving = Volume(phantom.image(world_map=known_map, deformed=True), phantom.affine())
    fixed = phantom.image()
    result = register(phantom_files["fixed"], phantom_files["deformed"], trained_model)
    shape, affine = phantom.SHAPE, phantom.affine()
    identity = apply_transform(moving, shape, affine, np.eye(4))
    global_only = apply_transform(moving, shape, affine, result.affine)
    both = apply_transform(moving, shape, affine, result.affine, result.displacement)
    scores = [local_ncc(fixed, warped) for warped in (identity, global_only, both)]
    assert scores[0] < scores[1] < scores[2]


@pytest.mark.slow
def test_inverse_maps_points_back(phantom, phantom_files, trained_model):
    result = register(phantom_files["fixed"], phantom_files["deformed"], trained_model, inverse=True)
    points = phantom.brain_points()
    moved = map_points(points, result.affine, result.displacement, result.fixed_affine)
    assert np.linalg.norm(moved - map_points(points, result.affine), axis=1).max() > 0.5
    back = map_points_inverse(moved, result.affine, result.inverse_displacement, result.fixed_affine)
    assert np.linalg.norm(back - points, axis=1).max() < 1.0


def test_diffeomorphic_inverse_maps_points_back(phantom, phantom_files, untrained_model):
    """A diffeomorphic local stage inverts by integrating -v. Instance optimisation of an
    untrained network gives a non-trivial, smooth field (several mm) cheaply; with a rough
    field (smoothness 0.1, larger steps) the discrete exp(-v) is a worse inverse (~2.5 mm)."""
    torch.manual_seed(0)
    net = DeformableNet(**untrained_model.deformable_net.config | {"diffeomorphic": True}).eval()
    model = RegistrationModel(untrained_model.affine_net, net, untrained_model.preprocess, smoothness=1.0)
    result = register(
        phantom_files["fixed"], phantom_files["deformed"], model, inverse=True, local_instance_steps=30, instance_lr=0.1
    )
    points = phantom.brain_points()
    moved = map_points(points, result.affine, result.displacement, result.fixed_affine)
    assert np.linalg.norm(moved - map_points(points, result.affine), axis=1).max() > 2.0
    back = map_points_inverse(moved, result.affine, result.inverse_displacement, result.fixed_affine)
    error = np.linalg.norm(back - points, axis=1)
    assert np.median(error) < 0.2 and error.max() < 1.0
    assert world_jacobian_determinant(result.displacement, result.fixed_affine).min() > 0


@pytest.mark.slow
def test_instance_optimisation_does_not_lower_local_ncc(phantom, known_map, phantom_files, trained_model):
    moving = Volume(phantom.image(world_map=known_map, deformed=True), phantom.affine())
    fixed = phantom.image()
    shape, affine = phantom.SHAPE, phantom.affine()
    scores, fields = [], []
    for steps in (0, 20):
        result = register(phantom_files["fixed"], phantom_files["deformed"], trained_model, local_instance_steps=steps)
        warped = apply_transform(moving, shape, affine, result.affine, result.displacement)
        scores.append(local_ncc(fixed, warped))
        fields.append(result.displacement)
    assert np.abs(fields[1] - fields[0]).max() > 0.1  # the steps did change the field
    assert scores[1] >= scores[0] - 1e-4


ORIENTATIONS = {
    "RAS": dict(flip=()),
    "LAS": dict(flip=(0,)),
    "LPS": dict(flip=(0, 1)),
    "oblique": dict(degrees=(0.0, 0.0, 5.0)),
}


@pytest.mark.slow
def test_registration_does_not_depend_on_storage_orientation(phantom, known_map, trained_model, tmp_path):
    """The same world content stored as RAS, LAS, LPS or on an oblique grid (10° about S)
    registers to the same world transform, to a small fraction of the 4 mm grid voxel.

    Flipped copies hold the same samples and must agree to rounding. The oblique copy samples
    the phantom at other points. Its tilt is chosen so that the network grids (of the fixed
    and of the moving side of the global stage) stay the same: on
    a differently framed grid a briefly trained regressor predicts a slightly different
    affine (about 3 mm for a 48-voxel instead of 32-voxel side), which is a matter of
    training, not of orientation handling.
    """
    base = phantom.affine()
    images = {"fixed": phantom.image(base), "moving": phantom.image(base, world_map=known_map, deformed=True)}
    points = phantom.brain_points(100)
    mapped, grids = {}, []
    for name, how in ORIENTATIONS.items():
        paths = {}
        for role, data in images.items():
            if "degrees" in how:
                affine = phantom.affine(degrees=how["degrees"])
                data = phantom.image(affine, world_map=known_map if role == "moving" else None, deformed=role == "moving")
            else:
                data, affine = flip(data, base, how["flip"])
            paths[role] = phantom.write(tmp_path / f"{role}_{name}.nii.gz", data, affine)
        result = register(paths["fixed"], paths["moving"], trained_model)
        grids.append(result.grid)
        mapped[name] = map_points(points, result.affine, result.displacement, result.fixed_affine)
    # The deformation is real: ignoring it would move points by over a millimetre.
    assert np.linalg.norm(mapped["oblique"] - map_points(points, result.affine), axis=1).max() > 1.0
    errors = {name: float(np.linalg.norm(mapped[name] - mapped["RAS"], axis=1).max()) for name in ORIENTATIONS}
    assert all(grid.shape == grids[0].shape and np.allclose(grid.affine, grids[0].affine) for grid in grids)
    assert max(error for name, error in errors.items() if name != "oblique") < 0.05, errors
    assert errors["oblique"] < 0.5, errors


@pytest.mark.slow
def test_two_stages_run_apart_give_the_same_result(phantom_files, trained_model):
    # The Nipype workflow runs the global and local stages as separate nodes.
    whole = register(phantom_files["fixed"], phantom_files["deformed"], trained_model)
    first = register_global(phantom_files["fixed"], phantom_files["deformed"], trained_model)
    second = register(phantom_files["fixed"], phantom_files["deformed"], trained_model, affine=first.affine)
    assert np.array_equal(first.affine, whole.affine) and np.array_equal(first.com_affine, whole.com_affine)
    assert not first.displacement.any() and first.displacement.shape == whole.displacement.shape
    assert np.allclose(second.displacement, whole.displacement, atol=1e-5)
    assert "local" not in first.seconds and "global" in first.seconds


def test_register_refuses_a_singular_global_map(phantom_files, untrained_model):
    with pytest.raises(ValueError, match="invertible"):
        register(phantom_files["fixed"], phantom_files["moving"], untrained_model, affine=np.zeros((4, 4)))



def test_a_network_node_run_in_process_keeps_the_callers_thread_count(phantom_files, tmp_path, monkeypatch):
    """The CNN interfaces run torch on their num_threads and give the caller its own back
    (Nipype's Linear plugin and library use run nodes in the calling process)."""
    from bidsreg.data import DEFAULT_MODEL
    from bidsreg.interfaces.registration import CNNGlobal

    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    caller = 2 if before != 2 else 1
    torch.set_num_threads(caller)
    try:
        result = CNNGlobal(fixed=phantom_files["fixed"], moving=phantom_files["moving"], model=str(DEFAULT_MODEL),
                           num_threads=3 - caller).run()
        assert torch.get_num_threads() == caller
    finally:
        torch.set_num_threads(before)
    assert Path(result.outputs.forward_transform).is_file()
