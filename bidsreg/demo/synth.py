"""Synthetic subjects: the atlas moved by a random affine and a smooth diffeomorphic deformation,
with intensity changes (gamma, bias field, noise) or, SynthMorph-style, random per-region
intensities.

As in TorchIO, randomness and work are split: :func:`sample_subject` draws every parameter
from a seeded :class:`torch.Generator` into a :class:`SubjectParams`, and
:func:`synthesise` is a deterministic function of the atlas and those parameters. A subject
is therefore reproduced exactly from its seed.

Geometry: a subject lives on the atlas grid padded by ``margin`` mm on every side (same voxel
size and axes). Its voxel ``p`` (world ``x``) shows the atlas at world point
``world_map @ (x + displacement(x))``, the displacement being the exponential (scaling and
squaring) of a stationary velocity field summed over a few control-point scales, so that it
never folds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.affines import voxel_sizes

from ..nn.augment import random_affine
from ..nn.layers import VecInt, identity_grid, sample
from .atlas import Atlas

__all__ = ["SynthRanges", "SubjectParams", "sample_subject", "synthesise"]


@dataclass(frozen=True)
class SynthRanges:
    """Ranges of the random changes.

    Attributes
    ----------
    rotation, scaling, translation : float
        Affine bounds: degrees per axis, relative scaling per axis, mm per axis (uniform).
    velocity_sd : float
        Standard deviation (mm) of the velocity control points at each scale.
    spacings : tuple of float
        Control-point spacings (mm) of the velocity scales (coarse to fine).
    bias_sd : float
        Standard deviation of the log bias field's control points (a 4x4x4 grid).
    gamma_sd : float
        Standard deviation of the log of the intensity exponent.
    noise : tuple of float
        Range of the Gaussian noise's standard deviation (image scaled to [0, 1]).
    label_contrast : float
        Probability that a subject gets random per-region intensities (SynthMorph-style)
        instead of the template's T1w contrast.
    margin : float
        Padding (mm) of the subject grid around the atlas grid.
    """

    rotation: float = 10.0
    scaling: float = 0.08
    translation: float = 8.0
    velocity_sd: float = 2.5
    spacings: tuple[float, ...] = (48.0, 24.0)
    bias_sd: float = 0.15
    gamma_sd: float = 0.2
    noise: tuple[float, float] = (0.005, 0.03)
    label_contrast: float = 0.0
    margin: float = 12.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_contrast <= 1.0:
            raise ValueError(f"label_contrast is a probability, got {self.label_contrast}")
        if min(self.spacings, default=1.0) <= 0 or self.margin < 0:
            raise ValueError(f"spacings must be > 0 and margin >= 0, got {self.spacings} and {self.margin}")


@dataclass(frozen=True)
class SubjectParams:
    """Everything :func:`synthesise` applies to the atlas, drawn by :func:`sample_subject`.

    Attributes
    ----------
    world_map : numpy.ndarray
        (4, 4) affine part of the subject world -> atlas world map (RAS+ mm).
    velocity : tuple of numpy.ndarray
        (3, a, b, c) control points (mm, RAS+ axes) of each velocity scale.
    log_bias : numpy.ndarray
        (4, 4, 4) control points of the log multiplicative bias field.
    gamma : float
        Intensity exponent.
    noise_sd : float
        Standard deviation of the Gaussian noise inside the brain.
    noise_seed : int
        Seed of the noise.
    region_intensities : numpy.ndarray or None
        (max label + 1,) intensity of each region (SynthMorph-style), or None for the template's
        own contrast.
    margin : float
        Padding (mm) of the subject grid.
    """

    world_map: np.ndarray
    velocity: tuple[np.ndarray, ...]
    log_bias: np.ndarray
    gamma: float
    noise_sd: float
    noise_seed: int
    region_intensities: np.ndarray | None
    margin: float


def _spacing(atlas: Atlas) -> float:
    """The atlas's (isotropic) voxel side in mm."""
    return float(voxel_sizes(atlas.affine).mean())


