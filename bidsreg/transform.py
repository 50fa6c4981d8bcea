"""One registration transform, both directions, in RAS+ world millimetres.

A :class:`Transform` maps FIXED world points to MOVING world points::

    T(x) = affine @ (x + displacement(x))           # displacement on its own grid, in fixed space
    T^-1(y) = z + inverse_displacement(z),  z = affine^-1 @ y

and the moving image warped onto the fixed grid is ``W(v) = moving(T(world(v)))``. The fields
lie on a grid of fixed space (the network's 2 mm grid for the CNN, the fixed image's for ANTs)
and are zero beyond it, as ITK applies them. Every method of bidsreg returns one; it is
applied to images and points with SimpleITK (as
``antsApplyTransforms`` applies the ``.h5`` files it is written to), and read and written by
:mod:`bidsreg.itk`, the only module that knows the LPS frame of ITK.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np

from . import itk
from .image import Grid, Volume, check_affine, load_grid, mask_box

__all__ = ["FIELD_STEP_MM", "Transform", "output_transform"]

#: Step (mm) to which ``--output-resolution compact`` rounds the displacements it writes: at
#: most 2**-10 mm (0.001 mm, a thousandth of a voxel) off, and exact in float32, whose unused
#: low mantissa bits then deflate to nothing: a 1 mm field in a quarter of the bytes
#: (``benchmarks/compact_transforms.py``).
FIELD_STEP_MM = 2.0 ** -9


@dataclass(frozen=True, eq=False)
class Transform:
    """A registration result: affine and, for a deformable method, a displacement field and its inverse.

    Attributes
    ----------
    affine : numpy.ndarray
        (4, 4) FIXED RAS+ mm -> MOVING RAS+ mm.
    displacement : numpy.ndarray or None
        (X, Y, Z, 3) float32 RAS+ mm on ``field_affine``'s grid, applied before ``affine``.
    inverse_displacement : numpy.ndarray or None
        (X, Y, Z, 3) float32 RAS+ mm on the same grid (see the module docstring).
    field_affine : numpy.ndarray or None
        (4, 4) voxel -> RAS+ mm of the fields' grid (a grid of fixed space); required with a field.
    """

    affine: np.ndarray
    displacement: np.ndarray | None = None
    inverse_displacement: np.ndarray | None = None
    field_affine: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "affine", check_affine(self.affine, "the transform's affine"))
        fields = [f for f in (self.displacement, self.inverse_displacement) if f is not None]
        if fields and self.field_affine is None:
            raise ValueError("a displacement field needs its field_affine (voxel -> RAS+ mm of its grid)")
        for field in fields:
            if np.ndim(field) != 4 or np.shape(field)[3] != 3 or np.shape(field)[:3] != np.shape(fields[0])[:3]:
                raise ValueError(f"displacement fields must be (X, Y, Z, 3) on one grid, got {[np.shape(f) for f in fields]}")

    @property
    def deformable(self) -> bool:
        """Whether it has a displacement field (a Jacobian to measure)."""
        return self.displacement is not None

    @property
    def field_grid(self) -> Grid | None:
        """The grid of the fields (None for an affine transform)."""
        if self.displacement is None:
            return None
        return Grid(tuple(int(n) for n in self.displacement.shape[:3]), self.field_affine)

    def on_grid(self, grid: Grid) -> "Transform":
        """The same transform with its fields carried onto ``grid`` (trilinear; itself when it
        has no field or its fields are on that grid already).

        The vectors are sampled, not transformed (both grids are grids of fixed space); beyond
        the fields' own grid the nearest vector is taken, so a coarse grid that covers the
        fixed image's outer voxel faces keeps the field up to them.
        """
        field_grid = self.field_grid
        if field_grid is None or (field_grid.shape == tuple(grid.shape)
                                  and np.allclose(field_grid.affine, grid.affine, atol=1e-6)):
            return self
        fields = [None if f is None else itk.resample_field(f, self.field_affine, grid.shape, grid.affine)
                  for f in (self.displacement, self.inverse_displacement)]
        return Transform(self.affine, *fields, grid.affine)

    def rounded(self, step: float) -> "Transform":
        """The same transform with its displacements rounded to multiples of ``step`` mm (at
        most ``step / 2`` off; a power of two keeps the multiples exact in float32)."""
        if not step > 0:
            raise ValueError(f"the rounding step must be positive (mm), got {step!r}")
        if not self.deformable:
            return self
        scale = np.float32(step)
        fields = [None if f is None else np.round(np.asarray(f, dtype=np.float32) / scale) * scale
                  for f in (self.displacement, self.inverse_displacement)]
        return Transform(self.affine, *fields, self.field_affine)

    def apply(self, moving: Volume, reference: Grid, *, nearest: bool = False, fill: float = 0) -> np.ndarray:
        """Warp a moving image (or label map, ``nearest``) onto the fixed grid ``reference``.

        Returns the (X, Y, Z) warped array: float32, or for ``nearest`` the label map's dtype
        with values that are input values or ``fill``.
        """
        return self._warp(moving, reference, nearest, fill, inverse=False)

    def apply_inverse(self, fixed: Volume, reference: Grid, *, nearest: bool = False, fill: float = 0) -> np.ndarray:
        """Warp a fixed-space image (e.g. atlas labels) onto the moving grid ``reference``, ``fixed(T^-1(y))``."""
        if self.deformable and self.inverse_displacement is None:
            raise ValueError("this transform has no inverse displacement field to warp fixed-space images with")
        return self._warp(fixed, reference, nearest, fill, inverse=True)

    def map_points(self, points_ras: np.ndarray) -> np.ndarray:
        """(N, 3) FIXED RAS+ mm points -> (N, 3) MOVING RAS+ mm, ``T(x)`` (the field is zero off its grid)."""
        return itk.transform_points(self._sitk(inverse=False), points_ras)

    def map_points_inverse(self, points_ras: np.ndarray) -> np.ndarray:
        """(N, 3) MOVING RAS+ mm points -> (N, 3) FIXED RAS+ mm, ``T^-1(y)``."""
        return itk.transform_points(self._sitk(inverse=True), points_ras)

    def write(self, forward: str | os.PathLike, inverse: str | os.PathLike | None = None) -> None:
        """Write the ITK composite ``.h5`` of each direction (see :func:`bidsreg.itk.write_composite`).

        Raises
        ------
        ValueError
            For ``inverse`` of a deformable transform that has no inverse field.
        """
        if inverse is not None and self.deformable and self.inverse_displacement is None:
            raise ValueError(f"{inverse}: this transform has no inverse displacement field to write")
        itk.write_composite(forward, self.affine, self.displacement, self.field_affine)
        if inverse is not None:
            itk.write_composite(inverse, self.affine, self.inverse_displacement, self.field_affine, inverse=True)

    @classmethod
    def read(cls, forward: str | os.PathLike, inverse: str | os.PathLike | None = None) -> "Transform":
        """Read what :meth:`write` wrote (or any ``.h5`` chain :func:`bidsreg.itk.read_composite` reads).

        Raises
        ------
        ValueError
            When a file is unreadable, or the two files are not one transform's two directions.
        """
        affine, displacement, field_affine = itk.read_composite(forward)
        inverse_displacement = None
        if inverse is not None:
            inverse_affine, inverse_displacement, inverse_grid = itk.read_composite(inverse, inverse=True)
            same_grid = (inverse_grid is None) == (field_affine is None) and (
                field_affine is None or np.allclose(inverse_grid, field_affine, atol=1e-4))
            if not np.allclose(inverse_affine, affine, atol=1e-6) or not same_grid:
                raise ValueError(f"{inverse}: not the inverse of {forward} (another affine or field grid)")
        return cls(affine, displacement, inverse_displacement, field_affine)

    def _warp(self, image: Volume, reference: Grid, nearest: bool, fill: float, inverse: bool) -> np.ndarray:
        """Resample through one direction, over the box of ``reference`` outside which the result
        is zero (:meth:`_nonzero_box`; the whole grid for a non-zero ``fill``), zeros elsewhere."""
        transform = self._sitk(inverse)
        box = self._nonzero_box(image, reference, inverse) if fill == 0 else None
        if box is None:
            return _resample(image, reference, transform, nearest, fill)
        start, stop = box
        inside = _resample(image, reference.cropped(start, stop), transform, nearest, fill)
        warped = np.zeros(reference.shape, dtype=inside.dtype, order="F")  # NIfTI's order: written as it is
        warped[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]] = inside
        return warped

    def _nonzero_box(self, image: Volume, reference: Grid, inverse: bool) -> tuple[np.ndarray, np.ndarray] | None:
        """The voxel box ``[start, stop)`` of ``reference`` outside which ``image`` warped through
        one direction is exactly zero; None when it is the whole grid or empty.

        In the frame ``z`` where the field acts (fixed space: ``z = x`` forward, ``z = A^-1 y``
        backward) the image samples ``z + u(z)`` against the support ``B`` of its non-zero voxels
        (moved to that frame, one voxel wider for the interpolation). A non-zero output needs
        ``z + u(z)`` in ``B``, so ``z`` lies within ``max |u|`` of ``B`` along each axis, and
        ``z`` in ``B`` itself where ``u`` is zero, off the field's grid (one field voxel wider
        than where ITK interpolates it). The box is a superset of the intersection of the two.
        """
        data = np.asarray(image.data)
        if data.ndim != 3:
            return None   # _resample says why
        box = mask_box(data != 0)
        if box is None:
            return None
        support = _world_box(image.affine, box[0] - 1, box[1])
        if not inverse:
            support = _world_box(np.linalg.inv(self.affine), *support)
        field = self.inverse_displacement if inverse else self.displacement
        low, high = support
        if field is not None:
            reach = np.abs(field).max(axis=(0, 1, 2))
            field_low, field_high = _world_box(self.field_affine, np.full(3, -1), np.array(field.shape[:3]))
            low = np.maximum(low - reach, np.minimum(field_low, low))
            high = np.minimum(high + reach, np.maximum(field_high, high))
        if inverse:
            low, high = _world_box(self.affine, low, high)
        index_low, index_high = _world_box(np.linalg.inv(reference.affine), low, high)
        start = np.clip(np.floor(index_low).astype(int) - 1, 0, reference.shape)
        stop = np.clip(np.ceil(index_high).astype(int) + 2, 0, reference.shape)
        if np.any(stop <= start) or np.array_equal(stop - start, reference.shape):
            return None
        return start, stop

    def _sitk(self, inverse: bool):
        field = self.inverse_displacement if inverse else self.displacement
        return itk.sitk_transform(self.affine, field, self.field_affine, inverse=inverse)


def output_transform(transform: Transform, fixed: str | os.PathLike, spacing: float | None,
                     resolution: str = "compact") -> Transform:
    """A method's transform on the grid, and at the precision, it is written at.

    Parameters
    ----------
    transform : Transform
        As the method computed it.
    fixed : path-like
        The fixed image (its grid).
    spacing : float or None
        The method's compact spacing (:attr:`bidsreg.methods.table.Method.field_spacing`): the
        fields go onto the grid of cubic voxels of this size covering the fixed image; None
        keeps the grid the method computed them on.
    resolution : str
        ``compact`` as above, the displacements rounded to :data:`FIELD_STEP_MM`; or ``full``:
        the fixed image's grid whatever the method's, the displacements as computed.
    """
    if resolution not in ("compact", "full"):
        raise ValueError(f"resolution must be compact or full, got {resolution!r}")
    if not transform.deformable:
        return transform
    if resolution == "full":
        return transform.on_grid(load_grid(fixed))
    if spacing is not None:
        transform = transform.on_grid(load_grid(fixed).at_spacing(spacing))
    return transform.rounded(FIELD_STEP_MM)


def _world_box(affine: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned box, after ``affine``, of the box ``[low, high]`` (its eight corners)."""
    corners = np.array(list(itertools.product(*zip(low, high))), dtype=float)
    points = corners @ affine[:3, :3].T + affine[:3, 3]
    return points.min(axis=0), points.max(axis=0)


def _resample(image: Volume, reference: Grid, transform, nearest: bool, fill: float) -> np.ndarray:
    data = np.asarray(image.data)
    if data.ndim != 3 or min(data.shape) < 2:
        raise ValueError(f"{image.path or 'image'}: expected a 3D image of at least 2 voxels per axis, got shape {data.shape}")
    if nearest and np.asarray(fill).astype(data.dtype) != fill:
        raise ValueError(f"fill={fill!r} cannot be stored in the image's dtype {data.dtype}")
    return itk.resample(data, image.affine, reference.shape, reference.affine, transform, nearest=nearest, fill=fill)
