"""Register a pair of images with a trained two-stage model.

:func:`register` runs centre-of-mass initialisation, the global (affine) network and the
local (deformable) network on the network grid, and returns world-space transforms on the
fixed image's own full-resolution grid (see :class:`RegistrationResult` for the frames).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import expm, logm

from .image import Volume, load_volume
from .nn.checkpoint import build_networks, has_global_stage, load_checkpoint
from .nn.layers import AffineTransformer, SpatialTransformer
from .nn.losses import GlobalNCC, Gradient, LocalNCC
from .nn.networks import AffineNet, DeformableNet
from .preprocess import NetworkGrid, PreparedImage, PreprocessConfig, prepare_image, translation
from .transforms import invert_displacement, resample_displacement

__all__ = [
    "GlobalStage",
    "RegistrationModel",
    "RegistrationResult",
    "global_world_map",
    "mean_world_map",
    "refine_world_map",
    "register",
    "register_global",
    "resolve_device",
    "symmetric_world_map",
]

#: Below this Dice of the two foregrounds after the global stage, the pair is refused.
MIN_FOREGROUND_DICE = 0.2
#: Fixed-point iterations of the inverse of a non-diffeomorphic field (see _inverse_on_grid).
INVERSE_ITERATIONS = 20


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as :class:`torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class RegistrationModel:
    """Both trained networks with the preprocessing they were trained with.

    ``global_stage`` is False for a one-stage model (``voxelmorph``): its local network was
    trained alone on centre-of-mass aligned pairs, and :func:`register` starts it from that
    alignment instead of the (untrained) global network.
    """

    affine_net: AffineNet
    deformable_net: DeformableNet
    preprocess: PreprocessConfig
    smoothness: float = 1.0
    window: int = 9
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str = ""
    global_stage: bool = True

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> "RegistrationModel":
        """Load a bidsreg checkpoint (safely, ``weights_only=True``) onto ``device``."""
        payload = load_checkpoint(path)
        affine_net, deformable_net = build_networks(payload)
        dev = resolve_device(device)
        training = payload["training"]
        return cls(
            affine_net.to(dev),
            deformable_net.to(dev),
            PreprocessConfig(**payload["preprocess"]),
            smoothness=float(training["smoothness"]),
            window=int(training["window"]),
            device=dev,
            source=str(path),
            global_stage=has_global_stage(payload),
        )


@dataclass
class RegistrationResult:
    """World-space transforms from fixed to moving, on the fixed image's grid.

    A fixed point ``x`` (RAS+ mm) corresponds to the moving point
    ``affine @ (x + displacement(x))``; ANTs lists this as ``[displacement, affine]``.

    Attributes
    ----------
    fixed_shape : tuple of int
        Shape of the fixed image (X, Y, Z).
    fixed_affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm of the fixed image.
    affine : numpy.ndarray
        (4, 4) RAS world map fixed -> moving after the global stage.
    com_affine : numpy.ndarray
        (4, 4) centre-of-mass translation alone (the initialisation).
    displacement : numpy.ndarray
        (X, Y, Z, 3) float32 displacement in RAS mm on the fixed grid.
    inverse_displacement : numpy.ndarray or None
        (X, Y, Z, 3) inverse field on the fixed grid: moving ``y`` maps back to
        ``z + inverse_displacement(z)``, ``z = affine⁻¹ y``. Only when asked for.
    grid : NetworkGrid
        The grid the networks ran on.
    seconds : dict
        Wall-clock time of each step.
    """

    fixed_shape: tuple[int, int, int]
    fixed_affine: np.ndarray
    affine: np.ndarray
    com_affine: np.ndarray
    displacement: np.ndarray
    grid: NetworkGrid
    inverse_displacement: np.ndarray | None = None
    seconds: dict = field(default_factory=dict)


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
    lr: float = 2e-3,
) -> np.ndarray:
    """Global instance optimisation: Adam steps on the 12 affine parameters after ``start``.

    The stage-1 loss is minimised on the pooled grid the network reads (``affine_net`` only
    pools), and the result is guarded like :func:`global_world_map`. Parameters as there, with
    ``steps`` Adam steps of size ``lr``.
    """
    fixed_low, moving_low = _pooled_pair(affine_net, grid, fixed, moving, start)
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
    """What the global stage of :func:`register` produced (its inputs to the local stage).

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
    refine_lr: float = 2e-3,
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
    refine_steps, refine_lr
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
        world_map = refine_world_map(affine_net, grid, fixed_on_grid, moving, world_map, refine_steps, refine_lr)
    return GlobalStage(grid, fixed_on_grid, com, world_map)


