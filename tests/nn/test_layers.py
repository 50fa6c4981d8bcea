"""Resampling layers (bidsreg.nn.layers) on tiny non-cubic grids, so that axis mix-ups show."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bidsreg.metrics import jacobian_determinant
from bidsreg.nn.layers import (
    AffineTransformer,
    SpatialTransformer,
    VecInt,
    affine_coordinates,
    compose_affine,
    grid_frame,
    identity_grid,
    sample,
)

SHAPE = (9, 12, 10)


def volume(shape=SHAPE, channels: int = 1, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, *shape, generator=g, dtype=torch.float64)


def constant_field(shape, vector, batch: int = 1) -> torch.Tensor:
    return torch.tensor(vector, dtype=torch.float64).view(1, 3, 1, 1, 1).expand(batch, 3, *shape).clone()


# ---------------------------------------------------------------- identity_grid / sample


def test_identity_grid_holds_voxel_indices_in_ij_order():
    grid = identity_grid(SHAPE, dtype=torch.float64)
    assert grid.shape == (1, 3, *SHAPE)
    assert grid[0, :, 2, 5, 7].tolist() == [2.0, 5.0, 7.0]


def test_sample_at_identity_coordinates_returns_the_volume():
    vol = volume(channels=2, batch=2)
    coords = identity_grid(SHAPE, dtype=vol.dtype).expand(2, -1, -1, -1, -1)
    assert torch.allclose(sample(vol, coords), vol, atol=1e-12)


def test_sample_interpolates_trilinearly_along_the_right_axis():
    vol = volume()
    coords = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.25, 0.0], [2.0, 3.0, 4.5]], dtype=vol.dtype)
    out = sample(vol, coords.T.reshape(1, 3, 3, 1, 1))[0, 0, :, 0, 0]
    v = vol[0, 0]
    expected = [
        (v[0, 0, 0] + v[1, 0, 0]) / 2,
        0.75 * v[0, 0, 0] + 0.25 * v[0, 1, 0],
        (v[2, 3, 4] + v[2, 3, 5]) / 2,
    ]
    assert torch.allclose(out, torch.stack(expected), atol=1e-12)


def test_sample_outside_is_zero_or_border():
    vol = volume()
    coords = torch.tensor([-3.0, 4.0, 5.0], dtype=vol.dtype).view(1, 3, 1, 1, 1)
    assert sample(vol, coords).item() == 0.0
    assert sample(vol, coords, padding_mode="border").item() == pytest.approx(vol[0, 0, 0, 4, 5].item())


@pytest.mark.parametrize("coords_shape", [(1, 2, 4, 4, 4), (1, 3, 4, 4), (3, 4, 4, 4)])
def test_sample_rejects_bad_shapes(coords_shape):
    with pytest.raises(ValueError, match="expected volume"):
        sample(volume(), torch.zeros(coords_shape, dtype=torch.float64))


# ---------------------------------------------------------------- SpatialTransformer


def test_spatial_transformer_with_zero_displacement_is_identity():
    vol = volume(channels=3)
    out = SpatialTransformer()(vol, torch.zeros(1, 3, *SHAPE, dtype=vol.dtype))
    assert torch.allclose(out, vol, atol=1e-12)


@pytest.mark.parametrize("shift", [(2, 0, 0), (0, -3, 0), (1, 2, -1)])
def test_spatial_transformer_integer_shift_is_exact(shift):
    """out(p) = volume(p + u): a constant integer u shifts the content by -u voxels."""
    vol = volume()
    out = SpatialTransformer()(vol, constant_field(SHAPE, shift))
    inner_out = tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(shift, SHAPE))
    inner_in = tuple(slice(max(0, s), n + min(0, s)) for s, n in zip(shift, SHAPE))
    assert torch.allclose(out[0, 0][inner_out], vol[0, 0][inner_in], atol=1e-10)
    # Voxels whose source lies outside the grid are zero (zeros padding).
    outside = torch.ones(SHAPE, dtype=torch.bool)
    outside[inner_out] = False
    assert torch.all(out[0, 0][outside] == 0)


def test_spatial_transformer_nearest_keeps_labels():
    labels = torch.randint(0, 5, (1, 1, *SHAPE), generator=torch.Generator().manual_seed(1)).double()
    field = constant_field(SHAPE, (0.3, -0.2, 0.1))
    out = SpatialTransformer(mode="nearest")(labels, field)
    assert torch.equal(out, labels)


def test_spatial_transformer_is_differentiable_in_the_displacement():
    vol = volume()
    field = torch.zeros(1, 3, *SHAPE, dtype=vol.dtype, requires_grad=True)
    SpatialTransformer()(vol, field).sum().backward()
    assert field.grad is not None and field.grad.abs().sum() > 0


# ---------------------------------------------------------------- affine_coordinates / AffineTransformer


def identity_theta(batch: int = 1) -> torch.Tensor:
    return torch.eye(3, 4, dtype=torch.float64).expand(batch, 3, 4).clone()


def test_grid_frame_is_centre_and_half_the_largest_extent():
    centre, radius = grid_frame(SHAPE)
    assert centre == (4.0, 5.5, 4.5)
    assert radius == 6.0
    assert grid_frame((1, 1, 1))[1] == 0.5


def test_affine_transformer_with_identity_theta_is_identity():
    vol = volume(channels=2, batch=2)
    assert torch.allclose(AffineTransformer()(vol, identity_theta(2)), vol, atol=1e-12)


def test_affine_coordinates_translation_moves_by_radius_times_t():
    t = torch.tensor([0.2, -0.1, 0.35], dtype=torch.float64)
    theta = identity_theta()
    theta[0, :, 3] = t
    coords = affine_coordinates(theta, SHAPE)
    _, radius = grid_frame(SHAPE)
    offset = coords - identity_grid(SHAPE, dtype=torch.float64)
    assert torch.allclose(offset, (radius * t).view(1, 3, 1, 1, 1).expand_as(offset), atol=1e-12)


def test_affine_coordinates_linear_part_acts_about_the_grid_centre():
    matrix = torch.tensor([[0.9, 0.1, 0.0], [0.0, 1.1, -0.2], [0.05, 0.0, 1.0]], dtype=torch.float64)
    theta = torch.cat([matrix, torch.zeros(3, 1, dtype=torch.float64)], dim=1)[None]
    coords = affine_coordinates(theta, SHAPE)
    c = torch.tensor(grid_frame(SHAPE)[0], dtype=torch.float64).view(3, 1)
    p = identity_grid(SHAPE, dtype=torch.float64)[0].reshape(3, -1)
    assert torch.allclose(coords[0].reshape(3, -1), c + matrix @ (p - c), atol=1e-12)


def test_affine_transformer_integer_translation_shifts_the_volume():
    vol = volume()
    _, radius = grid_frame(SHAPE)
    theta = identity_theta()
    theta[0, 1, 3] = 2.0 / radius  # two voxels along Y
    out = AffineTransformer()(vol, theta)
    assert torch.allclose(out[0, 0, :, :-2], vol[0, 0, :, 2:], atol=1e-10)


def random_theta(seed: int, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return identity_theta(batch) + 0.1 * (torch.rand(batch, 3, 4, generator=g, dtype=torch.float64) - 0.5)


def test_compose_affine_is_warping_twice():
    vol = volume(shape=(16, 20, 18), seed=3)
    first, second = random_theta(1), random_theta(2)
    warp = AffineTransformer()
    composed = affine_coordinates(compose_affine(first, second), vol.shape[2:])
    twice = affine_coordinates(first, vol.shape[2:])
    # first(second(p)): sample first's coordinates at second's coordinates.
    expected = sample(twice, affine_coordinates(second, vol.shape[2:]))
    inner = affine_coordinates(second, vol.shape[2:])
    inside = ((inner >= 0) & (inner <= torch.tensor(vol.shape[2:]).view(1, 3, 1, 1, 1) - 1)).all(1)
    assert torch.allclose(composed.permute(0, 2, 3, 4, 1)[inside], expected.permute(0, 2, 3, 4, 1)[inside], atol=1e-9)
    assert torch.allclose(compose_affine(identity_theta(), first), first)
    assert torch.allclose(compose_affine(first, identity_theta()), first)
    assert not torch.allclose(warp(warp(vol, first), second), warp(vol, compose_affine(second, first)), atol=1e-3)


def test_same_theta_on_a_grid_and_on_its_pooled_grid():
    """The frame is resolution-free: warping then pooling by 2 is pooling then warping
    (exactly, for a linear ramp, which trilinear sampling and pooling both keep)."""
    shape = (32, 40, 36)
    p = identity_grid(shape, dtype=torch.float64)[0]
    ramp = (0.3 * p[0] - 0.2 * p[1] + 0.5 * p[2])[None, None]
    theta = random_theta(4)
    theta[0, :, 3] = torch.tensor([0.3, -0.2, 0.25], dtype=torch.float64)  # several voxels
    warp, pool = AffineTransformer(), torch.nn.functional.avg_pool3d
    pooled_after = pool(warp(ramp, theta), 2)
    pooled_before = warp(pool(ramp, 2), theta)
    inside = (pooled_after != 0) & (pool((warp(torch.ones_like(ramp), theta) > 1 - 1e-9).double(), 2) == 1)
    inside &= (pooled_before != 0) & (warp(torch.ones_like(ramp[:, :, ::2, ::2, ::2]), theta) > 1 - 1e-9)
    assert inside.sum() > 1000
    assert torch.allclose(pooled_after[inside], pooled_before[inside], atol=1e-9)


def test_affine_coordinates_rejects_bad_theta():
    with pytest.raises(ValueError, match=r"\(N, 3, 4\)"):
        affine_coordinates(torch.eye(3, 4), SHAPE)
    with pytest.raises(ValueError, match=r"\(N, 3, 4\)"):
        affine_coordinates(torch.eye(4)[None], SHAPE)


# ---------------------------------------------------------------- VecInt


def test_vecint_of_zero_velocity_is_zero():
    out = VecInt(7)(torch.zeros(2, 3, *SHAPE, dtype=torch.float64))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("vector", [(1.5, 0.0, 0.0), (0.7, -2.3, 0.4)])
def test_vecint_of_constant_velocity_is_that_translation(vector):
    velocity = constant_field(SHAPE, vector)
    assert torch.allclose(VecInt(7)(velocity), velocity, atol=1e-10)


def test_vecint_with_no_squaring_returns_the_velocity():
    velocity = volume(channels=3)
    assert torch.equal(VecInt(0)(velocity), velocity)


def test_vecint_rejects_negative_steps():
    with pytest.raises(ValueError, match="steps"):
        VecInt(-1)


def folding_velocity(shape=(24, 20, 22), amplitude: float = 3.0) -> torch.Tensor:
    """A smooth velocity whose use as a displacement would fold (|du/dx| up to 1.6)."""
    grid = identity_grid(shape, dtype=torch.float64)[0]
    i, j, k = grid
    return torch.stack(
        [
            amplitude * torch.sin(2 * math.pi * i / 12.0),
            0.5 * amplitude * torch.sin(2 * math.pi * (i + k) / 16.0),
            0.5 * amplitude * torch.cos(2 * math.pi * j / 14.0),
        ]
    )[None]


def test_vecint_field_is_diffeomorphic_where_the_raw_field_folds():
    velocity = folding_velocity()
    raw = velocity[0].permute(1, 2, 3, 0).numpy()
    assert jacobian_determinant(raw, (1.0, 1.0, 1.0)).min() <= 0  # the velocity itself folds
    field = VecInt(7)(velocity)[0].permute(1, 2, 3, 0).numpy()
    assert np.abs(field).max() > 2.0  # a large deformation, not a tiny one
    assert jacobian_determinant(field, (1.0, 1.0, 1.0)).min() > 0


def test_vecint_of_minus_velocity_is_the_inverse():
    """exp(v)∘exp(-v) ≈ identity: p + w(p) + u(p + w(p)) ≈ p away from the border (the
    residual, 0.05 voxel here, comes from trilinear interpolation of the squarings)."""
    velocity = 0.4 * folding_velocity()
    forward, backward = VecInt(7)(velocity), VecInt(7)(-velocity)
    composed = backward + SpatialTransformer(padding_mode="border")(forward, backward)
    inner = composed[:, :, 4:-4, 4:-4, 4:-4]
    assert backward.abs().max() > 1.0
    assert inner.abs().max() < 0.1


@pytest.mark.parametrize("rows", [9, 10])
def test_sample_cut_into_slabs_for_the_threads_gives_the_same_values_and_gradients(rows):
    """One image's points are sampled in one slab per thread (odd and even sides): the values
    and the coordinates' gradient are those of one call, the volume's gradient to rounding."""
    shape = (rows, 12, 10)
    source = volume(shape, channels=3, seed=4).requires_grad_(True)
    coords = (identity_grid(shape, dtype=torch.float64) + 2 * volume(shape, channels=3, seed=5) - 1).requires_grad_(True)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            out = sample(source, coords, padding_mode="border")
            results.append((out.detach(), *torch.autograd.grad((out ** 2).sum(), (source, coords))))
    finally:
        torch.set_num_threads(threads)
    (one, grad_source_one, grad_coords_one), (cut, grad_source_cut, grad_coords_cut) = results
    assert torch.equal(one, cut) and torch.equal(grad_coords_one, grad_coords_cut)
    torch.testing.assert_close(grad_source_one, grad_source_cut, rtol=0, atol=1e-12)
