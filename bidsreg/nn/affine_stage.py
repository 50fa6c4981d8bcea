"""The global (affine) stage on the network grid: the network in one direction, its guard, the
inverse-consistent mean of both directions, and instance optimisation of the 12 parameters.

A *world map* is a (4, 4) RAS matrix taking a point of the fixed (grid) world to the point of
the moving world it is compared with (see :mod:`bidsreg.nn.grid`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import expm, logm

from .grid import NetworkGrid, PreparedImage, PreprocessConfig, translation
from .layers import AffineTransformer
from .losses import GlobalNCC
from .networks import AffineNet

__all__ = ["GlobalStage", "global_world_map", "mean_world_map", "refine_world_map", "symmetric_world_map"]


def global_world_map(
    affine_net: AffineNet, grid: NetworkGrid, fixed: torch.Tensor, moving: PreparedImage, start: np.ndarray
) -> np.ndarray:
    """World map after the global network in one direction: ``start`` followed by its affine.

    The network's affine is kept only if it raises the stage-1 similarity (global NCC²) above
    that of ``start``; otherwise ``start`` is returned, so the global stage never undoes a good
    initialisation. This is the network alone, as in training; :func:`symmetric_world_map`
    averages both directions for registration.

    Parameters
    ----------
    affine_net : AffineNet
    grid : NetworkGrid
    fixed : torch.Tensor
        (1, 1, X, Y, Z) fixed image on ``grid``.
    moving : PreparedImage
    start : numpy.ndarray
        (4, 4) initial world map (centre of mass, possibly augmented).
    """
    fixed_low, moving_low = _pooled_pair(affine_net, grid, fixed, moving, start)
    theta = affine_net.cascade(fixed_low, moving_low)[-1].detach()
    return _guarded(grid, fixed_low, moving_low, start, theta)


def refine_world_map(
    affine_net: AffineNet,
    grid: NetworkGrid,
    fixed: torch.Tensor,
    moving: PreparedImage,
    start: np.ndarray,
    steps: int,
    lr: float = 2e-2,
    pool: int | None = 1,
) -> np.ndarray:
    """Global instance optimisation: Adam steps on the 12 affine parameters after ``start``.

    The stage-1 loss is minimised on the network grid average-pooled by ``pool`` (1, the
    default: the network grid itself, finer than the network reads; None: the pooled grid the
    network reads), and the result is guarded like :func:`global_world_map`. Parameters as
    there, with ``steps`` Adam steps of size ``lr``.

    The defaults were chosen on four pairs of OASIS-TRT-20 training subjects with the fixed
    image as stored and turned by 15° (``benchmarks/global_instance_sweep.py``, shipped weights
    fine-tuned): from the network's affine Dice of 0.348 (stored) and 0.308 (turned), 100 steps
    of 0.02 on the 2 mm grid reach 0.411 and 0.412 (the two poses within 0.002 on every
    pair); 200 steps of 0.002 on the pooled 4 mm grid reached 0.392 and 0.405, of 0.02 there
    0.403 and 0.409.
    """
    factor = affine_net.config["pool"] if pool is None else pool
    fixed_low, moving_low = (F.avg_pool3d(image, factor) if factor > 1 else image
                             for image in (fixed, grid.resample(moving, start)))
    similarity, warp = GlobalNCC(), AffineTransformer()
    theta = torch.eye(3, 4, dtype=fixed_low.dtype, device=fixed_low.device)[None].requires_grad_(True)
    optimiser = torch.optim.Adam([theta], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            similarity(fixed_low, warp(moving_low, theta)).backward()
            optimiser.step()
    return _guarded(grid, fixed_low, moving_low, start, theta.detach())


def _pooled_pair(affine_net: AffineNet, grid: NetworkGrid, fixed: torch.Tensor, moving: PreparedImage, start: np.ndarray):
    return affine_net.downsample(fixed), affine_net.downsample(grid.resample(moving, start))


@torch.no_grad()
def _guarded(grid: NetworkGrid, fixed_low: torch.Tensor, moving_low: torch.Tensor, start: np.ndarray, theta: torch.Tensor) -> np.ndarray:
    """``start`` followed by ``theta`` if that lowers the stage-1 loss, else ``start``."""
    similarity, warp = GlobalNCC(), AffineTransformer()
    if similarity(fixed_low, warp(moving_low, theta)) >= similarity(fixed_low, moving_low):
        return start
    return start @ grid.theta_to_world(theta[0].cpu().numpy())


def mean_world_map(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Log-Euclidean mean ``expm((logm A + logm B) / 2)`` of two (4, 4) affine world maps.

    Symmetric in its arguments, and ``mean_world_map(A, B)⁻¹ = mean_world_map(A⁻¹, B⁻¹)``.
    Defined for maps without reflection that are not far from the identity (a registration's
    maps are within tens of degrees of it).
    """
    mean = expm((logm(first) + logm(second)) / 2)
    if np.abs(mean.imag).max() > 1e-6:
        raise ValueError("the two affine maps are too far apart to average (a rotation near 180 degrees?)")
    out = np.array(mean.real)
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


