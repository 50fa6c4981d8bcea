"""The ``voxelmorph`` method: the one-stage variant of the original comparison.

The same U-Net and loss as the CNN's local stage, trained alone (``TrainConfig.global_stage``
False) on pairs aligned only by their centres of mass, and applied from that alignment: no
affine network.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .base import Context, RegistrationResult, option
from .cnn import loaded_model, model_parameters, register_pair

__all__ = ["VoxelMorphConfig", "register"]


@dataclass(frozen=True)
class VoxelMorphConfig:
    """Parameters of ``voxelmorph``.

    Attributes
    ----------
    model : Path or None
        The one-stage checkpoint (the app fills it in: the one ``train --methods voxelmorph``
        wrote in output_dir).
    """

    model: Path | None = option("--voxelmorph-model", "one-stage checkpoint of voxelmorph (default: the one "
                                                      "'train --methods voxelmorph' wrote in output_dir)")


def register(fixed: str | os.PathLike, moving: str | os.PathLike, config: VoxelMorphConfig,
             context: Context = Context()) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with the one-stage network, from the centre-of-mass alignment."""
    with loaded_model(config.model, context) as model:
        if model.global_stage:
            raise ValueError(f"{config.model}: a two-stage (cnn) checkpoint, not a one-stage voxelmorph one")
        result = register_pair(fixed, moving, model, inverse=True)
        parameters = model_parameters(config.model, context, model)
    return RegistrationResult(result.transform, result.seconds, parameters, result.steps)