def _padded_grid(atlas: Atlas, margin: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the subject grid: the atlas grid padded by ``margin`` mm."""
    pad = int(round(margin / _spacing(atlas)))
    shift = np.eye(4)
    shift[:3, 3] = -pad
    return tuple(int(s) + 2 * pad for s in atlas.t1w.shape), atlas.affine @ shift


def sample_subject(atlas: Atlas, generator: torch.Generator, ranges: SynthRanges = SynthRanges()) -> SubjectParams:
    """Draw one subject's parameters.

    Parameters
    ----------
    atlas : Atlas
        The anatomy (its brain centre and size set the affine's centre and the grids).
    generator : torch.Generator
        Source of all randomness (seed it for a reproducible subject).
    ranges : SynthRanges

    Returns
    -------
    SubjectParams
    """
    centre = (atlas.affine @ np.append(np.argwhere(atlas.labels > 0).mean(axis=0), 1.0))[:3]
    world_map = random_affine(generator, centre, ranges.rotation, ranges.scaling, ranges.translation)
    shape, _ = _padded_grid(atlas, ranges.margin)
    extent = np.asarray(shape) * _spacing(atlas)
    velocity = tuple(
        ranges.velocity_sd * torch.randn((3, *(int(np.ceil(e / spacing)) + 1 for e in extent)), generator=generator,
                                         dtype=torch.float64).numpy()
        for spacing in ranges.spacings
    )
    log_bias = ranges.bias_sd * torch.randn((4, 4, 4), generator=generator, dtype=torch.float64).numpy()
    gamma = float(np.exp(ranges.gamma_sd * float(torch.randn(1, generator=generator, dtype=torch.float64))))
    low, high = ranges.noise
    noise_sd = low + (high - low) * float(torch.rand(1, generator=generator, dtype=torch.float64))
    noise_seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    synth_regions = float(torch.rand(1, generator=generator, dtype=torch.float64)) < ranges.label_contrast
    region_intensities = None
    if synth_regions:
        region_intensities = torch.rand(int(atlas.labels.max()) + 1, generator=generator, dtype=torch.float64).numpy()
        region_intensities = 0.1 + 0.9 * region_intensities
    return SubjectParams(world_map, velocity, log_bias, gamma, noise_sd, noise_seed, region_intensities, ranges.margin)


def _upsample(control: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """(C, a, b, c) control points -> (1, C, X, Y, Z) field, trilinear between them."""
    tensor = torch.from_numpy(np.asarray(control, dtype=np.float32))[None]
    return F.interpolate(tensor, size=shape, mode="trilinear", align_corners=True)


def _displacement_voxels(params: SubjectParams, shape: tuple[int, int, int], affine: np.ndarray) -> torch.Tensor:
    """(1, 3, X, Y, Z) displacement in subject voxels (the exponential of the summed velocity)."""
    velocity_mm = sum(_upsample(control, shape) for control in params.velocity)
    to_voxels = torch.from_numpy(np.linalg.inv(affine[:3, :3]).astype(np.float32))
    velocity = torch.einsum("ij,njxyz->nixyz", to_voxels, velocity_mm)
    with torch.no_grad():
        return VecInt(steps=7)(velocity)


def synthesise(atlas: Atlas, params: SubjectParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make one subject from the atlas and its parameters (deterministic).

    Parameters
    ----------
    atlas : Atlas
    params : SubjectParams

    Returns
    -------
    image : numpy.ndarray
        (X, Y, Z) float32 T1w-like image, 99.5th brain percentile at 1, 0 outside the
        brain (skull-stripped).
    labels : numpy.ndarray
        (X, Y, Z) int16 region map (nearest), the image's ground truth.
    affine : numpy.ndarray
        (4, 4) voxel -> RAS+ world mm of both.
    """
    shape, affine = _padded_grid(atlas, params.margin)
    displacement = _displacement_voxels(params, shape, affine)
    points = identity_grid(shape, dtype=torch.float64) + displacement.double()
    to_atlas = torch.from_numpy(np.linalg.inv(atlas.affine) @ params.world_map @ affine)
    source = torch.einsum("ij,njxyz->nixyz", to_atlas[:3, :3], points) + to_atlas[:3, 3].view(1, 3, 1, 1, 1)
    source = source.float()
    labels = sample(torch.from_numpy(atlas.labels.astype(np.float32))[None, None], source, mode="nearest")
    labels = labels[0, 0].numpy().round().astype(np.int16)
    head = torch.from_numpy(((atlas.t1w > 0) | (atlas.labels > 0)).astype(np.float32))[None, None]
    brain = sample(head, source, mode="nearest")[0, 0].numpy() > 0.5
    if params.region_intensities is None:
        image = sample(torch.from_numpy(atlas.t1w)[None, None], source)[0, 0].numpy()
    else:
        regions = params.region_intensities[labels].astype(np.float32)
        image = F.avg_pool3d(torch.from_numpy(regions)[None, None], 3, stride=1, padding=1)[0, 0].numpy()
    bias = np.exp(_upsample(params.log_bias[None], shape)[0, 0].numpy())
    noise = np.random.default_rng(params.noise_seed).normal(0.0, params.noise_sd, shape).astype(np.float32)
    image = np.clip(image, 0.0, None) ** params.gamma * bias + noise
    image = np.where(brain, np.clip(image, 0.0, None), 0.0).astype(np.float32)
    return image / max(float(np.percentile(image[brain], 99.5)), 1e-6), labels, affine