@dataclass
class GlobalStage:
    """What the global stage produced (the inputs of the local stage).

    Attributes
    ----------
    grid : NetworkGrid
        The network grid covering the fixed brain.
    fixed : torch.Tensor
        (1, 1, X, Y, Z) fixed image on ``grid``.
    com : numpy.ndarray
        (4, 4) centre-of-mass world map (the start).
    world_map : numpy.ndarray
        (4, 4) world map fixed -> moving after the global stage.
    """

    grid: NetworkGrid
    fixed: torch.Tensor
    com: np.ndarray
    world_map: np.ndarray


def symmetric_world_map(
    affine_net: AffineNet,
    fixed: PreparedImage,
    moving: PreparedImage,
    config: PreprocessConfig,
    refine_steps: int = 0,
    refine_lr: float = 2e-2,
    refine_pool: int | None = 1,
) -> GlobalStage:
    """The global stage of registration, inverse-consistent by construction.

    The network runs in both directions from the centre-of-mass start: fixed -> moving on a
    grid centred on the fixed brain, and moving -> fixed on one centred on the moving brain,
    both of the shape that covers either brain (each direction guarded as in
    :func:`global_world_map`). The result is the log-Euclidean mean of
    the first and the inverse of the second, so that swapping the images inverts it exactly,
    and the two directions' independent errors partly cancel (on OASIS training subjects with
    held-out pairs, Dice 0.375 -> 0.384; ``benchmarks/global_stage_sweep.py``). With
    ``refine_steps`` the instance optimisation (:func:`refine_world_map`) then starts from
    that mean.

    Parameters
    ----------
    affine_net : AffineNet
    fixed, moving : PreparedImage
    config : PreprocessConfig
        Network grid settings (those the networks were trained with).
    refine_steps, refine_lr, refine_pool
        Global instance optimisation, see :func:`refine_world_map` (0: off).

    Returns
    -------
    GlobalStage
    """
    grid = NetworkGrid.covering(fixed, config, affine_net.min_side)
    moving_grid = NetworkGrid.covering(moving, config, affine_net.min_side)
    # Both directions read grids of one shape, so that swapping the images swaps them exactly.
    shape = tuple(max(a, b) for a, b in zip(grid.shape, moving_grid.shape))
    fixed_side, moving_side = grid.with_shape(shape), moving_grid.with_shape(shape)
    com = translation(moving.centre - fixed.centre)
    fixed_on_grid = grid.resample(fixed)
    fixed_on_side = fixed_on_grid if fixed_side is grid else fixed_side.resample(fixed)
    forward = global_world_map(affine_net, fixed_side, fixed_on_side, moving, com)
    backward = global_world_map(affine_net, moving_side, moving_side.resample(moving), fixed, np.linalg.inv(com))
    world_map = mean_world_map(forward, np.linalg.inv(backward))
    if refine_steps:
        world_map = refine_world_map(affine_net, grid, fixed_on_grid, moving, world_map, refine_steps, refine_lr,
                                     refine_pool)
    return GlobalStage(grid, fixed_on_grid, com, world_map)
