"""Loading and checking 3D NIfTI images.

Everything bidsreg reads goes through :func:`load_volume`, so that a bad file fails early
with a one-line :class:`ValueError` that names the file, the problem and the fix.
Arrays keep nibabel's voxel order (i, j, k) and the affine maps voxel indices to RAS+ world
millimetres.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from isal import igzip
from nibabel.affines import voxel_sizes

from .atomic import atomic_output

__all__ = ["Grid", "Volume", "check_affine", "check_brain", "foreground_extent", "load_grid", "load_volume",
           "mask_box", "same_grid", "save_volume"]

#: Largest accepted ratio between the longest and the shortest voxel side.
MAX_ANISOTROPY = 5.0

#: ISA-L's deflate level (0-3) of the ``.nii.gz`` files :func:`save_volume` writes.
GZIP_LEVEL = 1


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: what an image is resampled onto.

    Attributes
    ----------
    shape : tuple of int
        (X, Y, Z).
    affine : numpy.ndarray
        (4, 4) voxel index (i, j, k, 1) -> RAS+ world mm.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    def at_spacing(self, spacing: float) -> "Grid":
        """The grid of the same orientation and centre with cubic voxels of ``spacing`` mm that
        covers this one (its outer voxel faces; itself when its voxels are that size already).

        Raises
        ------
        ValueError
            For a spacing that is not a positive number.
        """
        if not spacing > 0:
            raise ValueError(f"a grid spacing must be positive, got {spacing!r}")
        sizes = voxel_sizes(self.affine)
        if np.allclose(sizes, spacing, rtol=1e-6):
            return self
        directions = self.affine[:3, :3] / sizes
        shape = tuple(int(np.ceil(n * s / spacing - 1e-6)) for n, s in zip(self.shape, sizes))
        centre = self.affine[:3, :3] @ ((np.array(self.shape) - 1) / 2.0) + self.affine[:3, 3]
        affine = np.eye(4)
        affine[:3, :3] = directions * spacing
        affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
        return Grid(shape, affine)

    def cropped(self, start: np.ndarray, stop: np.ndarray) -> "Grid":
        """The voxels ``start <= (i, j, k) < stop`` of this grid, as a grid of their own."""
        start, stop = np.asarray(start, dtype=int), np.asarray(stop, dtype=int)
        if start.shape != (3,) or stop.shape != (3,) or np.any(start < 0) or np.any(stop > self.shape) \
                or np.any(stop <= start):
            raise ValueError(f"the box {start.tolist()}..{stop.tolist()} is not a non-empty part of the grid {self.shape}")
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ start + self.affine[:3, 3]
        return Grid(tuple(int(n) for n in stop - start), affine)


@dataclass(frozen=True)
class Volume:
    """A 3D image in RAS+ world space.

    Attributes
    ----------
    data : numpy.ndarray
        Voxel values, shape (X, Y, Z), float32 for images, integer for label maps.
    affine : numpy.ndarray
        (4, 4) voxel index (i, j, k, 1) -> RAS+ world mm.
    path : str
        Where the volume came from ("" when made in memory); used in error messages.
    """

    data: np.ndarray
    affine: np.ndarray
    path: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape[:3])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel side lengths (mm)."""
        return voxel_sizes(self.affine)

    @property
    def grid(self) -> Grid:
        """Its voxel grid."""
        return Grid(self.shape, self.affine)


def load_grid(path: str | os.PathLike) -> Grid:
    """The voxel grid of a NIfTI image that :func:`load_volume` accepts, from its header alone."""
    image = nb.load(str(path))
    return Grid(tuple(int(n) for n in image.shape[:3]), np.asarray(image.affine, dtype=np.float64))


def load_volume(path: str | os.PathLike, *, labels: bool = False) -> Volume:
    """Read a 3D NIfTI file and check that bidsreg can use it.

    Parameters
    ----------
    path : path-like
        A NIfTI-1/2 file (``.nii`` or ``.nii.gz``). A 4D file whose last axis has length 1
        is accepted as 3D.
    labels : bool
        Read a label map: values must be integers, no intensity checks are made.

    Returns
    -------
    Volume

    Raises
    ------
    ValueError
        When the file is missing, unreadable, not 3D, holds NaN/Inf, is empty or constant
        (images), has non-integer labels, or has a degenerate or very anisotropic affine.
    """
    name = str(path)
    if not Path(name).is_file():
        if Path(name).is_symlink():
            target = os.readlink(name)
            fix = ("its content is not in this clone: 'datalad get' it (git-annex)" if ".git/annex/" in target
                   else "restore the target or fix the link")
            raise ValueError(f"{name}: a link to {target}, which is missing; {fix}")
        raise ValueError(f"{name}: no such file; check the path")
    try:
        img = nb.load(name)
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise ValueError(
            f"{name}: cannot be read as NIfTI ({type(err).__name__}: {' '.join(str(err).split())}); "
            "re-export the image as a valid .nii/.nii.gz"
        ) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(
            f"{name}: expected a 3D image, got shape {data.shape}; "
            "extract a single 3D volume first (e.g. fslroi or nibabel)"
        )
    if min(data.shape) < 2:
        raise ValueError(f"{name}: image of shape {data.shape} is too small to register")
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_affine(name, affine)
    if labels:
        if not np.issubdtype(data.dtype, np.integer):
            if not np.all(np.isfinite(data)) or not np.all(np.equal(np.mod(data, 1), 0)):
                raise ValueError(
                    f"{name}: a label map must hold integer labels; "
                    "pass the segmentation (_dseg), not a probability map"
                )
        return Volume(np.asarray(data).astype(np.int32), affine, name)
    data = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise ValueError(
            f"{name}: contains NaN or Inf voxels; replace them (e.g. with 0) before registering"
        )
    if float(data.max()) == float(data.min()):
        raise ValueError(f"{name}: image is constant (every voxel is {data.flat[0]}); nothing to register")
    return Volume(data, affine, name)


