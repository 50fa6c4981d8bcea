"""ITK / ANTs transform files, and the only place where RAS+ meets LPS.

bidsreg works in RAS+ world millimetres (nibabel's convention); ITK, ANTs and SimpleITK work
in LPS. The two frames differ by ``F = diag(-1, -1, 1)``, so a point map ``A`` (world ->
world, 4 x 4) becomes ``F @ A @ F``, a displacement vector has its first two components
negated, and a voxel -> world matrix ``V`` becomes ``F @ V`` (voxel indices are not flipped).

A registration result maps a FIXED world point to a MOVING world point::

    T(x) = affine @ (x + displacement(x))          # displacement on the fixed grid
    T^-1(y) = z + inverse_displacement(z),  z = affine^-1 @ y

Files written here (all through :func:`bidsreg.atomic.atomic_output`):

* affine: ``.mat`` (MATLAB v4, ``AffineTransform_double_3_3`` and the ``fixed`` centre, as
  antsRegistration writes) or ``.txt`` (ITK text transform);
* displacement field: NIfTI of shape (X, Y, Z, 1, 3), intent vector (1007), float32 LPS
  components, header affine = the fixed grid;
* composite: ``.h5`` ITK ``CompositeTransform`` of an ``AffineTransform`` and a
  ``DisplacementFieldTransform``, which ``antsApplyTransforms -t file.h5`` reads as is.

Images and transforms also go to SimpleITK here (:func:`sitk_image`, :func:`sitk_transform`), so
that :func:`resample` and :func:`transform_points` apply a transform exactly as
``antsApplyTransforms`` does.

ITK applies the transform added LAST to a composite FIRST to a point: a composite ``[A, B]``
maps ``x`` to ``A(B(x))``. Hence ``T`` is written as ``[affine, displacement]`` (the chain
``antsApplyTransforms -t warp.nii.gz -t affine.mat`` builds) and ``T^-1`` as
``[inverse displacement, affine^-1]`` (``-t [affine.mat,1] -t inverse_warp.nii.gz``); on the
ANTs command line the first transform listed is the first applied to a point.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import nibabel as nb
import numpy as np
import SimpleITK as sitk
from isal import isal_zlib

from .atomic import atomic_output
from .image import check_affine

__all__ = [
    "resample",
    "resample_field",
    "sitk_image",
    "sitk_transform",
    "transform_points",
    "ras_to_lps_affine",
    "lps_to_ras_affine",
    "ras_to_lps_vectors",
    "lps_to_ras_vectors",
    "write_affine",
    "read_affine",
    "write_displacement",
    "read_displacement",
    "write_composite",
    "read_composite",
]

#: RAS <-> LPS flip of world coordinates (its own inverse).
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
_VECTOR_SIGN = np.array([-1.0, -1.0, 1.0])
_AFFINE_SUFFIXES = (".mat", ".txt")
#: How a displacement field's parameters are stored in an ``.h5`` transform (h5py's dataset
#: options): byte-shuffled float32, deflate level 1 (most of the gain of level 9, at a fraction
#: of its time).
FIELD_COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
#: Values per HDF5 chunk of a stored field (1 MB of float32).
FIELD_CHUNK = 2**18
#: NIfTI intent code of a vector field (NIFTI_INTENT_VECTOR).
_INTENT_VECTOR = 1007


def ras_to_lps_affine(affine: np.ndarray) -> np.ndarray:
    """Express a RAS+ world -> world point map in LPS.

    Parameters
    ----------
    affine : numpy.ndarray
        (4, 4) map of RAS+ mm points to RAS+ mm points.

    Returns
    -------
    numpy.ndarray
        (4, 4) float64 map of LPS mm points to LPS mm points, ``F @ affine @ F``.

    Examples
    --------
    >>> shift = np.eye(4); shift[:3, 3] = [1.0, 2.0, 3.0]   # 1 mm to the Right, ...
    >>> ras_to_lps_affine(shift)[:3, 3]                      # ... is -1 mm along L
    array([-1., -2.,  3.])
    """
    return _FLIP @ check_affine(affine, "affine") @ _FLIP


def lps_to_ras_affine(affine: np.ndarray) -> np.ndarray:
    """Express an LPS world -> world point map in RAS+ (the inverse of :func:`ras_to_lps_affine`).

    Parameters
    ----------
    affine : numpy.ndarray
        (4, 4) map of LPS mm points to LPS mm points.

    Returns
    -------
    numpy.ndarray
        (4, 4) float64 map of RAS+ mm points to RAS+ mm points.
    """
    return _FLIP @ check_affine(affine, "affine") @ _FLIP


def ras_to_lps_vectors(vectors: np.ndarray) -> np.ndarray:
    """Flip displacement vectors between RAS+ and LPS (the map is its own inverse).

    Parameters
    ----------
    vectors : numpy.ndarray
        (..., 3) vectors in mm, components (x, y, z) of one frame.

    Returns
    -------
    numpy.ndarray
        A new array of the same shape and dtype with the first two components negated.

    Examples
    --------
    >>> ras_to_lps_vectors(np.array([1.0, 2.0, 3.0]))
    array([-1., -2.,  3.])
    """
    vectors = np.asarray(vectors)
    if vectors.shape[-1:] != (3,):
        raise ValueError(f"expected vectors of shape (..., 3), got {vectors.shape}")
    return vectors * _VECTOR_SIGN.astype(np.result_type(vectors.dtype, np.float32))


lps_to_ras_vectors = ras_to_lps_vectors


def write_affine(path: str | os.PathLike, affine_ras: np.ndarray) -> None:
    """Write a RAS+ point map as an ITK affine transform file.

    Parameters
    ----------
    path : path-like
        ``.mat`` (MATLAB v4 ``AffineTransform_double_3_3`` + ``fixed`` centre, what
        antsRegistration writes) or ``.txt`` (ITK text transform).
    affine_ras : numpy.ndarray
        (4, 4) map from FIXED RAS+ mm to MOVING RAS+ mm (ITK's resampling convention).

    Raises
    ------
    ValueError
        For another suffix, or a matrix that is not an invertible 4 x 4 affine.
    """
    _check_suffix(path, _AFFINE_SUFFIXES, "an ITK affine")
    transform = _sitk_affine(affine_ras)
    with atomic_output(path) as tmp:
        sitk.WriteTransform(transform, str(tmp))


def read_affine(path: str | os.PathLike) -> np.ndarray:
    """Read an ITK linear transform file as a RAS+ point map.

    Accepts what :func:`write_affine`, antsRegistration (``*GenericAffine.mat``, float or
    double) and SimpleITK write: any linear ITK transform (affine, rigid, similarity,
    translation, with or without a centre), alone or as the single entry of a composite.

    Parameters
    ----------
    path : path-like
        ``.mat`` or ``.txt`` (also ``.tfm``/``.h5`` holding one linear transform).

    Returns
    -------
    numpy.ndarray
        (4, 4) float64 map from FIXED RAS+ mm to MOVING RAS+ mm.

    Raises
    ------
    ValueError
        When the file is missing, unreadable or not one linear transform.
    """
    transforms = _read_transforms(path)
    if len(transforms) != 1 or not transforms[0].IsLinear():
        raise ValueError(
            f"{path}: expected one linear (affine) transform, found "
            f"{[t.GetName() for t in transforms]}; use read_composite for chains"
        )
    return lps_to_ras_affine(_linear_matrix(transforms[0]))


def write_displacement(
    path: str | os.PathLike, displacement_ras: np.ndarray, reference_affine: np.ndarray
) -> None:
    """Write a displacement field as an ITK/ANTs NIfTI warp.

    Parameters
    ----------
    path : path-like
        ``.nii`` or ``.nii.gz``.
    displacement_ras : numpy.ndarray
        (X, Y, Z, 3) displacement in RAS+ mm on the grid ``reference_affine``.
    reference_affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm of that grid (the fixed image's grid for a forward field).

    Notes
    -----
    The file holds float32 LPS components in shape (X, Y, Z, 1, 3) with intent vector
    (1007), the layout antsRegistration writes and antsApplyTransforms reads.
    """
    _check_suffix(path, (".nii", ".nii.gz"), "a NIfTI displacement field")
    _check_field(displacement_ras, "displacement_ras")
    reference_affine = check_affine(reference_affine, "reference_affine")
    data = np.empty(displacement_ras.shape[:3] + (1, 3), dtype=np.float32)
    data[..., 0, :] = displacement_ras
    data[..., 0, :2] *= -1.0
    img = nb.Nifti1Image(data, reference_affine)
    img.set_qform(reference_affine, code=1)
    img.set_sform(reference_affine, code=1)
    img.header.set_intent(_INTENT_VECTOR)
    with atomic_output(path) as tmp:
        nb.save(img, tmp)


def read_displacement(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an ITK/ANTs NIfTI displacement field.

    Parameters
    ----------
    path : path-like
        NIfTI of shape (X, Y, Z, 1, 3) with LPS components in mm (what
        :func:`write_displacement` and antsRegistration write).

    Returns
    -------
    displacement_ras : numpy.ndarray
        (X, Y, Z, 3) float32 displacement in RAS+ mm.
    reference_affine : numpy.ndarray
        (4, 4) float64 voxel -> RAS+ mm of the field's grid.

    Raises
    ------
    ValueError
        When the file is missing, unreadable or not a 3D vector field.
    """
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file; check the path")
    try:
        img = nb.load(str(path))
    except Exception as err:  # nibabel raises many types for corrupt files
        raise ValueError(f"{path}: cannot be read as NIfTI ({type(err).__name__}: {err})") from None
    if len(img.shape) != 5 or img.shape[3] != 1 or img.shape[4] != 3:
        raise ValueError(
            f"{path}: an ITK displacement field has shape (X, Y, Z, 1, 3), got {img.shape}"
        )
    displacement = np.asarray(img.dataobj, dtype=np.float32)[..., 0, :]
    displacement[..., :2] *= -1.0
    return displacement, np.asarray(img.affine, dtype=np.float64)


def sitk_image(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """An (X, Y, Z) array on a RAS+ grid as a SimpleITK image of the same geometry.

    Parameters
    ----------
    data : numpy.ndarray
        (X, Y, Z) voxel values in nibabel's order (SimpleITK's arrays are (Z, Y, X)).
    affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    _set_geometry(image, affine)
    return image


def sitk_transform(
    affine_ras: np.ndarray,
    displacement_ras: np.ndarray | None = None,
    reference_affine: np.ndarray | None = None,
    *,
    inverse: bool = False,
) -> sitk.CompositeTransform:
    """A registration result as a SimpleITK composite (the transform :func:`write_composite` writes).

    Parameters and the two directions as in :func:`write_composite`.
    """
    affine_ras = check_affine(affine_ras, "affine_ras")
    if displacement_ras is not None and reference_affine is None:
        raise ValueError("a displacement needs its reference_affine (the fixed grid)")
    linear = _sitk_affine(np.linalg.inv(affine_ras) if inverse else affine_ras)
    composite = sitk.CompositeTransform(3)
    if not inverse:
        composite.AddTransform(linear)
    if displacement_ras is not None:
        # Added as a temporary: the composite takes it over, no second copy of the field.
        composite.AddTransform(_sitk_displacement(displacement_ras, reference_affine))
    if inverse:
        composite.AddTransform(linear)
    return composite


def resample(
    data: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    reference_affine: np.ndarray,
    transform: sitk.Transform,
    *,
    nearest: bool = False,
    fill: float = 0,
) -> np.ndarray:
    """Resample an image onto a grid through a SimpleITK transform (output grid -> image points).

    Parameters
    ----------
    data : numpy.ndarray
        (X, Y, Z) image (float) or label map (integer).
    affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm of ``data``.
    shape : tuple of int
        (X, Y, Z) of the output grid.
    reference_affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm of the output grid.
    transform : SimpleITK.Transform
        Maps output (fixed) points to ``data``'s points, in LPS (:func:`sitk_transform`).
    nearest : bool
        Nearest neighbour, keeping the dtype (label maps); else trilinear, float32.
    fill : float
        Value of output voxels mapped outside ``data``.

    Returns
    -------
    numpy.ndarray
        (X, Y, Z) on the output grid.

    Notes
    -----
    ITK's rules, as ``antsApplyTransforms``: a point is inside when its continuous index lies in
    ``[-0.5, n - 0.5)`` on every axis, where the border voxels extend; a displacement field is
    zero outside its grid.
    """
    image = sitk_image(np.asarray(data) if nearest else np.asarray(data, dtype=np.float32), affine)
    resampler = _resampler(image, shape, reference_affine, sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    resampler.SetTransform(transform)
    resampler.SetDefaultPixelValue(float(fill))
    return np.transpose(sitk.GetArrayFromImage(resampler.Execute(image)), (2, 1, 0))


def resample_field(
    displacement_ras: np.ndarray, reference_affine: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """A displacement field carried onto another grid with SimpleITK.

    Parameters
    ----------
    displacement_ras : numpy.ndarray
        (X, Y, Z, 3) RAS+ mm.
    reference_affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm of its grid.
    shape : tuple of int
        Shape of the output grid.
    affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm of the output grid.

    Returns
    -------
    numpy.ndarray
        (*shape, 3) float32 RAS+ mm: trilinear inside the field's grid (ITK's ``[-0.5, n - 0.5)``,
        border voxels extended), the nearest voxel's vector beyond it. The vectors are sampled,
        not transformed: both grids share the world frame.
    """
    image = _field_image(displacement_ras, reference_affine, np.float32)
    resampler = _resampler(image, shape, affine, sitk.sitkLinear)
    resampler.SetUseNearestNeighborExtrapolator(True)
    field, _ = _field_array(resampler.Execute(image))
    return field


def transform_points(transform: sitk.Transform, points_ras: np.ndarray) -> np.ndarray:
    """(N, 3) RAS+ mm points through a SimpleITK transform (LPS); (N, 3) float64 RAS+ mm."""
    points = np.asarray(points_ras, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"expected points of shape (N, 3), got {points.shape}")
    mapped = [transform.TransformPoint(tuple(point * _VECTOR_SIGN)) for point in points]
    return np.array(mapped, dtype=np.float64).reshape(-1, 3) * _VECTOR_SIGN


def write_composite(
    path: str | os.PathLike,
    affine_ras: np.ndarray,
    displacement_ras: np.ndarray | None = None,
    reference_affine: np.ndarray | None = None,
    *,
    inverse: bool = False,
) -> None:
    """Write a registration result as an ITK composite transform (``.h5``).

    Parameters
    ----------
    path : path-like
        ``.h5`` destination.
    affine_ras : numpy.ndarray
        (4, 4) the registration's FORWARD affine, FIXED RAS+ mm -> MOVING RAS+ mm, in both
        directions (with ``inverse=True`` it is inverted here).
    displacement_ras : numpy.ndarray, optional
        (X, Y, Z, 3) RAS+ mm on the fixed grid: the forward ``displacement``, or with
        ``inverse=True`` the ``inverse_displacement``.
    reference_affine : numpy.ndarray, optional
        (4, 4) voxel -> RAS+ mm of the fixed grid; required with ``displacement_ras``.
    inverse : bool
        False: the file maps fixed -> moving points, ``T(x) = affine @ (x + d(x))``, so that
        ``antsApplyTransforms -r fixed -i moving -t file.h5`` warps moving onto fixed.
        True: the file maps moving -> fixed points, ``T^-1(y) = z + w(z)``,
        ``z = affine^-1 @ y``, to warp fixed-space images (atlas labels) onto moving.

    Notes
    -----
    ITK applies the last transform of a composite first, so the forward file holds
    ``[affine, displacement]`` and the inverse file ``[inverse displacement, affine^-1]``.
    The field is stored as float32 with HDF5's deflate filter (:data:`FIELD_COMPRESSION`):
    ITK's HDF5 reader converts it to the double-precision ``DisplacementFieldTransform`` the
    file names, so SimpleITK, antspyx and ``antsApplyTransforms`` read it as they read their
    own files. Its size is set by the field's grid: a field on a 2 mm grid covering a brain
    takes about 10 MB, one on a 1 mm 256 x 256 x 160 grid over 100 MB.
    """
    _check_suffix(path, (".h5",), "an ITK composite transform")
    composite = sitk_transform(affine_ras, displacement_ras, reference_affine, inverse=inverse)
    with atomic_output(path) as tmp:
        if displacement_ras is None:
            sitk.WriteTransform(composite, str(tmp))
            return
        written = tmp.with_name(tmp.name + ".double.h5")
        try:
            sitk.WriteTransform(composite, str(written))
            del composite
            _compress_fields(written, tmp)
        finally:
            written.unlink(missing_ok=True)


def read_composite(
    path: str | os.PathLike, *, inverse: bool = False
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Read an ITK composite transform back into bidsreg's RAS+ parts.

    Parameters
    ----------
    path : path-like
        ``.h5`` written by :func:`write_composite` (or by antsRegistration: any chain of
        linear transforms with at most one displacement field, on the side ``inverse`` says).
    inverse : bool
        Whether the file is an inverse transform (moving -> fixed points), as written by
        ``write_composite(..., inverse=True)``: linear transforms after the field.

    Returns
    -------
    affine_ras : numpy.ndarray
        (4, 4) the FORWARD affine, fixed RAS+ mm -> moving RAS+ mm (inverted back when
        ``inverse`` is True).
    displacement_ras : numpy.ndarray or None
        (X, Y, Z, 3) float32 RAS+ mm on the fixed grid (the inverse displacement when
        ``inverse`` is True), None without a field.
    reference_affine : numpy.ndarray or None
        (4, 4) voxel -> RAS+ mm of the field's grid, None without a field.

    Raises
    ------
    ValueError
        When the file is unreadable, or the chain is not affine(s) then a field
        (``inverse=False``), or a field then affine(s) (``inverse=True``).
    """
    transforms = _read_transforms(path)
    fields = [i for i, t in enumerate(transforms) if not t.IsLinear()]
    expected = [] if not fields else [0 if inverse else len(transforms) - 1]
    if fields != expected:
        side = "first" if inverse else "last"
        raise ValueError(
            f"{path}: expected linear transforms and at most one displacement field {side} "
            f"(inverse={inverse}), found {[t.GetName() for t in transforms]}"
        )
    affine_lps = np.eye(4)
    for transform in transforms:
        if transform.IsLinear():
            affine_lps = affine_lps @ _linear_matrix(transform)
    affine_ras = lps_to_ras_affine(affine_lps)
    if inverse:
        affine_ras = np.linalg.inv(affine_ras)
    if not fields:
        return affine_ras, None, None
    displacement, reference_affine = _numpy_displacement(transforms[fields[0]])
    return affine_ras, displacement, reference_affine


def _compress_fields(source: Path, target: Path) -> None:
    """Copy the ITK ``.h5`` transform file ``source`` to ``target`` with every displacement
    field's parameters stored as compressed float32 (the rest as it is)."""
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for key in src:
            if key != "TransformGroup":
                src.copy(src[key], dst, name=key)
                continue
            groups = dst.create_group(key)
            for number, group in src[key].items():
                out = groups.create_group(number)
                field = group["TransformType"][0].decode().startswith("DisplacementFieldTransform")
                for name, dataset in group.items():
                    if field and name == "TransformParameters":
                        _write_field(out, name, dataset[()])
                    else:
                        group.copy(dataset, out, name=name)


def _write_field(group: h5py.Group, name: str, values: np.ndarray) -> None:
    """Store the 1D ``values`` as float32 in HDF5 chunks of :data:`FIELD_CHUNK` with the byte
    shuffle and deflate filters of :data:`FIELD_COMPRESSION`, each chunk shuffled here and
    deflated by ISA-L (three times the speed of HDF5's zlib; the same stream for every reader)."""
    values = np.ravel(values)
    chunk = max(1, min(FIELD_CHUNK, len(values)))
    dataset = group.create_dataset(name, shape=values.shape, dtype=np.float32, chunks=(chunk,), **FIELD_COMPRESSION)
    padded = np.zeros(-(-len(values) // chunk) * chunk, dtype=np.float32)  # HDF5 stores whole chunks
    padded[:len(values)] = values  # cast to float32 here
    for start in range(0, len(values), chunk):
        shuffled = padded[start:start + chunk].view(np.uint8).reshape(chunk, 4).T.tobytes()
        dataset.id.write_direct_chunk((start,), isal_zlib.compress(shuffled, FIELD_COMPRESSION["compression_opts"]))


def _check_field(displacement: np.ndarray, name: str) -> None:
    shape = np.shape(displacement)
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"{name}: expected a displacement of shape (X, Y, Z, 3), got {shape}")


def _check_suffix(path: str | os.PathLike, suffixes: tuple[str, ...], what: str) -> None:
    if not str(path).endswith(suffixes):
        raise ValueError(f"{path}: {what} must be named {' or '.join(suffixes)}")


def _read_transforms(path: str | os.PathLike) -> list[sitk.Transform]:
    """The transforms of a file in ITK's stored order, downcast, composites flattened."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file; check the path")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1]
        raise ValueError(f"{path}: not an ITK transform file ({reason})") from None
    transform = transform.Downcast()
    if isinstance(transform, sitk.CompositeTransform):
        return [
            transform.GetNthTransform(i).Downcast()
            for i in range(transform.GetNumberOfTransforms())
        ]
    return [transform]


def _linear_matrix(transform: sitk.Transform) -> np.ndarray:
    """(4, 4) LPS point map of a linear SimpleITK transform, whatever its parametrisation."""
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    for axis in range(3):
        unit = np.zeros(3)
        unit[axis] = 1.0
        matrix[:3, axis] = np.array(transform.TransformPoint(tuple(unit))) - origin
    matrix[:3, 3] = origin
    return matrix


def _sitk_affine(affine_ras: np.ndarray) -> sitk.AffineTransform:
    affine_lps = ras_to_lps_affine(affine_ras)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(affine_lps[:3, :3].ravel().tolist())
    transform.SetTranslation(affine_lps[:3, 3].tolist())
    return transform


def _sitk_displacement(
    displacement_ras: np.ndarray, reference_affine: np.ndarray
) -> sitk.DisplacementFieldTransform:
    """A SimpleITK displacement field transform (LPS) from a RAS+ field on an (oblique) grid."""
    return sitk.DisplacementFieldTransform(_field_image(displacement_ras, reference_affine, np.float64))


def _field_image(displacement_ras: np.ndarray, reference_affine: np.ndarray, dtype: type) -> sitk.Image:
    """A RAS+ field on an (oblique) grid as a SimpleITK vector image of LPS components."""
    _check_field(displacement_ras, "displacement_ras")
    reference_affine = check_affine(reference_affine, "reference_affine")
    # SimpleITK arrays are (Z, Y, X, 3); fill the buffer in one pass, flipping L/P.
    buffer = np.empty(displacement_ras.shape[2::-1] + (3,), dtype=dtype)
    np.multiply(np.transpose(displacement_ras, (2, 1, 0, 3)), _VECTOR_SIGN, out=buffer, casting="same_kind")
    image = sitk.GetImageFromArray(buffer, isVector=True)
    del buffer
    _set_geometry(image, reference_affine)
    return image


def _resampler(image: sitk.Image, shape: tuple[int, int, int], affine_ras: np.ndarray,
               interpolator: int) -> sitk.ResampleImageFilter:
    """A resampler of ``image`` onto the grid ``shape``, ``affine_ras`` keeping its pixel type."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in shape])
    spacing, direction, origin = _lps_geometry(check_affine(affine_ras, "affine"))
    resampler.SetOutputSpacing(spacing)
    resampler.SetOutputDirection(direction)
    resampler.SetOutputOrigin(origin)
    resampler.SetInterpolator(interpolator)
    resampler.SetOutputPixelType(image.GetPixelID())
    return resampler


def _lps_geometry(affine_ras: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """ITK's spacing, direction (row-major) and origin of a voxel -> RAS+ mm grid."""
    grid_lps = _FLIP @ affine_ras
    spacing = np.sqrt((grid_lps[:3, :3] ** 2).sum(axis=0))
    return spacing.tolist(), (grid_lps[:3, :3] / spacing).ravel().tolist(), grid_lps[:3, 3].tolist()


def _set_geometry(image: sitk.Image, affine_ras: np.ndarray) -> None:
    spacing, direction, origin = _lps_geometry(check_affine(affine_ras, "affine"))
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)


def _numpy_displacement(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z, 3) float32 RAS+ field and its (4, 4) voxel -> RAS+ grid from a SimpleITK field."""
    return _field_array(sitk.DisplacementFieldTransform(transform).GetDisplacementField())


def _field_array(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z, 3) float32 RAS+ field and its (4, 4) voxel -> RAS+ grid from a SimpleITK vector image."""
    grid_lps = np.eye(4)
    grid_lps[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
    grid_lps[:3, 3] = image.GetOrigin()
    view = sitk.GetArrayViewFromImage(image)
    displacement = np.empty(view.shape[2::-1] + (3,), dtype=np.float32)
    np.multiply(np.transpose(view, (2, 1, 0, 3)), _VECTOR_SIGN, out=displacement, casting="same_kind")
    return displacement, _FLIP @ grid_lps
