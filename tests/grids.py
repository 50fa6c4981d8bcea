"""Small grids and smooth fields shared by the tests of transforms and fields."""
from __future__ import annotations

import numpy as np

SHAPE = (20, 24, 18)


def grid_affine(spacing=(2.0, 1.5, 2.5), signs=(1, 1, 1), degrees=0.0) -> np.ndarray:
    """Voxel -> RAS+ affine, optionally tilted about S, centred near the origin."""
    angle = np.deg2rad(degrees)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(np.multiply(signs, spacing))
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2)
    return affine


def world_grid(shape, affine) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def smooth_field(shape, affine, amplitude=5.0) -> np.ndarray:
    """(X, Y, Z, 3) RAS+ mm, sums of sines of about ``amplitude`` mm, |grad| < 0.5."""
    world = world_grid(shape, affine)
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    return amplitude * np.stack(
        [np.sin(y / 12 + 0.5), np.cos(z / 14 + x / 30), np.sin(x / 13 - 1.0)], axis=-1
    ).astype(np.float32)


def random_image(seed=0, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)