def _check_overlap(fixed: torch.Tensor, moving: torch.Tensor, threshold: float, moving_path: str) -> None:
    f, m = fixed > threshold, moving > threshold
    dice = 2.0 * float((f & m).sum()) / max(float(f.sum() + m.sum()), 1.0)
    if dice < MIN_FOREGROUND_DICE:
        raise ValueError(
            f"{moving_path}: the moving image barely overlaps the fixed image after initialisation "
            f"(foreground Dice {dice:.2f}); check that both are brain images of the same kind"
        )


def _instance_optimise(
    model: RegistrationModel, fixed: torch.Tensor, moving: torch.Tensor, start: torch.Tensor, steps: int, lr: float
) -> torch.Tensor:
    """A few Adam steps on the network's output field for this pair (same loss as training)."""
    net = model.deformable_net
    param = start.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([param], lr=lr)
    similarity, smoothness, warp = LocalNCC(model.window), Gradient(), SpatialTransformer()
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            field = net.integrate(param) if net.integrate is not None else param
            loss = similarity(fixed, warp(moving, field)) + model.smoothness * smoothness(field)
            loss.backward()
            optimiser.step()
    return param.detach()


def _as_volume(image: Volume | str | os.PathLike) -> Volume:
    return image if isinstance(image, Volume) else load_volume(image)


def _prepare_pair(
    fixed: Volume | str | os.PathLike, moving: Volume | str | os.PathLike, model: RegistrationModel, seconds: dict
) -> tuple[Volume, Volume, PreparedImage, PreparedImage]:
    tick = time.perf_counter()
    fixed_vol, moving_vol = _as_volume(fixed), _as_volume(moving)
    seconds["load"] = time.perf_counter() - tick
    tick = time.perf_counter()
    fixed_img, moving_img = (_on_device(prepare_image(v, model.preprocess), model.device) for v in (fixed_vol, moving_vol))
    seconds["preprocess"] = time.perf_counter() - tick
    return fixed_vol, moving_vol, fixed_img, moving_img


def _given_global_stage(
    fixed: PreparedImage, moving: PreparedImage, model: RegistrationModel, world_map: np.ndarray
) -> GlobalStage:
    """The :class:`GlobalStage` of a global world map computed earlier (by :func:`register_global`)."""
    world_map = np.asarray(world_map, dtype=np.float64)
    if world_map.shape != (4, 4) or not np.all(np.isfinite(world_map)) or abs(np.linalg.det(world_map[:3, :3])) < 1e-6:
        raise ValueError(f"the global world map must be a finite invertible (4, 4) matrix, got {world_map!r}")
    grid = NetworkGrid.covering(fixed, model.preprocess, model.affine_net.min_side)
    return GlobalStage(grid, grid.resample(fixed), translation(moving.centre - fixed.centre), world_map)


def _global_stage(
    model: RegistrationModel,
    fixed: PreparedImage,
    moving: PreparedImage,
    moving_vol: Volume,
    affine: np.ndarray | None,
    steps: int,
    seconds: dict,
) -> tuple[GlobalStage, torch.Tensor]:
    """The global stage (or the one given as ``affine``), checked for overlap; also returns the
    moving image on the network grid after it."""
    tick = time.perf_counter()
    if affine is None and not model.global_stage:
        affine = translation(moving.centre - fixed.centre)
    if affine is None:
        stage = symmetric_world_map(model.affine_net, fixed, moving, model.preprocess, steps)
    else:
        stage = _given_global_stage(fixed, moving, model, affine)
    moving_grid = stage.grid.resample(moving, stage.world_map)
    _check_overlap(stage.fixed, moving_grid, model.preprocess.foreground, moving_vol.path or "moving image")
    seconds["global"] = time.perf_counter() - tick
    return stage, moving_grid


@torch.no_grad()
def register_global(
    fixed: Volume | str | os.PathLike,
    moving: Volume | str | os.PathLike,
    model: RegistrationModel,
    *,
    global_instance_steps: int = 0,
) -> RegistrationResult:
    """The global (affine) stage of :func:`register` alone.

    Returns
    -------
    RegistrationResult
        With a zero ``displacement`` (the affine is the whole transform).
    """
    if global_instance_steps < 0:
        raise ValueError(f"global_instance_steps must be >= 0, got {global_instance_steps}")
    if not model.global_stage:
        raise ValueError(f"{model.source}: a one-stage model has no trained global stage; use register()")
    seconds: dict = {}
    fixed_vol, moving_vol, fixed_img, moving_img = _prepare_pair(fixed, moving, model, seconds)
    stage, _ = _global_stage(model, fixed_img, moving_img, moving_vol, None, global_instance_steps, seconds)
    return RegistrationResult(
        fixed_shape=fixed_vol.shape,
        fixed_affine=fixed_vol.affine,
        affine=stage.world_map,
        com_affine=stage.com,
        displacement=np.zeros((*fixed_vol.shape, 3), dtype=np.float32),
        grid=stage.grid,
        seconds=seconds,
    )


