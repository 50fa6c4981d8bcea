"""Unsupervised training of both stages on a list of images.

Pairs are drawn at random from the cohort (any image may be the fixed one), each image is
moved by a random affine and a random intensity gamma, the global stage is trained first on
``-GlobalNCC²`` and the local stage then on pairs aligned by the trained global stage with
``-LocalNCC² + γ·|∇u|²``. With ``global_stage=False`` the local network is trained alone, on
pairs aligned only by their centres of mass (the one-stage ``voxelmorph`` method of the
original comparison). All randomness comes from one seeded :class:`torch.Generator`
whose state is checkpointed, so that a training resumed from a checkpoint is exactly the
uninterrupted one on CPU. (On CUDA, ``grid_sample``'s 3D backward uses atomic adds and is
not bitwise reproducible.)
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..image import Volume, load_volume
from ..preprocess import NetworkGrid, PreparedImage, PreprocessConfig, prepare_image, translation
from ..registration import global_world_map, resolve_device
from .checkpoint import load_checkpoint, save_checkpoint
from .layers import AffineTransformer, SpatialTransformer
from .losses import GlobalNCC, Gradient, LocalNCC
from .networks import AffineNet, DeformableNet

__all__ = ["TrainConfig", "train", "random_affine", "rotation_matrix"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint).

    Attributes
    ----------
    affine_steps, deformable_steps : int
        Optimiser steps (one pair each) of the global and the local stage.
    affine_pool : int
        The global network reads the grid average-pooled by this factor.
    affine_passes : int
        Passes of the global network's recursive cascade; its loss is the mean over passes.
    affine_learning_rate, learning_rate : float
        Adam step sizes of the global and of the local stage.
    smoothness : float
        γ, weight of the squared displacement gradient (displacement in grid voxels).
    window : int
        Side of the local NCC window (voxels).
    diffeomorphic : bool
        Local stage predicts a stationary velocity field integrated by scaling and squaring.
    integration_steps : int
        Squarings of that integration.
    max_rotation : float
        Largest augmentation rotation of the moving image about each axis (degrees).
    max_scaling : float
        Largest relative augmentation scaling of the moving image per axis.
    max_translation : float
        Largest augmentation translation of the moving image per axis (mm).
    fixed_max_rotation, fixed_max_scaling, fixed_max_translation : float
        The same bounds for the fixed image. They are smaller by default: the moving image's
        augmentation already covers the pose differences within a pair, and a fixed image that
        stays close to its stored pose keeps the global network's capacity for precision
        (``benchmarks/global_stage_sweep.py``).
    gamma_sd : float
        Standard deviation of the log intensity gamma.
    global_stage : bool
        Train the global network and feed the local one with its alignment (the two-stage
        ``cnn``); False: the local network alone on centre-of-mass aligned pairs (the one-stage
        ``voxelmorph``; ``affine_steps`` must then be 0).
    checkpoint_every : int
        Write a resumable checkpoint every so many steps.
    seed : int
        Seeds the pair sampling, the augmentation and the network initialisation.
    affine_features, encoder, decoder, head : list of int
        Network widths (see :class:`AffineNet` and :class:`DeformableNet`).
    preprocess : PreprocessConfig
    """

    affine_steps: int = 8000
    deformable_steps: int = 1500
    affine_pool: int = 2
    affine_passes: int = 2
    affine_learning_rate: float = 3e-4
    learning_rate: float = 3e-4
    smoothness: float = 1.0
    window: int = 9
    diffeomorphic: bool = False
    integration_steps: int = 7
    max_rotation: float = 15.0
    max_scaling: float = 0.1
    max_translation: float = 10.0
    fixed_max_rotation: float = 5.0
    fixed_max_scaling: float = 0.03
    fixed_max_translation: float = 3.0
    gamma_sd: float = 0.15
    global_stage: bool = True
    checkpoint_every: int = 100
    seed: int = 0
    affine_features: tuple[int, ...] = (16, 32, 64, 64)
    affine_norm: bool = True
    encoder: tuple[int, ...] = (16, 32, 32, 32)
    decoder: tuple[int, ...] = (32, 32, 32, 32)
    head: tuple[int, ...] = (16, 16)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        for name in ("affine_steps", "deformable_steps", "checkpoint_every"):
            if getattr(self, name) < (1 if name == "checkpoint_every" else 0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.global_stage and self.affine_steps:
            raise ValueError(f"a one-stage training (global_stage False) has no affine steps, got {self.affine_steps}")
        if self.smoothness < 0:
            raise ValueError(f"smoothness must be >= 0, got {self.smoothness}")

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("affine_features", "encoder", "decoder", "head"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        values = dict(values)
        values["preprocess"] = PreprocessConfig(**values["preprocess"])
        for key in ("affine_features", "encoder", "decoder", "head"):
            values[key] = tuple(values[key])
        return cls(**values)


def rotation_matrix(degrees: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation about the first, then the second, then the third axis (degrees)."""
    matrix = np.eye(3)
    for axis, angle in enumerate(np.deg2rad(np.asarray(degrees, dtype=np.float64))):
        c, s = math.cos(angle), math.sin(angle)
        a, b = [d for d in range(3) if d != axis]
        r = np.eye(3)
        r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
        matrix = r @ matrix
    return matrix


def random_affine(
    generator: torch.Generator, centre: np.ndarray, max_rotation: float, max_scaling: float, max_translation: float
) -> np.ndarray:
    """A random (4, 4) RAS world map about ``centre``: rotation, scaling and translation.

    Parameters are drawn uniformly within the bounds (degrees per axis, relative scaling per
    axis, mm per axis); the map itself is then a deterministic function of them.
    """
    u = torch.rand(9, generator=generator, dtype=torch.float64).numpy() * 2 - 1
    angles = np.deg2rad(max_rotation) * u[:3]
    scales = 1 + max_scaling * u[3:6]
    shift = max_translation * u[6:9]
    rotation = rotation_matrix(np.rad2deg(angles))
    linear = rotation @ np.diag(scales)
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = centre - linear @ centre + shift
    return matrix


def _gamma(image: torch.Tensor, generator: torch.Generator, sd: float) -> torch.Tensor:
    exponent = math.exp(sd * float(torch.randn(1, generator=generator, dtype=torch.float64)))
    return image.clamp(min=0) ** exponent


@dataclass
class _Cohort:
    images: list[PreparedImage]
    grids: list[NetworkGrid]
    names: list[str]

    def pair(self, generator: torch.Generator) -> tuple[int, int]:
        n = len(self.images)
        fixed = int(torch.randint(n, (1,), generator=generator))
        moving = (fixed + 1 + int(torch.randint(n - 1, (1,), generator=generator))) % n
        return fixed, moving


def _load_cohort(
    images: Sequence[Volume | str | os.PathLike], config: PreprocessConfig, device: torch.device, min_side: int
) -> _Cohort:
    if len(images) < 2:
        raise ValueError(f"training needs at least 2 images, got {len(images)}")
    prepared, grids, names = [], [], []
    for item in images:
        volume = item if isinstance(item, Volume) else load_volume(item)
        image = prepare_image(volume, config)
        image = PreparedImage(image.tensor.to(device), image.affine, image.centre, image.path)
        prepared.append(image)
        grids.append(NetworkGrid.covering(image, config, min_side))
        names.append(Path(volume.path).name if volume.path else f"image-{len(names)}")
    return _Cohort(prepared, grids, names)


def _sample_pair(cohort: _Cohort, generator: torch.Generator, config: TrainConfig):
    """Draw a pair and its augmentation; returns (grid, fixed on grid, moving image, start map)."""
    i, j = cohort.pair(generator)
    fixed, moving, grid = cohort.images[i], cohort.images[j], cohort.grids[i]
    fixed_map = random_affine(
        generator, fixed.centre, config.fixed_max_rotation, config.fixed_max_scaling, config.fixed_max_translation
    )
    moving_map = random_affine(generator, moving.centre, config.max_rotation, config.max_scaling, config.max_translation)
    start = moving_map @ translation(moving.centre - fixed.centre) @ fixed_map
    fixed_grid = _gamma(grid.resample(fixed, fixed_map), generator, config.gamma_sd)
    return grid, fixed_grid, moving, start


def train(
    images: Sequence[Volume | str | os.PathLike],
    checkpoint: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    *,
    device: str | torch.device = "auto",
    until: int | None = None,
    progress: bool = True,
    log_every: int = 0,
) -> dict:
    """Train both stages and write a checkpoint; resume if ``checkpoint`` holds an unfinished run.

    Parameters
    ----------
    images : sequence of Volume or path-like
        Training images (T1w brains); no labels are used.
    checkpoint : path-like
        Output file. If it exists and holds an unfinished run with the same configuration and
        data, training resumes from it; if it holds a finished one, it is returned unchanged.
    config : TrainConfig
    device : str or torch.device
        "auto" (CUDA if available), "cpu" or "cuda".
    until : int, optional
        Stop after this many steps in all (both stages), leaving a resumable checkpoint.
    progress : bool
        Show a tqdm progress bar with the running loss.
    log_every : int
        Also log a line (logger ``bidsreg``) every this many steps with the stage, the mean
        loss since the last line and the elapsed time, for logs that are not a terminal
        (a cluster job's output); 0: never.

    Returns
    -------
    dict
        The checkpoint payload.
    """
    dev = resolve_device(device)
    checkpoint = Path(checkpoint)
    payload = load_checkpoint(checkpoint) if checkpoint.exists() else None
    torch.manual_seed(config.seed)
    affine_net = AffineNet(
        config.affine_features, norm=config.affine_norm, pool=config.affine_pool, passes=config.affine_passes
    ).to(dev)
    cohort = _load_cohort(images, config.preprocess, dev, affine_net.min_side)
    data_summary = {"n_images": len(cohort.names), "images": cohort.names}
    if payload is not None:
        if payload["training"]["config"] != config.to_dict() or payload["training"]["data"] != data_summary:
            raise ValueError(
                f"{checkpoint}: holds a training with another configuration or other images; "
                "choose a new output file or delete it to start again"
            )
        if payload["training"]["complete"]:
            return payload

    deformable_net = DeformableNet(
        config.encoder, config.decoder, config.head, config.diffeomorphic, config.integration_steps
    ).to(dev)
    optimisers = {
        "affine": torch.optim.Adam(affine_net.parameters(), lr=config.affine_learning_rate),
        "deformable": torch.optim.Adam(deformable_net.parameters(), lr=config.learning_rate),
    }
    generator = torch.Generator().manual_seed(config.seed)
    history: dict[str, list[float]] = {"affine": [], "deformable": []}
    step, seconds = 0, 0.0
    if payload is not None:
        affine_net.load_state_dict(payload["state"]["affine"])
        deformable_net.load_state_dict(payload["state"]["deformable"])
        for key, opt in optimisers.items():
            opt.load_state_dict(payload["resume"]["optimisers"][key])
        generator.set_state(payload["resume"]["generator"])
        history = {key: list(values) for key, values in payload["training"]["history"].items()}
        step = int(payload["resume"]["step"])
        seconds = float(payload["training"]["seconds"])
    started = time.perf_counter()

    total = config.affine_steps + config.deformable_steps
    stop = total if until is None else min(total, until)
    losses = {"global": GlobalNCC(), "local": LocalNCC(config.window), "grad": Gradient()}
    warp_affine, warp_field = AffineTransformer(), SpatialTransformer()

    def snapshot(complete: bool) -> dict:
        out = {
            "networks": {"affine": affine_net.config, "deformable": deformable_net.config},
            "state": {"affine": affine_net.state_dict(), "deformable": deformable_net.state_dict()},
            "preprocess": config.preprocess.to_dict(),
            "training": {
                "config": config.to_dict(),
                "data": data_summary,
                "history": history,
                "complete": complete,
                "smoothness": config.smoothness,
                "window": config.window,
                "seed": config.seed,
                "device": dev.type,
                "steps": step,
                "seconds": seconds + time.perf_counter() - started,
            },
        }
        if not complete:
            out["resume"] = {
                "step": step,
                "generator": generator.get_state(),
                "optimisers": {key: opt.state_dict() for key, opt in optimisers.items()},
            }
        return out

    bar = tqdm(total=total, initial=step, disable=not progress, desc="training", unit="step")
    while step < stop:
        grid, fixed_grid, moving, start = _sample_pair(cohort, generator, config)
        if step < config.affine_steps:
            stage = "affine"
            moving_grid = _gamma(grid.resample(moving, start), generator, config.gamma_sd)
            fixed_low, moving_low = affine_net.downsample(fixed_grid), affine_net.downsample(moving_grid)
            thetas = affine_net.cascade(fixed_low, moving_low)
            loss = sum(losses["global"](fixed_low, warp_affine(moving_low, theta)) for theta in thetas) / len(thetas)
        else:
            stage = "deformable"
            world_map = start
            if config.global_stage:
                with torch.no_grad():
                    world_map = global_world_map(affine_net, grid, fixed_grid, moving, start)
            moving_grid = _gamma(grid.resample(moving, world_map), generator, config.gamma_sd)
            field_voxels = deformable_net(fixed_grid, moving_grid)
            loss = losses["local"](fixed_grid, warp_field(moving_grid, field_voxels)) + config.smoothness * losses[
                "grad"
            ](field_voxels)
        optimisers[stage].zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_((affine_net if stage == "affine" else deformable_net).parameters(), 10.0)
        optimisers[stage].step()
        history[stage].append(loss.item())
        step += 1
        bar.update(1)
        bar.set_postfix(stage=stage, loss=f"{history[stage][-1]:.4f}")
        if log_every and (step % log_every == 0 or step == total):
            recent = history[stage][-log_every:]
            logging.getLogger("bidsreg").info(
                "training step %d/%d (%s): mean loss %.4f over the last %d steps, %.0f s",
                step, total, stage, float(np.mean(recent)), len(recent), seconds + time.perf_counter() - started,
            )
        if step % config.checkpoint_every == 0 and step < total:
            save_checkpoint(checkpoint, snapshot(False))
    bar.close()
    payload = snapshot(step >= total)
    save_checkpoint(checkpoint, payload)
    return payload
