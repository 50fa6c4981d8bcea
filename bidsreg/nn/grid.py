"""The network grid: intensity normalisation, the grid the networks run on, centre-of-mass start.

The network sees both images resampled onto one :class:`NetworkGrid`: isotropic voxels
(2 mm by default), axes along RAS+, sides a multiple of 16, covering the fixed image's
foreground. A *world map* is a (4, 4) RAS matrix taking a point of the fixed (grid) world to
the point of the moving world it is compared with; resampling the moving image through
the world map puts it on the grid. The start needs no prior alignment: the world map begins
as the translation between the two centres of mass.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.affines import voxel_sizes

from .layers import grid_frame, identity_grid, sample

__all__ = [
    "Image",
    "PreprocessConfig",
    "NetworkGrid",
    "PreparedImage",
    "prepare_image",
    "normalise_intensity",
    "centre_of_mass",
    "translation",
]


class Image(Protocol):
    """What the networks read of an image (:class:`bidsreg.image.Volume` is one)."""

    @property
    def data(self) -> np.ndarray:
        """(X, Y, Z) intensities."""

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel -> RAS+ mm."""

    @property
    def path(self) -> str:
        """Where it came from, for error messages ("" when made in memory)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are brought to the network.

    Attributes
    ----------
    spacing : float
        Network grid voxel size (mm).
    multiple : int
        Grid sides are rounded up to a multiple of this (the U-Net depth needs 16).
    margin : float
        Margin (mm) added around the fixed foreground's bounding box.
    low_percentile, high_percentile : float
        Foreground intensity percentiles mapped to 0 and 1 (then clipped to [0, 1]).
    foreground : float
        Threshold on normalised intensity that defines the foreground.
    """

    spacing: float = 2.0
    multiple: int = 16
    margin: float = 6.0
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    foreground: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PreparedImage:
    """A normalised image ready for resampling onto network grids.

    Attributes
    ----------
    tensor : torch.Tensor
        (1, 1, X, Y, Z) normalised intensities in [0, 1], smoothed for the grid spacing.
    affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm of the image.
    centre : numpy.ndarray
        (3,) intensity centre of mass, RAS+ mm.
    path : str
        Source file, for error messages.
    """

    tensor: torch.Tensor
    affine: np.ndarray
    centre: np.ndarray
    path: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.tensor.shape[2:])


