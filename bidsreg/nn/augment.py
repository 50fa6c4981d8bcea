"""Random augmentation of training pairs: affine maps and intensity gammas.

As in TorchIO, the parameters are drawn from a seeded :class:`torch.Generator` and the map is
then a deterministic function of them, so a training run (and :mod:`bidsreg.demo`'s synthetic
subjects) repeats exactly from its seed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["gamma", "random_affine", "rotation_matrix"]


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


def gamma(image: torch.Tensor, generator: torch.Generator, sd: float) -> torch.Tensor:
    """``image ** exp(sd * n)``, ``n`` drawn from a standard normal (intensities clipped at 0)."""
    exponent = math.exp(sd * float(torch.randn(1, generator=generator, dtype=torch.float64)))
    return image.clamp(min=0) ** exponent
