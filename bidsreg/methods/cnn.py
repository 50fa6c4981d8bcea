"""The ``cnn`` method: the two-stage network, and the registration of a pair with a trained model.

:func:`register_pair` runs centre-of-mass initialisation, the global (affine) network and the
local (deformable) network on the network grid (:mod:`bidsreg.nn`), and returns the world-space
:class:`~bidsreg.transform.Transform` with its fields on the fixed image's own full-resolution
grid. :func:`register_global` and :func:`register_local` are the method's two stages as the app
runs them (reported as ``cnnaffine`` and ``cnn``), from a checkpoint named by :class:`CNNConfig`.
"""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..fields import invert_displacement
from ..image import Volume, check_affine, load_volume
from ..nn.affine_stage import GlobalStage, symmetric_world_map
from ..nn.grid import NetworkGrid, PreparedImage, prepare_image, translation
from ..nn.instance import VelocityOptimisation, integrate_velocity, optimise_velocity
from ..nn.model import RegistrationModel
from ..transform import Transform
from .base import Context, RegistrationResult, config_parameters, option, using_threads

__all__ = ["CNNConfig", "CNNIOConfig", "align_pair", "loaded_model", "model_parameters", "register_global",
           "register_local", "register_optimised", "register_pair"]

#: Below this Dice of the two foregrounds after the global stage, the pair is refused.
MIN_FOREGROUND_DICE = 0.2
#: Fixed-point iterations of the inverse of a non-diffeomorphic field (see _inverse_on_grid).
INVERSE_ITERATIONS = 20


def _model_option():
    """The ``--model`` field of cnn and cnnio: one option for the two methods of one checkpoint."""
    return option("--model", "bidsreg checkpoint of the two-stage cnn and cnnio (default: the one train wrote in "
                             "output_dir, else the default weights shipped with bidsreg)")


@dataclass(frozen=True)
class CNNConfig:
    """Parameters of ``cnn``.

    Attributes
    ----------
    model : Path or None
        The two-stage checkpoint (the app fills it in: the one ``train`` wrote in output_dir,
        else the default weights shipped with bidsreg).
    """

    model: Path | None = _model_option()


@dataclass(frozen=True)
class CNNIOConfig:
    """Parameters of ``cnnio``: the two-stage network, then instance optimisation of its field
    (and, with ``affine_steps``, of its affine first).

    Attributes
    ----------
    model : Path or None
        The two-stage checkpoint, as :class:`CNNConfig`'s (one ``--model`` for both methods).
    affine_steps : int
        Adam steps on the 12 affine parameters after the global network
        (:func:`bidsreg.nn.affine_stage.refine_world_map`, on the 2 mm network grid; 0: none).
        The default, 100, was chosen on four training pairs with the shipped weights
        (``benchmarks/instance_sweep.py --affine-steps 0|100``): the final Dice rose from 0.601
        to 0.620 and the affine one from 0.348 to 0.411, and the affine no longer depends on the
        fixed image's pose (``benchmarks/global_instance_sweep.py``).
    iterations : tuple of int
        Adam iterations on the velocity field at twice the network grid's spacing and at it
        (4 mm and 2 mm for the default 2 mm grid); 0 skips a level.
    regularisation : float
        Weight of the diffusion term (:class:`bidsreg.nn.instance.VelocityOptimisation`).
    """

    model: Path | None = _model_option()
    affine_steps: int = option("--cnnio-affine-steps", "Adam steps on the affine parameters after the global network "
                                                       "(0: none)", 100)
    iterations: tuple[int, ...] = option("--cnnio-iterations", "Adam iterations on the velocity field at 4 mm and at "
                                                               "2 mm (two values; 0 skips a level)", (60, 10))
    regularisation: float = option("--cnnio-regularisation", "weight of the velocity field's diffusion term", 1.0)

    def __post_init__(self) -> None:
        if self.affine_steps < 0:
            raise ValueError(f"cnnio affine_steps must be >= 0, got {self.affine_steps}")
        if len(self.iterations) != 2:
            raise ValueError(f"cnnio iterations: two values (4 mm, 2 mm), got {self.iterations}")
        self.optimisation()  # its checks

    def optimisation(self) -> VelocityOptimisation:
        """The local stage's :class:`~bidsreg.nn.instance.VelocityOptimisation`."""
        return VelocityOptimisation(factors=(2, 1), iterations=self.iterations, regularisation=self.regularisation)


