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

Nothing here reads or writes files: :func:`train` takes images in memory and hands each
checkpoint to a ``save`` callback (:mod:`bidsreg.methods.training` trains from files).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .affine_stage import global_world_map
from .augment import gamma, random_affine
from .grid import Image, NetworkGrid, PreparedImage, PreprocessConfig, prepare_image, translation
from .layers import AffineTransformer, SpatialTransformer
from .losses import GlobalNCC, Gradient, LocalNCC
from .model import resolve_device
from .networks import AffineNet, DeformableNet

__all__ = ["TrainConfig", "initial_record", "same_run", "train", "training_data"]


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
        The local stage predicts a stationary velocity field integrated by scaling and squaring
        (the default: a diffeomorphism with an exact inverse, the integration of the negated
        field); False: a displacement field, as the original one-stage VoxelMorph.
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
    diffeomorphic: bool = True
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


def training_data(images: Sequence[Image]) -> dict:
    """The summary of a cohort that a checkpoint records: how many images and their file names."""
    return {"n_images": len(images),
            "images": [Path(image.path).name if image.path else f"image-{i}" for i, image in enumerate(images)]}


def initial_record(initial: dict | None) -> dict | None:
    """What a checkpoint records of the weights its training started from (None: from scratch).

    The training that produced them (steps, seconds, device, data, configuration), without its
    loss history.
    """
    if initial is None:
        return None
    training = initial["training"]
    return {key: training[key] for key in ("steps", "seconds", "device", "data", "config")}


def same_run(payload: dict, config: TrainConfig, images: Sequence[Image], initial: dict | None = None) -> bool:
    """Whether a checkpoint holds a training of ``config`` on ``images``, started from the
    weights of ``initial`` (None: from scratch), which it may resume."""
    training = payload["training"]
    return (training["config"] == config.to_dict() and training["data"] == training_data(images)
            and training.get("initial") == initial_record(initial))


@dataclass
class _Cohort:
    images: list[PreparedImage]
    grids: list[NetworkGrid]

    @classmethod
    def prepare(cls, images: Sequence[Image], config: PreprocessConfig, device: torch.device, min_side: int) -> "_Cohort":
        if len(images) < 2:
            raise ValueError(f"training needs at least 2 images, got {len(images)}")
        prepared = []
        for volume in images:
            image = prepare_image(volume, config)
            prepared.append(PreparedImage(image.tensor.to(device), image.affine, image.centre, image.path))
        return cls(prepared, [NetworkGrid.covering(image, config, min_side) for image in prepared])

    def pair(self, generator: torch.Generator) -> tuple[int, int]:
        n = len(self.images)
        fixed = int(torch.randint(n, (1,), generator=generator))
        moving = (fixed + 1 + int(torch.randint(n - 1, (1,), generator=generator))) % n
        return fixed, moving

    def sample(self, generator: torch.Generator, config: TrainConfig):
        """Draw a pair and its augmentation; returns (grid, fixed on grid, moving image, start map)."""
        i, j = self.pair(generator)
        fixed, moving, grid = self.images[i], self.images[j], self.grids[i]
        fixed_map = random_affine(
            generator, fixed.centre, config.fixed_max_rotation, config.fixed_max_scaling, config.fixed_max_translation
        )
        moving_map = random_affine(generator, moving.centre, config.max_rotation, config.max_scaling,
                                   config.max_translation)
        start = moving_map @ translation(moving.centre - fixed.centre) @ fixed_map
        fixed_grid = gamma(grid.resample(fixed, fixed_map), generator, config.gamma_sd)
        return grid, fixed_grid, moving, start


