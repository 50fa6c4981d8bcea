"""Training losses (bidsreg.nn.losses): values known by hand on tiny tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bidsreg.nn.losses import Gradient, GlobalNCC, LocalNCC


def noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def smooth_image(shape=(20, 20, 20), seed: int = 0) -> torch.Tensor:
    """(1, 1, X, Y, Z) float64 noise blurred a little, so that every window has variance."""
    x = noise(1, 1, *shape, seed=seed)
    kernel = torch.ones(1, 1, 3, 3, 3, dtype=x.dtype) / 27
    return F.conv3d(F.pad(x, (1,) * 6, mode="replicate"), kernel)


# ---------------------------------------------------------------- GlobalNCC


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (2.5, 0.0), (0.3, 7.0), (4.0, -2.0)])
def test_global_ncc_of_increasing_linear_function_is_minus_one(scale, offset):
    image = noise(2, 1, 12, 10, 8)
    loss = GlobalNCC()(image, scale * image + offset)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(-1.0, abs=1e-4)


def test_global_ncc_of_unrelated_noise_is_near_zero():
    loss = GlobalNCC()(noise(1, 1, 16, 16, 16, seed=1), noise(1, 1, 16, 16, 16, seed=2))
    # (Σ f'm')² / (Σ f'² Σ m'²) of independent noise is about 1/N = 2.4e-4.
    assert -0.005 < loss.item() <= 0.0


def test_global_ncc_is_a_squared_correlation_not_a_signed_one():
    """The method's loss squares the NCC, so an inverted image also scores -1."""
    image = noise(1, 1, 8, 8, 8)
    assert GlobalNCC()(image, 1.0 - 2.0 * image).item() == pytest.approx(-1.0, abs=1e-4)


def test_global_ncc_averages_over_the_batch():
    fixed = noise(2, 1, 8, 8, 8, seed=3)
    moving = torch.cat([fixed[:1] * 2, noise(1, 1, 8, 8, 8, seed=4)])
    both = GlobalNCC()(fixed, moving).item()
    first = GlobalNCC()(fixed[:1], moving[:1]).item()
    second = GlobalNCC()(fixed[1:], moving[1:]).item()
    assert both == pytest.approx((first + second) / 2, abs=1e-9)
    assert first == pytest.approx(-1.0, abs=1e-6) and second > -0.05


def test_global_ncc_gradient_points_towards_alignment():
    """One gradient step on a shifted copy raises its correlation with the fixed image."""
    fixed = smooth_image((12, 12, 12))
    moving = torch.roll(fixed, 1, dims=2).clone().requires_grad_(True)
    loss = GlobalNCC()(fixed, moving)
    loss.backward()
    with torch.no_grad():
        stepped = moving - 50.0 * moving.grad
    assert GlobalNCC()(fixed, stepped).item() < loss.item()


# ---------------------------------------------------------------- LocalNCC


def test_local_ncc_of_image_with_itself_and_scaled_copy_is_minus_one():
    image = smooth_image()
    for moving in (image, 3.0 * image):
        loss = LocalNCC(9)(image, moving)
        assert loss.ndim == 0
        assert loss.item() == pytest.approx(-1.0, abs=1e-4)


@pytest.mark.parametrize("scale, offset", [(2.0, 0.5), (0.5, 3.0)])
def test_local_ncc_is_invariant_to_an_intensity_offset(scale, offset):
    image = smooth_image()
    assert LocalNCC(9)(image, scale * image + offset).item() == pytest.approx(-1.0, abs=1e-4)


def test_local_ncc_of_unrelated_noise_is_near_zero():
    loss = LocalNCC(9)(noise(1, 1, 20, 20, 20, seed=1), noise(1, 1, 20, 20, 20, seed=2))
    # About 1/(voxels per window) per voxel: 1/729 inside, 1/125 in the corners.
    assert -0.02 < loss.item() <= 0.0


def test_local_ncc_separable_box_sum_equals_dense_kernel():
    x = noise(2, 5, 11, 9, 13)  # several channels and a batch: grouped convolution
    ones = torch.ones(5, 1, 9, 9, 9, dtype=x.dtype)
    expected = F.conv3d(x, ones, padding=4, groups=5)
    assert torch.allclose(LocalNCC(9)._box_sum(x), expected, atol=1e-10)


def cropped_window_ncc(fixed: np.ndarray, moving: np.ndarray, window: int, eps: float = 1e-5) -> float:
    """Minus the mean squared NCC over w³ windows cut at the border, one voxel at a time."""
    half, values = window // 2, []
    for index in np.ndindex(fixed.shape):
        box = tuple(slice(max(0, i - half), i + half + 1) for i in index)
        f, m = fixed[box].ravel(), moving[box].ravel()
        n = f.size
        cross = (f * m).sum() - f.sum() * m.sum() / n
        f_var = (f * f).sum() - f.sum() ** 2 / n
        m_var = (m * m).sum() - m.sum() ** 2 / n
        values.append(cross**2 / (f_var * m_var + eps))
    return -float(np.mean(values))