@contextmanager
def loaded_model(path: str | os.PathLike | None, context: Context) -> Iterator[RegistrationModel]:
    """The model of a checkpoint on ``context.device``, with torch and SimpleITK on
    ``context.threads`` threads until the block ends (:func:`~bidsreg.methods.base.using_threads`)."""
    if path is None:
        raise ValueError("a network method needs its checkpoint (model)")
    with using_threads(context.threads):
        yield RegistrationModel.from_checkpoint(path, context.device)


def register_global(fixed: str | os.PathLike, moving: str | os.PathLike, config: CNNConfig,
                    context: Context = Context()) -> RegistrationResult:
    """Stage 1 (``cnnaffine``): the global network, inverse-consistent (see :func:`align_pair`)."""
    with loaded_model(config.model, context) as model:
        result = align_pair(fixed, moving, model)
    return RegistrationResult(result.transform, result.seconds, model_parameters(config.model, context), result.steps)


def register_local(fixed: str | os.PathLike, moving: str | os.PathLike, config: CNNConfig, context: Context,
                   start: RegistrationResult) -> RegistrationResult:
    """Stage 2 (``cnn``): the local network from the global stage's affine; its seconds count both stages."""
    with loaded_model(config.model, context) as model:
        result = register_pair(fixed, moving, model, affine=start.transform.affine, inverse=True)
    return RegistrationResult(result.transform, start.seconds + result.seconds,
                              model_parameters(config.model, context, model), result.steps)


def register_optimised(fixed: str | os.PathLike, moving: str | os.PathLike, config: CNNIOConfig,
                       context: Context = Context()) -> RegistrationResult:
    """``cnnio``: both stages of the network, then instance optimisation for this pair (of the
    affine with ``config.affine_steps``, then of the field: :func:`register_pair` with
    ``global_instance_steps`` and ``local_instance``)."""
    with loaded_model(config.model, context) as model:
        result = register_pair(fixed, moving, model, inverse=True, global_instance_steps=config.affine_steps,
                               local_instance=config.optimisation())
        network = model_parameters(config.model, context, model)
    settings = {key: value for key, value in config_parameters(config).items() if key != "model"}
    parameters = {**network, **settings, **config_parameters(config.optimisation())}
    return RegistrationResult(result.transform, result.seconds, parameters, result.steps)


def model_parameters(path: str | os.PathLike, context: Context, model: RegistrationModel | None = None) -> dict:
    """What the sidecars say of a network method: its checkpoint's file name, the device, and
    with the ``model`` of a local stage, what its network predicts (``field``: ``"velocity"``,
    integrated by scaling and squaring, or ``"displacement"``)."""
    parameters = {"model": os.path.basename(path), "device": context.device}
    if model is not None:
        parameters["field"] = "velocity" if model.deformable_net.integrate is not None else "displacement"
    return parameters


def align_pair(
    fixed: Volume | str | os.PathLike,
    moving: Volume | str | os.PathLike,
    model: RegistrationModel,
    *,
    global_instance_steps: int = 0,
) -> RegistrationResult:
    """The global (affine) stage of :func:`register_pair` alone.

    Returns
    -------
    RegistrationResult
        An affine transform; ``parameters`` and ``steps`` as in :func:`register_pair`.
    """
    if global_instance_steps < 0:
        raise ValueError(f"global_instance_steps must be >= 0, got {global_instance_steps}")
    if not model.global_stage:
        raise ValueError(f"{model.source}: a one-stage model has no trained global stage; use register_pair()")
    steps: dict = {}
    with torch.no_grad():
        _, moving_vol, fixed_img, moving_img = _prepare_pair(fixed, moving, model, steps)
        stage, _ = _global_stage(model, fixed_img, moving_img, moving_vol, None, global_instance_steps, steps)
    return RegistrationResult(Transform(stage.world_map), sum(steps.values()), _grid_parameters(stage.grid), steps)