@dataclass(frozen=True)
class NetworkGrid:
    """An isotropic RAS-aligned grid on which the networks run.

    Attributes
    ----------
    shape : tuple of int
        (X, Y, Z), each a multiple of the configured ``multiple``.
    affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm, diagonal with positive spacing.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> float:
        return float(self.affine[0, 0])

    @classmethod
    def covering(cls, image: PreparedImage, config: PreprocessConfig, min_side: int = 0) -> "NetworkGrid":
        """The grid covering the foreground of ``image`` (the fixed image) plus a margin, with
        sides of at least ``min_side`` voxels (what the global network can read: a small brain
        gets a wider margin)."""
        data = image.tensor[0, 0]
        index = torch.nonzero(data > config.foreground)
        if len(index) == 0:
            raise ValueError(f"{image.path}: no foreground voxels above the background; is the image empty?")
        # The world box of the foreground voxels themselves (each with its half-voxel extent),
        # not of their voxel box: an oblique image's rotated voxel box is larger than the brain.
        matrix = torch.as_tensor(image.affine[:3, :3], dtype=torch.float64, device=index.device)
        world = index.double() @ matrix.T
        half = np.abs(image.affine[:3, :3]) @ np.full(3, 0.5)
        low, high = world.min(0).values.cpu().numpy(), world.max(0).values.cpu().numpy()
        lo = low + image.affine[:3, 3] - half - config.margin
        hi = high + image.affine[:3, 3] + half + config.margin
        step, multiple = config.spacing, config.multiple
        shape = tuple(int(multiple * math.ceil(max((h - l) / step, min_side) / multiple)) for l, h in zip(lo, hi))
        return cls._centred((lo + hi) / 2.0, step, shape)

    @classmethod
    def _centred(cls, centre: np.ndarray, step: float, shape: tuple[int, int, int]) -> "NetworkGrid":
        affine = np.diag([step, step, step, 1.0])
        affine[:3, 3] = centre - step * (np.array(shape) - 1) / 2.0
        return cls(tuple(int(n) for n in shape), affine)

    def with_shape(self, shape: tuple[int, int, int]) -> "NetworkGrid":
        """The grid with the same centre and spacing and another shape (itself for its own shape)."""
        if tuple(shape) == self.shape:
            return self
        centre = self.affine[:3, :3] @ ((np.array(self.shape) - 1) / 2.0) + self.affine[:3, 3]
        return self._centred(centre, self.spacing, shape)

    def resample(self, image: PreparedImage, world_map: np.ndarray | None = None) -> torch.Tensor:
        """Resample ``image`` onto the grid through ``world_map`` (identity if None).

        Returns
        -------
        torch.Tensor
            (1, 1, X, Y, Z) on the image tensor's device, zeros outside the image.
        """
        matrix = np.linalg.inv(image.affine) @ (np.eye(4) if world_map is None else world_map) @ self.affine
        m = torch.as_tensor(matrix, dtype=image.tensor.dtype, device=image.tensor.device)
        grid = identity_grid(self.shape, image.tensor.device, image.tensor.dtype)
        coords = torch.einsum("ij,njxyz->nixyz", m[:3, :3], grid) + m[:3, 3].view(1, 3, 1, 1, 1)
        return sample(image.tensor, coords)

    def theta_to_world(self, theta: np.ndarray) -> np.ndarray:
        """Convert a network affine ``[A | t]`` (see :func:`~bidsreg.nn.layers.affine_coordinates`)
        into the (4, 4) RAS world map it performs on this grid."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (3, 4):
            raise ValueError(f"theta must be (3, 4), got {theta.shape}")
        centre, radius = grid_frame(self.shape)
        c = np.asarray(centre)
        voxel_map = np.eye(4)
        voxel_map[:3, :3] = theta[:, :3]
        voxel_map[:3, 3] = c - theta[:, :3] @ c + radius * theta[:, 3]
        return self.affine @ voxel_map @ np.linalg.inv(self.affine)

    def displacement_to_world(self, displacement: torch.Tensor) -> torch.Tensor:
        """Scale a (N, 3, X, Y, Z) displacement from grid voxels to RAS mm."""
        return displacement * self.spacing