class _Training:
    """The state of a training run: networks, optimisers, random generator, loss history."""

    def __init__(self, config: TrainConfig, device: torch.device, affine_net: AffineNet, data: dict) -> None:
        self.config, self.device, self.data = config, device, data
        self.initial: dict | None = None
        self.affine_net = affine_net
        self.deformable_net = DeformableNet(
            config.encoder, config.decoder, config.head, config.diffeomorphic, config.integration_steps
        ).to(device)
        self.optimisers = {
            "affine": torch.optim.Adam(self.affine_net.parameters(), lr=config.affine_learning_rate),
            "deformable": torch.optim.Adam(self.deformable_net.parameters(), lr=config.learning_rate),
        }
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history: dict[str, list[float]] = {"affine": [], "deformable": []}
        self.step, self.seconds_before = 0, 0.0
        self.started = time.perf_counter()
        self.losses = {"global": GlobalNCC(), "local": LocalNCC(config.window), "grad": Gradient()}
        self.warp_affine, self.warp_field = AffineTransformer(), SpatialTransformer()

    @property
    def total(self) -> int:
        return self.config.affine_steps + self.config.deformable_steps

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def initialise(self, payload: dict) -> None:
        """Start from the network weights of ``payload`` (fresh optimisers, generator and history).

        The velocity or displacement reading of the local network's output is the
        configuration's: the weights of a displacement network start a velocity one well,
        since the integration of a small velocity field is close to the field itself.
        """
        networks = payload["networks"]
        parameters = ("encoder", "decoder", "head")
        if networks["affine"] != self.affine_net.config or any(
            networks["deformable"][key] != self.deformable_net.config[key] for key in parameters
        ):
            raise ValueError("the initial checkpoint's networks have other widths than the configuration's "
                             f"(affine {networks['affine']}, local {networks['deformable']})")
        self.affine_net.load_state_dict(payload["state"]["affine"])
        self.deformable_net.load_state_dict(payload["state"]["deformable"])
        self.initial = initial_record(payload)

    def restore(self, payload: dict) -> None:
        """Continue the unfinished run of ``payload``."""
        self.affine_net.load_state_dict(payload["state"]["affine"])
        self.deformable_net.load_state_dict(payload["state"]["deformable"])
        for key, optimiser in self.optimisers.items():
            optimiser.load_state_dict(payload["resume"]["optimisers"][key])
        self.generator.set_state(payload["resume"]["generator"])
        self.history = {key: list(values) for key, values in payload["training"]["history"].items()}
        self.step = int(payload["resume"]["step"])
        self.seconds_before = float(payload["training"]["seconds"])
        self.initial = payload["training"].get("initial")

    def loss(self, cohort: _Cohort) -> tuple[str, torch.Tensor]:
        """The stage trained at this step and its loss on a newly drawn pair."""
        config = self.config
        grid, fixed_grid, moving, start = cohort.sample(self.generator, config)
        if self.step < config.affine_steps:
            moving_grid = gamma(grid.resample(moving, start), self.generator, config.gamma_sd)
            fixed_low, moving_low = self.affine_net.downsample(fixed_grid), self.affine_net.downsample(moving_grid)
            thetas = self.affine_net.cascade(fixed_low, moving_low)
            similarity = self.losses["global"]
            return "affine", sum(similarity(fixed_low, self.warp_affine(moving_low, theta)) for theta in thetas) / len(thetas)
        world_map = start
        if config.global_stage:
            with torch.no_grad():
                world_map = global_world_map(self.affine_net, grid, fixed_grid, moving, start)
        moving_grid = gamma(grid.resample(moving, world_map), self.generator, config.gamma_sd)
        field_voxels = self.deformable_net(fixed_grid, moving_grid)
        similarity = self.losses["local"](fixed_grid, self.warp_field(moving_grid, field_voxels))
        return "deformable", similarity + config.smoothness * self.losses["grad"](field_voxels)

    def advance(self, stage: str, loss: torch.Tensor) -> None:
        """One optimiser step of ``stage``."""
        optimiser = self.optimisers[stage]
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_((self.affine_net if stage == "affine" else self.deformable_net).parameters(), 10.0)
        optimiser.step()
        self.history[stage].append(loss.item())
        self.step += 1

    def snapshot(self) -> dict:
        """The checkpoint payload of the run so far (with what resuming needs while unfinished)."""
        complete = self.step >= self.total
        out = {
            "networks": {"affine": self.affine_net.config, "deformable": self.deformable_net.config},
            "state": {"affine": self.affine_net.state_dict(), "deformable": self.deformable_net.state_dict()},
            "preprocess": self.config.preprocess.to_dict(),
            "training": {
                "config": self.config.to_dict(),
                "data": self.data,
                "history": self.history,
                "complete": complete,
                "smoothness": self.config.smoothness,
                "window": self.config.window,
                "seed": self.config.seed,
                "device": self.device.type,
                "steps": self.step,
                "seconds": self.seconds,
            },
        }
        if self.initial is not None:
            out["training"]["initial"] = self.initial
        if not complete:
            out["resume"] = {
                "step": self.step,
                "generator": self.generator.get_state(),
                "optimisers": {key: optimiser.state_dict() for key, optimiser in self.optimisers.items()},
            }
        return out


