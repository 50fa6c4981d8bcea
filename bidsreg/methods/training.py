"""Train a network method's checkpoint from image files: resumable, written atomically.

:func:`bidsreg.nn.train.train` does the work in memory; here the images are read and checked
(:func:`bidsreg.image.load_volume`), an unfinished checkpoint of the same run is resumed, and
every checkpoint is written atomically, so that a killed training leaves the last one whole.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from ..atomic import atomic_output
from ..image import Volume, load_volume
from ..nn.checkpoint import load_checkpoint, save_checkpoint
from ..nn.train import TrainConfig, same_run, train

__all__ = ["train_model", "write_checkpoint"]


def write_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write a checkpoint payload atomically (its folder made if needed)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        save_checkpoint(tmp, payload)


def train_model(
    images: Sequence[Volume | str | os.PathLike],
    checkpoint: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    *,
    device: str = "auto",
    until: int | None = None,
    progress: bool = True,
    log_every: int = 0,
    initial: dict | None = None,
) -> dict:
    """Train ``config`` on ``images`` into ``checkpoint``; resume if it holds an unfinished run.

    Parameters
    ----------
    images : sequence of Volume or path-like
        Training images (T1w brains); no labels are used.
    checkpoint : path-like
        Output file. If it holds an unfinished run with the same configuration and images,
        training resumes from it; if it holds a finished one, it is returned unchanged.
    config : TrainConfig
    device, until, progress, log_every, initial
        As in :func:`bidsreg.nn.train.train` (``initial``: the payload of the weights to start from).

    Returns
    -------
    dict
        The checkpoint payload.

    Raises
    ------
    ValueError
        When an image cannot be used, or ``checkpoint`` holds another training.
    """
    checkpoint = Path(checkpoint)
    payload = load_checkpoint(checkpoint) if checkpoint.exists() else None
    volumes = [image if isinstance(image, Volume) else load_volume(image) for image in images]
    if payload is not None and not same_run(payload, config, volumes, initial):
        raise ValueError(f"{checkpoint}: holds a training with another configuration, other images or other initial "
                         "weights; choose a new output file or delete it to start again")
    return train(volumes, config, device=device, resume=payload, initial=initial,
                 save=partial(write_checkpoint, checkpoint), until=until, progress=progress, log_every=log_every)
