"""Training losses of the two stages.

Stage 1 (global) minimises minus the squared global normalised cross-correlation of the fixed
image ``F`` and the affinely warped moving image ``M_θ`` over all voxels::

    L_global = −(Σ (F − F̄)(M_θ − M̄_θ))² / (Σ (F − F̄)² · Σ (M_θ − M̄_θ)² + ε)

Stage 2 (local) minimises minus the mean over voxels ``k`` of the squared NCC in the 9×9×9
window around ``k`` (window means instead of image means), plus γ times the mean squared spatial
gradient of the displacement ``φ`` (means rather than sums, so that γ does not depend on the
image size)::

    L_local = −mean_k NCC_k(F, M_θ∘φ)² + γ · mean ‖∇φ‖²

All losses are :class:`torch.nn.Module` s on (N, C, X, Y, Z) tensors; they follow the device
and dtype of their inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GlobalNCC", "LocalNCC", "Gradient"]


def _check_pair(fixed: torch.Tensor, moving: torch.Tensor) -> None:
    if fixed.shape != moving.shape or fixed.ndim != 5:
        raise ValueError(
            f"fixed and moving must both be (N, C, X, Y, Z), got {tuple(fixed.shape)} and {tuple(moving.shape)}"
        )


class GlobalNCC(nn.Module):
    """Minus the squared global normalised cross-correlation (stage 1 loss).

    ``-(Σ f'm')² / (Σ f'² Σ m'² + eps)`` with ``f' = F - mean F``, ``m' = M - mean M`` over all
    voxels of each image, averaged over the batch. -1 for an image and any increasing linear
    function of it.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        _check_pair(fixed, moving)
        f = fixed.flatten(1) - fixed.flatten(1).mean(dim=1, keepdim=True)
        m = moving.flatten(1) - moving.flatten(1).mean(dim=1, keepdim=True)
        cross = (f * m).sum(dim=1)
        return -(cross**2 / ((f * f).sum(dim=1) * (m * m).sum(dim=1) + self.eps)).mean()


class LocalNCC(nn.Module):
    """Minus the mean squared local NCC over cubic windows (stage 2 similarity).

    Window sums are computed with three 1D box filters (separable), which costs 3·w instead
    of w³ operations per voxel. Windows are cut at the image border (the statistics use the
    voxels inside), so the loss is -1 for any increasing linear intensity change.

    Parameters
    ----------
    window : int
        Odd side of the cubic window in voxels (9 in the method).
    eps : float
        Added to the denominator.
    """

    def __init__(self, window: int = 9, eps: float = 1e-5) -> None:
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number, got {window}")
        self.window = window
        self.eps = eps

    def _box_sum(self, x: torch.Tensor) -> torch.Tensor:
        channels, w, pad = x.shape[1], self.window, self.window // 2
        kernel = torch.ones((channels, 1, w), device=x.device, dtype=x.dtype)
        x = F.conv3d(x, kernel.view(channels, 1, w, 1, 1), padding=(pad, 0, 0), groups=channels)
        x = F.conv3d(x, kernel.view(channels, 1, 1, w, 1), padding=(0, pad, 0), groups=channels)
        return F.conv3d(x, kernel.view(channels, 1, 1, 1, w), padding=(0, 0, pad), groups=channels)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        _check_pair(fixed, moving)
        if fixed.shape[1] != 1:
            raise ValueError(f"LocalNCC expects single-channel images, got {fixed.shape[1]} channels")
        n = self._box_sum(torch.ones_like(fixed))[:, 0]
        sums = self._box_sum(torch.cat([fixed, moving, fixed * fixed, moving * moving, fixed * moving], dim=1))
        f_sum, m_sum, ff_sum, mm_sum, fm_sum = sums.unbind(dim=1)
        cross = fm_sum - f_sum * m_sum / n
        f_var = ff_sum - f_sum * f_sum / n
        m_var = mm_sum - m_sum * m_sum / n
        return -(cross * cross / (f_var * m_var + self.eps)).mean()


class Gradient(nn.Module):
    """Mean squared spatial gradient of a displacement field (forward differences).

    The mean over the three axes of the per-axis mean of squared differences, VoxelMorph's
    definition, so that the weight γ does not depend on the image size.
    """

    def forward(self, displacement: torch.Tensor) -> torch.Tensor:
        if displacement.ndim != 5 or displacement.shape[1] != 3:
            raise ValueError(f"displacement must be (N, 3, X, Y, Z), got {tuple(displacement.shape)}")
        dx = displacement[:, :, 1:] - displacement[:, :, :-1]
        dy = displacement[:, :, :, 1:] - displacement[:, :, :, :-1]
        dz = displacement[:, :, :, :, 1:] - displacement[:, :, :, :, :-1]
        return ((dx * dx).mean() + (dy * dy).mean() + (dz * dz).mean()) / 3.0
