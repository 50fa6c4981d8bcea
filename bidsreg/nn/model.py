"""A trained model: both networks with the grid settings and loss weights they were trained with."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .checkpoint import build_networks, has_global_stage, load_checkpoint
from .grid import PreprocessConfig
from .networks import AffineNet, DeformableNet

__all__ = ["RegistrationModel", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as :class:`torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class RegistrationModel:
    """Both trained networks with the preprocessing they were trained with.

    ``global_stage`` is False for a one-stage model (``voxelmorph``): its local network was
    trained alone on centre-of-mass aligned pairs, and registration starts it from that
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