@pytest.mark.parametrize("window", [3, 5])
def test_local_ncc_equals_the_windowed_formula_written_out(window):
    """The stage-2 local NCC (bidsreg.nn.losses), windows cut at the image border, computed voxel by voxel."""
    fixed = noise(1, 1, 7, 6, 5, seed=5)
    moving = 0.5 * fixed + noise(1, 1, 7, 6, 5, seed=6)
    expected = cropped_window_ncc(fixed[0, 0].numpy(), moving[0, 0].numpy(), window)
    assert LocalNCC(window)(fixed, moving).item() == pytest.approx(expected, abs=1e-9)


def test_local_ncc_is_better_for_the_aligned_pair():
    fixed = smooth_image((16, 16, 16))
    shifted = torch.roll(fixed, 2, dims=3)
    assert LocalNCC(9)(fixed, fixed).item() < LocalNCC(9)(fixed, shifted).item() - 0.1


def test_local_ncc_follows_dtype():
    image = smooth_image((12, 12, 12)).float()
    loss = LocalNCC(5)(image, image * 2)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize("window", [0, -3, 4, 8])
def test_local_ncc_rejects_even_or_non_positive_windows(window):
    with pytest.raises(ValueError, match="window"):
        LocalNCC(window)


@pytest.mark.parametrize(
    "loss", [GlobalNCC(), LocalNCC(3)], ids=["global", "local"]
)
@pytest.mark.parametrize(
    "fixed_shape, moving_shape",
    [((1, 1, 8, 8, 8), (1, 1, 8, 8, 7)), ((1, 8, 8, 8), (1, 8, 8, 8)), ((2, 1, 8, 8, 8), (1, 1, 8, 8, 8))],
)
def test_ncc_rejects_bad_shapes(loss, fixed_shape, moving_shape):
    with pytest.raises(ValueError, match=r"\(N, C, X, Y, Z\)"):
        loss(torch.zeros(fixed_shape), torch.zeros(moving_shape))


def test_local_ncc_rejects_several_channels():
    with pytest.raises(ValueError, match="single-channel"):
        LocalNCC(3)(torch.zeros(1, 2, 6, 6, 6), torch.zeros(1, 2, 6, 6, 6))


# ---------------------------------------------------------------- Gradient


@pytest.mark.parametrize("value", [0.0, 3.7])
def test_gradient_of_constant_field_is_zero(value):
    assert Gradient()(torch.full((2, 3, 6, 7, 8), value)).item() == 0.0


def ramp(shape, axis: int, slope: float) -> torch.Tensor:
    index = torch.arange(shape[axis], dtype=torch.float64).view([-1 if d == axis else 1 for d in range(3)])
    return (slope * index).expand(shape)


def test_gradient_of_linear_ramp_in_one_component():
    """u_x = a·i, u_y = u_z = 0: the forward difference along X is a in one channel of three.

    VoxelMorph's definition, as coded: mean over the three axes of the per-axis mean (over
    batch, channels and voxels) of squared forward differences, so (a²/3 + 0 + 0) / 3 = a²/9.
    """
    a, shape = 0.7, (6, 7, 8)
    field = torch.zeros(1, 3, *shape, dtype=torch.float64)
    field[0, 0] = ramp(shape, 0, a)
    assert Gradient()(field).item() == pytest.approx(a**2 / 9, rel=1e-12)


def test_gradient_of_linear_ramp_in_every_component():
    """u_c = a·i for every c: the mean over channels is a², so the loss is a²/3."""
    a, shape = 0.7, (6, 7, 8)
    field = ramp(shape, 0, a).expand(1, 3, *shape).contiguous()
    assert Gradient()(field).item() == pytest.approx(a**2 / 3, rel=1e-12)


def test_gradient_adds_the_axes():
    """u_x = a·i + b·j + c·k: (a² + b² + c²) / 9, whatever the grid size."""
    a, b, c = 0.5, -1.5, 2.0
    for shape in ((5, 6, 7), (12, 4, 9)):
        field = torch.zeros(2, 3, *shape, dtype=torch.float64)
        field[:, 0] = ramp(shape, 0, a) + ramp(shape, 1, b) + ramp(shape, 2, c)
        assert Gradient()(field).item() == pytest.approx((a**2 + b**2 + c**2) / 9, rel=1e-12)


@pytest.mark.parametrize("shape", [(1, 2, 6, 6, 6), (3, 6, 6, 6), (1, 3, 6, 6)])
def test_gradient_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"\(N, 3, X, Y, Z\)"):
        Gradient()(torch.zeros(shape))