def register_pair(
    fixed: Volume | str | os.PathLike,
    moving: Volume | str | os.PathLike,
    model: RegistrationModel,
    *,
    affine: np.ndarray | None = None,
    inverse: bool = False,
    global_instance_steps: int = 0,
    local_instance: VelocityOptimisation | None = None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with a trained model.

    Parameters
    ----------
    fixed, moving : Volume or path-like
        3D images (any orientation, no prior alignment needed).
    model : RegistrationModel
    affine : numpy.ndarray, optional
        (4, 4) world map fixed -> moving of a global stage run earlier (:func:`align_pair`);
        the local stage starts from it. Default: run the global stage (a one-stage model: the
        centre-of-mass alignment).
    inverse : bool
        Also compute the inverse displacement field (fixed -> moving direction of warping).
    global_instance_steps : int
        Instance optimisation of the global stage (0: off, the default): this many Adam steps
        on the 12 affine parameters, from the network's prediction, on the stage-1 loss on
        the pooled grid the network reads (cheap: about a second for 200 steps on 2 CPU threads).
        Ignored with ``affine``.
    local_instance : VelocityOptimisation, optional
        Instance optimisation of the local stage (None: off, the default): a velocity field
        fitted to this pair from the network's output, coarse to fine
        (:func:`bidsreg.nn.instance.optimise_velocity`); the map is then a diffeomorphism of the
        network grid, and its inverse is exact (the integration of ``-v``).

    Returns
    -------
    RegistrationResult
        The transform with its fields on the network grid (2 mm, covering the fixed brain; zero
        beyond it, as ITK applies a field; :meth:`~bidsreg.transform.Transform.on_grid` carries
        them onto the fixed image's grid); ``parameters`` the network grid
        (``grid_shape``, ``grid_affine``: voxel -> RAS+ mm); ``steps`` the seconds of load,
        preprocess, global, local (and inverse), ``seconds`` their sum.
    """
    if global_instance_steps < 0:
        raise ValueError(f"global_instance_steps must be >= 0, got {global_instance_steps}")
    steps: dict = {}
    with torch.no_grad():
        _, moving_vol, fixed_img, moving_img = _prepare_pair(fixed, moving, model, steps)
        stage, moving_grid = _global_stage(model, fixed_img, moving_img, moving_vol, affine, global_instance_steps, steps)
        grid, fixed_grid = stage.grid, stage.fixed

        tick = time.perf_counter()
        net = model.deformable_net
        velocity = net.velocity(fixed_grid, moving_grid)
        integrate = net.integrate
        if local_instance is not None:
            velocity, _ = optimise_velocity(fixed_grid, moving_grid, velocity, local_instance)
            integrate = functools.partial(integrate_velocity, squarings=local_instance.squarings)
        field_voxels = integrate(velocity) if integrate is not None else velocity
        displacement = _channels_last(grid.displacement_to_world(field_voxels))
        steps["local"] = time.perf_counter() - tick

        inverse_displacement = None
        if inverse:
            tick = time.perf_counter()
            inverse_displacement = _inverse_on_grid(integrate, grid, velocity, field_voxels)
            steps["inverse"] = time.perf_counter() - tick
    transform = Transform(stage.world_map, displacement, inverse_displacement, grid.affine)
    return RegistrationResult(transform, sum(steps.values()), _grid_parameters(grid), steps)


def _grid_parameters(grid: NetworkGrid) -> dict:
    return {"grid_shape": list(grid.shape), "grid_affine": grid.affine.tolist()}


def _check_overlap(fixed: torch.Tensor, moving: torch.Tensor, threshold: float, moving_path: str) -> None:
    f, m = fixed > threshold, moving > threshold
    dice = 2.0 * float((f & m).sum()) / max(float(f.sum() + m.sum()), 1.0)
    if dice < MIN_FOREGROUND_DICE:
        raise ValueError(
            f"{moving_path}: the moving image barely overlaps the fixed image after initialisation "
            f"(foreground Dice {dice:.2f}); check that both are brain images of the same kind"
        )


def _as_volume(image: Volume | str | os.PathLike) -> Volume:
    return image if isinstance(image, Volume) else load_volume(image)


def _prepare_pair(
    fixed: Volume | str | os.PathLike, moving: Volume | str | os.PathLike, model: RegistrationModel, steps: dict
) -> tuple[Volume, Volume, PreparedImage, PreparedImage]:
    tick = time.perf_counter()
    fixed_vol, moving_vol = _as_volume(fixed), _as_volume(moving)
    steps["load"] = time.perf_counter() - tick
    tick = time.perf_counter()
    fixed_img, moving_img = (_on_device(prepare_image(v, model.preprocess), model.device) for v in (fixed_vol, moving_vol))
    steps["preprocess"] = time.perf_counter() - tick
    return fixed_vol, moving_vol, fixed_img, moving_img


def _given_global_stage(
    fixed: PreparedImage, moving: PreparedImage, model: RegistrationModel, world_map: np.ndarray
) -> GlobalStage:
    """The :class:`GlobalStage` of a global world map computed earlier (by :func:`align_pair`)."""
    world_map = check_affine(world_map, "the global world map")
    grid = NetworkGrid.covering(fixed, model.preprocess, model.affine_net.min_side)
    return GlobalStage(grid, grid.resample(fixed), translation(moving.centre - fixed.centre), world_map)


def _global_stage(
    model: RegistrationModel,
    fixed: PreparedImage,
    moving: PreparedImage,
    moving_vol: Volume,
    affine: np.ndarray | None,
    instance_steps: int,
    steps: dict,
) -> tuple[GlobalStage, torch.Tensor]:
    """The global stage (or the one given as ``affine``), checked for overlap; also returns the
    moving image on the network grid after it."""
    tick = time.perf_counter()
    if affine is None and not model.global_stage:
        affine = translation(moving.centre - fixed.centre)
    if affine is None:
        stage = symmetric_world_map(model.affine_net, fixed, moving, model.preprocess, instance_steps)
    else:
        stage = _given_global_stage(fixed, moving, model, affine)
    moving_grid = stage.grid.resample(moving, stage.world_map)
    _check_overlap(stage.fixed, moving_grid, model.preprocess.foreground, moving_vol.path or "moving image")
    steps["global"] = time.perf_counter() - tick
    return stage, moving_grid


def _channels_last(field: torch.Tensor) -> np.ndarray:
    """(1, 3, X, Y, Z) tensor -> (X, Y, Z, 3) numpy array."""
    return field[0].permute(1, 2, 3, 0).cpu().numpy()


def _inverse_on_grid(integrate: Callable[[torch.Tensor], torch.Tensor] | None, grid: NetworkGrid, velocity: torch.Tensor,
                     field: torch.Tensor) -> np.ndarray:
    """Inverse of the grid displacement, (X, Y, Z, 3) in mm: exact integration of ``-v`` for a
    velocity field (``integrate``), fixed-point inversion of the field otherwise.

    The fixed-point inversion runs at most :data:`INVERSE_ITERATIONS` iterations: where the
    field is smooth it has converged far below a voxel by then, and where the field folds it
    never converges (there is no inverse), so more iterations would only cost time.
    """
    if integrate is not None:
        return _channels_last(grid.displacement_to_world(integrate(-velocity)))
    return invert_displacement(_channels_last(grid.displacement_to_world(field)), grid.affine, iterations=INVERSE_ITERATIONS)


def _on_device(image: PreparedImage, device: torch.device) -> PreparedImage:
    if image.tensor.device == device:
        return image
    return PreparedImage(image.tensor.to(device), image.affine, image.centre, image.path)