@torch.no_grad()
def register(
    fixed: Volume | str | os.PathLike,
    moving: Volume | str | os.PathLike,
    model: RegistrationModel,
    *,
    affine: np.ndarray | None = None,
    inverse: bool = False,
    global_instance_steps: int = 0,
    local_instance_steps: int = 0,
    instance_lr: float = 0.1,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with a trained two-stage model.

    Parameters
    ----------
    fixed, moving : Volume or path-like
        3D images (any orientation, no prior alignment needed).
    model : RegistrationModel
    affine : numpy.ndarray, optional
        (4, 4) world map fixed -> moving of a global stage run earlier
        (:func:`register_global`); the local stage starts from it. Default: run the global stage
        (a one-stage model: the centre-of-mass alignment).
    inverse : bool
        Also compute the inverse displacement field (fixed -> moving direction of warping).
    global_instance_steps : int
        Instance optimisation of the global stage (0: off, the default): this many Adam steps
        on the 12 affine parameters, from the network's prediction, on the stage-1 loss on
        the pooled grid the network reads (cheap: about a second for 200 steps on 2 CPU threads).
        Ignored with ``affine``.
    local_instance_steps : int
        Instance optimisation of the local stage (0: off, the default): this many Adam steps on
        the network's output field, on the stage-2 loss, for this pair only.
    instance_lr : float
        Step size of the local instance optimisation (grid voxels).

    Returns
    -------
    RegistrationResult
    """
    for name, steps in (("global_instance_steps", global_instance_steps), ("local_instance_steps", local_instance_steps)):
        if steps < 0:
            raise ValueError(f"{name} must be >= 0, got {steps}")
    seconds: dict = {}
    fixed_vol, moving_vol, fixed_img, moving_img = _prepare_pair(fixed, moving, model, seconds)
    stage, moving_grid = _global_stage(model, fixed_img, moving_img, moving_vol, affine, global_instance_steps, seconds)
    grid, fixed_grid, com, world_map = stage.grid, stage.fixed, stage.com, stage.world_map

    tick = time.perf_counter()
    net = model.deformable_net
    velocity = net.velocity(fixed_grid, moving_grid)
    if local_instance_steps:
        velocity = _instance_optimise(model, fixed_grid, moving_grid, velocity, local_instance_steps, instance_lr)
    field_voxels = net.integrate(velocity) if net.integrate is not None else velocity
    displacement = resample_displacement(
        _channels_last(grid.displacement_to_world(field_voxels)), grid.affine, fixed_vol.shape, fixed_vol.affine
    )
    seconds["local"] = time.perf_counter() - tick

    inverse_displacement = None
    if inverse:
        tick = time.perf_counter()
        inverse_grid = _inverse_on_grid(net, grid, velocity, field_voxels)
        inverse_displacement = resample_displacement(inverse_grid, grid.affine, fixed_vol.shape, fixed_vol.affine)
        seconds["inverse"] = time.perf_counter() - tick
    return RegistrationResult(
        fixed_shape=fixed_vol.shape,
        fixed_affine=fixed_vol.affine,
        affine=world_map,
        com_affine=com,
        displacement=displacement,
        grid=grid,
        inverse_displacement=inverse_displacement,
        seconds=seconds,
    )


def _channels_last(field: torch.Tensor) -> np.ndarray:
    """(1, 3, X, Y, Z) tensor -> (X, Y, Z, 3) numpy array."""
    return field[0].permute(1, 2, 3, 0).cpu().numpy()


def _inverse_on_grid(net: DeformableNet, grid: NetworkGrid, velocity: torch.Tensor, field: torch.Tensor) -> np.ndarray:
    """Inverse of the grid displacement, (X, Y, Z, 3) in mm: exact integration of ``-v`` for a
    diffeomorphic network, fixed-point inversion of the field otherwise.

    The fixed-point inversion runs at most :data:`INVERSE_ITERATIONS` iterations: where the
    field is smooth it has converged far below a voxel by then, and where the field folds it
    never converges (there is no inverse), so more iterations would only cost time.
    """
    if net.integrate is not None:
        return _channels_last(grid.displacement_to_world(net.integrate(-velocity)))
    return invert_displacement(_channels_last(grid.displacement_to_world(field)), grid.affine, iterations=INVERSE_ITERATIONS)


def _on_device(image: PreparedImage, device: torch.device) -> PreparedImage:
    if image.tensor.device == device:
        return image
    return PreparedImage(image.tensor.to(device), image.affine, image.centre, image.path)
