"""Instance optimisation of the local stage: a stationary velocity field fitted to one pair.

The network's output is a good start but not the optimum of the pair's own loss. Following the
optimisation-based methods that win brain benchmarks on a budget (ConvexAdam's Adam on a coarse
grid with its parameters smoothed by repeated 3³ averaging; FireANTs' coarse-to-fine Adam on a
velocity with local NCC), :func:`optimise_velocity` runs Adam on a velocity field ``v`` level by
level, coarse to fine, on the network grid average-pooled by each level's factor::

    L = −mean_k NCC_k(F, M ∘ exp(S v))² + λ · mean ‖∇ S v‖²

with ``S`` the smoothing of the parameters (``smoothing`` passes of a 3³ box average) and ``exp``
scaling and squaring, so that the map is a diffeomorphism of the grid and its inverse is
``exp(−S v)``. The NCC windows keep their extent in millimetres across levels (9 voxels of the
2 mm grid, 5 of the 4 mm one). The velocity is in voxels of the network grid (component ``c``
along axis ``c``), the frame of :mod:`bidsreg.nn.layers`.

The defaults were chosen on two pairs of training subjects (``benchmarks/instance_sweep.py``,
OASIS-TRT-20 sub-02 -> sub-01 and sub-04 -> sub-03, 2 threads): 60 iterations at 4 mm alone reach
Dice 0.554 from the network's 0.432 (12 s) and saturate there (120: 0.554); 10 more at 2 mm reach
0.620 (28 s; 20 of them: 0.619, 37 s). Five squarings instead of seven give the same Dice in 70-80 %
of the time (the integration's backward pass is most of an iteration's cost at 2 mm); no smoothing
of the parameters loses 0.012 and folds 0.003 % of the brain; λ = 0.3 instead of 1 gains 0.0015
with a rougher field (SDlogJ 0.55 against 0.45). Nothing else folds.

A level's parameters are pooled from the finer velocity it starts from and carried up to the
next level by trilinear interpolation in the pooling's own voxel frame (``align_corners=False``:
a pooled voxel's centre is the centre of the ``factor³`` voxels it averages).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layers import SpatialTransformer, VecInt
from .losses import Gradient, LocalNCC

__all__ = ["LevelTrace", "VelocityOptimisation", "integrate_velocity", "optimise_velocity"]


@dataclass(frozen=True)
class VelocityOptimisation:
    """How :func:`optimise_velocity` fits a velocity field.

    Attributes
    ----------
    factors : tuple of int
        Pooling factor of the network grid at each level, coarse to fine (``(2, 1)``: 4 mm, then
        2 mm on the 2 mm network grid).
    iterations : tuple of int
        Adam iterations at each level (0 skips the level).
    lr : float
        Adam step size, in voxels of the level.
    regularisation : float
        λ, the weight of the diffusion term (mean squared gradient of the smoothed velocity).
    smoothing : int
        Passes of the 3³ box average over the parameters (0: none).
    window : int
        Side of the NCC window at factor 1 (voxels of the network grid); odd.
    squarings : int
        Scaling-and-squaring steps of the integration.
    """

    factors: tuple[int, ...] = (2, 1)
    iterations: tuple[int, ...] = (60, 10)
    lr: float = 0.2
    regularisation: float = 1.0
    smoothing: int = 1
    window: int = 9
    squarings: int = 5

    def __post_init__(self) -> None:
        if len(self.factors) != len(self.iterations) or not self.factors:
            raise ValueError(f"factors and iterations need one value per level, got {self.factors} and {self.iterations}")
        if any(f < 1 for f in self.factors) or list(self.factors) != sorted(self.factors, reverse=True):
            raise ValueError(f"factors must be >= 1 and go from coarse to fine, got {self.factors}")
        if any(n < 0 for n in self.iterations):
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.lr <= 0 or self.regularisation < 0 or self.smoothing < 0 or self.squarings < 0:
            raise ValueError("lr must be > 0 and regularisation, smoothing and squarings >= 0, got "
                             f"{self.lr}, {self.regularisation}, {self.smoothing}, {self.squarings}")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"window must be a positive odd number, got {self.window}")


@dataclass(frozen=True)
class LevelTrace:
    """What one level did: its factor, the loss at its first and at its last iteration (each
    evaluated before that iteration's update: no extra pass), and its seconds."""

    factor: int
    first_loss: float
    last_loss: float
    seconds: float


def integrate_velocity(velocity: torch.Tensor, squarings: int = 5) -> torch.Tensor:
    """Displacement (N, 3, X, Y, Z), voxels, of ``exp(velocity)`` (scaling and squaring)."""
    return VecInt(squarings)(velocity)


def optimise_velocity(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    start: torch.Tensor | None,
    config: VelocityOptimisation = VelocityOptimisation(),
) -> tuple[torch.Tensor, tuple[LevelTrace, ...]]:
    """Fit a velocity field to one pair, coarse to fine, from ``start``.

    Parameters
    ----------
    fixed, moving : torch.Tensor
        (1, 1, X, Y, Z) images on the network grid (``moving`` after the global stage); sides
        divisible by every factor.
    start : torch.Tensor or None
        (1, 3, X, Y, Z) velocity in grid voxels to start from (the network's), None for zero.
    config : VelocityOptimisation

    Returns
    -------
    velocity : torch.Tensor
        (1, 3, X, Y, Z) smoothed velocity in grid voxels: the map is ``exp(velocity)``
        (:func:`integrate_velocity`), its inverse ``exp(-velocity)``.
    trace : tuple of LevelTrace
        One per level run.
    """
    shape = tuple(fixed.shape[2:])
    if fixed.ndim != 5 or fixed.shape[:2] != (1, 1) or moving.shape != fixed.shape:
        raise ValueError(f"fixed and moving must both be (1, 1, X, Y, Z), got {tuple(fixed.shape)} and {tuple(moving.shape)}")
    for factor in config.factors:
        if any(side % factor for side in shape):
            raise ValueError(f"grid sides {shape} are not divisible by the level factor {factor}")
    velocity = torch.zeros((1, 3, *shape), dtype=fixed.dtype, device=fixed.device) if start is None else start.detach()
    if tuple(velocity.shape) != (1, 3, *shape):
        raise ValueError(f"start must be (1, 3, {', '.join(map(str, shape))}), got {tuple(velocity.shape)}")
    trace = []
    for factor, iterations in zip(config.factors, config.iterations):
        if iterations == 0:
            continue
        tick = time.perf_counter()
        level_fixed, level_moving = _pool(fixed, factor), _pool(moving, factor)
        params = (_pool(velocity, factor) / factor).clone().requires_grad_(True)
        loss_of = _LevelLoss(config, factor)
        optimiser = torch.optim.Adam([params], lr=config.lr)
        losses = []
        with torch.enable_grad():
            for _ in range(iterations):
                optimiser.zero_grad()
                loss = loss_of(level_fixed, level_moving, params)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
        with torch.no_grad():
            velocity = _unpool(_smooth(params.detach(), config.smoothing), shape) * factor
        trace.append(LevelTrace(factor, losses[0], losses[-1], time.perf_counter() - tick))
    if not trace:  # no level ran: the start, smoothed as a level's result would be
        velocity = _smooth(velocity, config.smoothing)
    return velocity, tuple(trace)


class _LevelLoss:
    """The loss of one level on its parameters (voxels of the level)."""

    def __init__(self, config: VelocityOptimisation, factor: int) -> None:
        window = max(3, round(config.window / factor) // 2 * 2 + 1)
        self.similarity, self.gradient = LocalNCC(window), Gradient()
        self.warp, self.integrate = SpatialTransformer(), VecInt(config.squarings)
        self.config = config

    def __call__(self, fixed: torch.Tensor, moving: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        velocity = _smooth(params, self.config.smoothing)
        warped = self.warp(moving, self.integrate(velocity))
        return self.similarity(fixed, warped) + self.config.regularisation * self.gradient(velocity)


def _smooth(field: torch.Tensor, passes: int) -> torch.Tensor:
    for _ in range(passes):
        field = F.avg_pool3d(field, 3, stride=1, padding=1, count_include_pad=False)
    return field


def _pool(image: torch.Tensor, factor: int) -> torch.Tensor:
    return F.avg_pool3d(image, factor) if factor > 1 else image


def _unpool(field: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if tuple(field.shape[2:]) == shape:
        return field
    return F.interpolate(field, size=shape, mode="trilinear", align_corners=False)