def train(
    images: Sequence[Image],
    config: TrainConfig = TrainConfig(),
    *,
    device: str | torch.device = "auto",
    resume: dict | None = None,
    initial: dict | None = None,
    save: Callable[[dict], None] | None = None,
    until: int | None = None,
    progress: bool = True,
    log_every: int = 0,
) -> dict:
    """Train both stages (or the local one alone, ``config.global_stage`` False).

    Parameters
    ----------
    images : sequence of Image
        Training images (T1w brains, e.g. :class:`bidsreg.image.Volume`); no labels are used.
    config : TrainConfig
    device : str or torch.device
        "auto" (CUDA if available), "cpu" or "cuda".
    resume : dict, optional
        The checkpoint payload of a run of this configuration on these images
        (:func:`same_run`): an unfinished one is continued, a finished one returned as it is.
    save : callable, optional
        Called with the checkpoint payload every ``config.checkpoint_every`` steps and at the end.
    until : int, optional
        Stop after this many steps in all (both stages), with a resumable payload.
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

    Raises
    ------
    ValueError
        With fewer than two images, a ``resume`` payload of another run, or ``initial``
        networks of other widths.
    """
    dev = resolve_device(device)
    torch.manual_seed(config.seed)  # before building the networks: it seeds their initialisation
    affine_net = AffineNet(
        config.affine_features, norm=config.affine_norm, pool=config.affine_pool, passes=config.affine_passes
    ).to(dev)
    cohort = _Cohort.prepare(images, config.preprocess, dev, affine_net.min_side)
    if resume is not None:
        if not same_run(resume, config, images, initial):
            raise ValueError("the checkpoint to resume holds a training with another configuration, other images "
                             "or other initial weights")
        if resume["training"]["complete"]:
            return resume
    run = _Training(config, dev, affine_net, training_data(images))
    if resume is not None:
        run.restore(resume)
    elif initial is not None:
        run.initialise(initial)
    run.started = time.perf_counter()
    stop = run.total if until is None else min(run.total, until)
    bar = tqdm(total=run.total, initial=run.step, disable=not progress, desc="training", unit="step")
    while run.step < stop:
        stage, loss = run.loss(cohort)
        run.advance(stage, loss)
        bar.update(1)
        bar.set_postfix(stage=stage, loss=f"{run.history[stage][-1]:.4f}")
        if log_every and (run.step % log_every == 0 or run.step == run.total):
            recent = run.history[stage][-log_every:]
            logging.getLogger("bidsreg").info(
                "training step %d/%d (%s): mean loss %.4f over the last %d steps, %.0f s",
                run.step, run.total, stage, float(np.mean(recent)), len(recent), run.seconds,
            )
        if save is not None and run.step % config.checkpoint_every == 0 and run.step < run.total:
            save(run.snapshot())
    bar.close()
    payload = run.snapshot()
    if save is not None:
        save(payload)
    return payload