def normalise_intensity(data: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of the non-zero voxels to 0 and 1, clip to [0, 1].

    Every voxel counts, so the result does not depend on the order the voxels are stored in.
    """
    return _windowed(data, *_intensity_window(data, _positive_box(data), low, high))


def _intensity_window(data: np.ndarray, box: tuple[slice, slice, slice] | None, low: float,
                      high: float) -> tuple[float, float]:
    """The intensities :func:`normalise_intensity` maps to 0 and 1: the ``low``/``high``
    percentiles of the positive voxels, found in their ``box`` (:func:`_positive_box`; of all
    voxels where it is None), or the image's range where the two coincide."""
    if box is None:
        values = data.ravel()
    else:
        inside = data[box]
        values = inside[inside > 0]
    lo, hi = np.percentile(values, [low, high])
    if not hi > lo:
        lo, hi = float(data.min()), float(data.max())
    return float(lo), float(hi)


def _windowed(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = (data - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def _positive_box(data: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The box of the positive voxels of a 3D array; None when no voxel is positive.

    ``bidsreg.image.mask_box`` does this for the rest of the package; :mod:`bidsreg.nn`
    imports nothing from it.
    """
    positive = data > 0
    sides = [np.flatnonzero(positive.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(side) == 0 for side in sides):
        return None
    return tuple(slice(int(side[0]), int(side[-1]) + 1) for side in sides)


def _widened(box: tuple[slice, slice, slice], margin: list[int], shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """``box`` widened by ``margin`` voxels per axis, within an array of ``shape``."""
    return tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(box, margin, shape))


def centre_of_mass(tensor: torch.Tensor, affine: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre of a (1, 1, X, Y, Z) image in RAS mm."""
    data = tensor[0, 0].double()
    total = data.sum()
    if not total > 0:
        raise ValueError("cannot compute the centre of mass of an image with no signal")
    idx = [
        (data.sum(dim=tuple(d for d in range(3) if d != axis)) * torch.arange(data.shape[axis], dtype=data.dtype, device=data.device)).sum()
        / total
        for axis in range(3)
    ]
    return affine[:3, :3] @ np.array([float(i) for i in idx]) + affine[:3, 3]


def translation(offset: np.ndarray) -> np.ndarray:
    """(4, 4) world map ``x -> x + offset``."""
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def _kernel_radius(sigma: float) -> int:
    """Half-width (voxels) of the Gaussian kernel of :func:`_gaussian_blur` (0: no blur)."""
    return max(1, int(math.ceil(3 * sigma))) if sigma > 0 else 0


def _gaussian_blur(tensor: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Separable Gaussian of a (1, 1, X, Y, Z) tensor, zero beyond its edges (3-sigma kernels).

    Each axis is a weighted sum of shifted views of the zero-padded tensor: on a CPU a fifth of
    the time of ``conv3d`` with a 1D kernel, which torch runs as a dense 3D convolution.
    """
    out = tensor
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0:
            continue
        radius = _kernel_radius(sigma)
        x = torch.arange(-radius, radius + 1, dtype=torch.float64)
        weights = torch.exp(-0.5 * (x / sigma) ** 2)
        weights = (weights / weights.sum()).tolist()
        padding = [0] * 6
        padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = radius   # F.pad lists the last axis first
        padded = F.pad(out, padding)
        n = out.shape[2 + axis]
        out = padded.narrow(2 + axis, 0, n) * weights[0]
        for shift, weight in enumerate(weights[1:], start=1):
            out.add_(padded.narrow(2 + axis, shift, n), alpha=weight)
    return out


def prepare_image(volume: Image, config: PreprocessConfig) -> PreparedImage:
    """Normalise ``volume`` and low-pass it for resampling at the grid spacing.

    The Gaussian has a FWHM of one grid voxel along axes whose voxels are finer than the
    grid, which avoids aliasing when the image is sampled on the coarser grid. Where every
    voxel that is not positive normalises to 0 (a brain image's background), only the box of
    the positive voxels is kept, with a margin of zeros wider than the kernel: the values of
    the whole image, zero beyond the box as resampling reads it, in a third of the voxels.
    """
    data, affine = np.asarray(volume.data), np.asarray(volume.affine, dtype=float)
    ratio = config.spacing / voxel_sizes(affine)
    sigmas = np.where(ratio > 1, ratio / 2.3548, 0.0)
    positive = _positive_box(data)
    lo, hi = _intensity_window(data, positive, config.low_percentile, config.high_percentile)
    if positive is not None and lo >= 0:
        box = _widened(positive, [_kernel_radius(s) + 1 for s in sigmas], data.shape)
        data = data[box]
        affine = affine.copy()
        affine[:3, 3] = affine[:3, :3] @ [b.start for b in box] + affine[:3, 3]
    data = _windowed(data, lo, hi)
    if not np.any(data > config.foreground):
        raise ValueError(f"{volume.path}: no foreground after intensity normalisation; is the image empty?")
    with torch.no_grad():
        tensor = _gaussian_blur(torch.from_numpy(data)[None, None], sigmas)
    return PreparedImage(tensor, affine, centre_of_mass(tensor, affine), volume.path)
