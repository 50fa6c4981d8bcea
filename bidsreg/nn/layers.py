"""Differentiable resampling layers: spatial transformers and velocity-field integration.

Tensors are laid out (N, C, X, Y, Z) with X, Y, Z the voxel axes i, j, k of the network grid
(nibabel's order). Coordinates and displacements are in voxel units of that grid, component
``c`` along axis ``c``. :func:`sample` is the only place that speaks ``grid_sample``'s
reversed, normalised convention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "identity_grid",
    "sample",
    "SpatialTransformer",
    "AffineTransformer",
    "VecInt",
    "affine_coordinates",
    "compose_affine",
    "grid_frame",
]


def identity_grid(shape: tuple[int, int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel coordinates of a grid, shape (1, 3, X, Y, Z)."""
    axes = [torch.arange(s, device=device, dtype=dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def sample(
    volume: torch.Tensor,
    coords: torch.Tensor,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Sample ``volume`` at voxel coordinates.

    Parameters
    ----------
    volume : torch.Tensor
        (N, C, X, Y, Z) values on a voxel grid.
    coords : torch.Tensor
        (N, 3, X', Y', Z') voxel coordinates (i, j, k) into ``volume``.
    mode, padding_mode : str
        As :func:`torch.nn.functional.grid_sample` ("bilinear" is trilinear in 3D).

    Returns
    -------
    torch.Tensor
        (N, C, X', Y', Z').
    """
    if volume.ndim != 5 or coords.ndim != 5 or coords.shape[1] != 3:
        raise ValueError(
            f"expected volume (N,C,X,Y,Z) and coords (N,3,X,Y,Z), got {tuple(volume.shape)} "
            f"and {tuple(coords.shape)}"
        )
    size = torch.tensor(volume.shape[2:], device=coords.device, dtype=coords.dtype)
    scale = (2.0 / (size - 1).clamp(min=1)).view(1, 3, 1, 1, 1)
    normalised = coords * scale - 1.0
    # grid_sample wants (N, X', Y', Z', 3) with the last axis ordered (k, j, i).
    grid = normalised.permute(0, 2, 3, 4, 1).flip(-1)
    parts = min(torch.get_num_threads(), grid.shape[1]) if volume.device.type == "cpu" and len(volume) == 1 else 1
    if parts < 2:
        return F.grid_sample(volume, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    # The CPU kernel of 3D grid_sample runs one thread per batch item: one image's points are
    # cut into slabs along X', one batch item each, and put back together (the same values).
    rows = grid.shape[1]
    step = -(-rows // parts)
    grid = F.pad(grid, (0, 0, 0, 0, 0, 0, 0, step * parts - rows)) if step * parts > rows else grid
    slabs = grid.reshape(parts, step, *grid.shape[2:])
    out = F.grid_sample(volume.expand(parts, *volume.shape[1:]), slabs, mode=mode, padding_mode=padding_mode,
                        align_corners=True)
    return out.permute(1, 0, 2, 3, 4).reshape(1, out.shape[1], step * parts, *out.shape[3:])[:, :, :rows]


class SpatialTransformer(nn.Module):
    """Warp a volume by a dense displacement field: ``out(p) = volume(p + u(p))``."""

    def __init__(self, mode: str = "bilinear", padding_mode: str = "zeros") -> None:
        super().__init__()
        self.mode = mode
        self.padding_mode = padding_mode

    def forward(self, volume: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
        """Warp (N, C, X, Y, Z) by a (N, 3, X, Y, Z) displacement in voxels."""
        grid = identity_grid(displacement.shape[2:], displacement.device, displacement.dtype)
        return sample(volume, grid + displacement, mode=self.mode, padding_mode=self.padding_mode)


def affine_coordinates(theta: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Voxel coordinates ``p -> c + R (A (p - c) / R + t)`` of an affine map on a grid.

    The affine acts in centred, isotropically normalised voxel coordinates
    ``q = (p - c) / R`` with ``c`` the grid centre and ``R`` half the largest grid extent
    (voxel edges included), so that the identity is ``[I | 0]``, a unit of translation is
    half the field of view whatever the grid's shape, and the same ``theta`` does the same
    thing on a grid and on that grid average-pooled by any integer factor.

    Parameters
    ----------
    theta : torch.Tensor
        (N, 3, 4) matrices ``[A | t]``.
    shape : tuple of int
        Grid shape (X, Y, Z).

    Returns
    -------
    torch.Tensor
        (N, 3, X, Y, Z) voxel coordinates.
    """
    if theta.ndim != 3 or theta.shape[1:] != (3, 4):
        raise ValueError(f"theta must be (N, 3, 4), got {tuple(theta.shape)}")
    centre, radius = grid_frame(shape)
    grid = identity_grid(shape, theta.device, theta.dtype)
    c = torch.tensor(centre, device=theta.device, dtype=theta.dtype).view(1, 3, 1, 1, 1)
    q = (grid - c) / radius
    mapped = torch.einsum("nij,njxyz->nixyz", theta[:, :, :3], q.expand(len(theta), -1, -1, -1, -1))
    return c + radius * (mapped + theta[:, :, 3].view(-1, 3, 1, 1, 1))


def grid_frame(shape: tuple[int, int, int]) -> tuple[tuple[float, float, float], float]:
    """Centre (voxels) and radius R (voxels, half the largest extent) of the normalised frame."""
    centre = tuple((s - 1) / 2.0 for s in shape)
    return centre, max(shape) / 2.0


def compose_affine(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``theta`` that warps like ``first`` then ``second``.

    ``AffineTransformer()(AffineTransformer()(v, first), second)`` samples ``v`` at
    ``first(second(q))``, which is ``AffineTransformer()(v, compose_affine(first, second))``.
    """
    linear = first[:, :, :3] @ second[:, :, :3]
    shift = first[:, :, :3] @ second[:, :, 3:] + first[:, :, 3:]
    return torch.cat([linear, shift], dim=2)


class AffineTransformer(nn.Module):
    """Warp a volume by an affine ``theta`` (see :func:`affine_coordinates`)."""

    def forward(self, volume: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return sample(volume, affine_coordinates(theta, tuple(volume.shape[2:])))


class VecInt(nn.Module):
    """Integrate a stationary velocity field by scaling and squaring.

    Parameters
    ----------
    steps : int
        Number of squarings; the field is first divided by ``2**steps``.
    """

    def __init__(self, steps: int = 7) -> None:
        super().__init__()
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.steps = steps
        self.transformer = SpatialTransformer(padding_mode="border")

    def forward(self, velocity: torch.Tensor) -> torch.Tensor:
        """Displacement (N, 3, X, Y, Z) of the exponential of a velocity field (voxels)."""
        field = velocity / (2**self.steps)
        for _ in range(self.steps):
            field = field + self.transformer(field, field)
        return field
