"""Checkpoints that carry their own configuration and load without running code.

A checkpoint is a plain ``dict`` (strings, numbers, lists, dicts, tensors) written with
:func:`torch.save` and read with ``torch.load(..., weights_only=True)``, so a model file
never executes code. It holds the constructor arguments of both networks, the preprocessing
and training configuration, a summary of the training data, the loss history, and for
unfinished trainings the optimiser and random-generator states needed to resume.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .networks import AffineNet, DeformableNet

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "build_networks", "has_global_stage"]

FORMAT = "bidsreg-checkpoint"
VERSION = 2
_ZIP_MAGIC = b"PK\x03\x04"


def save_checkpoint(file: str | os.PathLike | BinaryIO, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plain types and tensors), tagged as a bidsreg checkpoint.

    The file is written as it is; :func:`bidsreg.methods.training.write_checkpoint` writes
    one atomically.
    """
    torch.save({"format": FORMAT, "version": VERSION, **payload}, file)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check it is bidsreg's.

    Raises
    ------
    ValueError
        When the file is missing, is not a torch file, would need code to load, or is not a
        bidsreg checkpoint.
    """
    name = str(path)
    if not Path(name).is_file():
        raise ValueError(f"{name}: no such checkpoint; train one with 'bidsreg ... train' or check the path")
    try:
        payload = torch.load(name, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{name}: {_why_unloadable(Path(name), err)}; use a file written by bidsreg training") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{name}: not a bidsreg checkpoint (no '{FORMAT}' tag); use a file written by bidsreg training")
    if payload.get("version") != VERSION:
        raise ValueError(
            f"{name}: checkpoint version {payload.get('version')} is not supported by this bidsreg "
            f"(expected {VERSION}); train the model again with this version"
        )
    return payload


def _why_unloadable(path: Path, error: Exception) -> str:
    """What is wrong with a file that ``torch.load(weights_only=True)`` refused, in words."""
    if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):
        return "it holds Python objects whose loading would run code: refused (checkpoints load weights only)"
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        return "the file is empty"
    if head == _ZIP_MAGIC:  # torch.save writes a zip archive
        return "a torch file that is truncated or damaged (an interrupted copy or download?)"
    return "not a torch checkpoint file"


def build_networks(payload: dict[str, Any]) -> tuple[AffineNet, DeformableNet]:
    """Rebuild both networks from a checkpoint and load their weights (evaluation mode)."""
    affine = AffineNet(**payload["networks"]["affine"])
    deformable = DeformableNet(**payload["networks"]["deformable"])
    affine.load_state_dict(payload["state"]["affine"])
    deformable.load_state_dict(payload["state"]["deformable"])
    return affine.eval(), deformable.eval()


def has_global_stage(payload: dict[str, Any]) -> bool:
    """Whether a checkpoint's global network was trained (two-stage ``cnn``; False: one-stage
    ``voxelmorph``). Checkpoints written before one-stage training existed are two-stage."""
    return bool(payload["training"]["config"].get("global_stage", True))