def _check_affine(name: str, affine: np.ndarray) -> None:
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise ValueError(f"{name}: the voxel-to-world affine is degenerate; fix the NIfTI header (qform/sform)")
    sizes = voxel_sizes(affine)
    if sizes.max() / sizes.min() > MAX_ANISOTROPY:
        raise ValueError(
            f"{name}: voxels of {np.round(sizes, 3).tolist()} mm are too anisotropic "
            f"(ratio > {MAX_ANISOTROPY:g}); resample to near-isotropic voxels first"
        )


def check_affine(affine: np.ndarray, name: str) -> np.ndarray:
    """``affine`` as a float64 (4, 4) matrix, checked: finite, last row [0, 0, 0, 1], invertible.

    Raises
    ------
    ValueError
        Naming ``name`` and what is wrong.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"{name}: expected a (4, 4) matrix, got shape {affine.shape}")
    if not np.all(np.isfinite(affine)) or not np.allclose(affine[3], [0, 0, 0, 1]):
        raise ValueError(f"{name}: expected a finite affine with last row [0, 0, 0, 1], got\n{affine}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"{name}: the 3 x 3 part is singular, so the transform cannot be inverted")
    return affine


#: The least extent (mm) of a T1w image's foreground on each voxel axis that can be a brain
#: (an adult brain spans about 140 x 170 x 120 mm, a newborn's more than 60).
MIN_BRAIN_EXTENT_MM = 50.0

#: The foreground of :func:`check_brain`: voxels above this fraction of the 99th percentile.
BRAIN_FRACTION = 0.1


def foreground_extent(volume: Volume, fraction: float = BRAIN_FRACTION) -> np.ndarray:
    """Extent (mm) along each voxel axis of the voxels above ``fraction`` of the 99th
    percentile of the image: the brain of a skull-stripped T1w image, the head of another."""
    data = volume.data
    box = mask_box(data > fraction * float(np.percentile(data, 99)))
    if box is None:
        return np.zeros(3)
    return (box[1] - box[0]) * volume.spacing


def mask_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The voxel box ``[start, stop)`` (per axis) of the True voxels of a 3D mask; None when
    there are none."""
    sides = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(side) == 0 for side in sides):
        return None
    return np.array([side[0] for side in sides]), np.array([side[-1] + 1 for side in sides])


def check_brain(volume: Volume) -> None:
    """Refuse a T1w image whose foreground is too small to be a brain (a failed skull strip,
    a wrong file): a ValueError naming it, before any work starts.

    Raises
    ------
    ValueError
        When the foreground spans less than :data:`MIN_BRAIN_EXTENT_MM` on a voxel axis.
    """
    extent = foreground_extent(volume)
    if extent.min() < MIN_BRAIN_EXTENT_MM:
        sizes = " x ".join(f"{e:.0f}" for e in extent)
        raise ValueError(
            f"{volume.path}: its foreground (voxels above {100 * BRAIN_FRACTION:.0f} % of the 99th percentile) spans "
            f"{sizes} mm, too small for a brain (at least {MIN_BRAIN_EXTENT_MM:.0f} mm on each axis); check its skull "
            "strip or give the T1w image itself"
        )


def same_grid(first: Volume, second: Volume, atol: float = 1e-3) -> bool:
    """Whether two volumes share one voxel grid (shape, and affine within ``atol`` mm)."""
    return first.shape == second.shape and bool(np.allclose(first.affine, second.affine, atol=atol))


def save_volume(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a NIfTI file atomically (a temporary file renamed into place).

    A ``.nii.gz`` is one gzip member written by ISA-L's deflate (:mod:`isal.igzip`, level
    :data:`GZIP_LEVEL`): five times the speed of zlib's fastest level on a brain image, for a
    file 7 % larger; every gzip reader (nibabel, ITK, FSL, AFNI) reads it.

    Parameters
    ----------
    path : path-like
        Destination ``.nii`` or ``.nii.gz``.
    data : numpy.ndarray
        Voxel values, any NIfTI-compatible dtype.
    affine : numpy.ndarray
        (4, 4) voxel -> RAS+ world mm.
    """
    img = nb.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_output(path) as tmp:
        _write_nifti(img, tmp)


def _write_nifti(img: nb.Nifti1Image, path: Path) -> None:
    if path.name.endswith(".gz"):
        path.write_bytes(igzip.compress(img.to_bytes(), GZIP_LEVEL, mtime=0))
    else:
        nb.save(img, path)
