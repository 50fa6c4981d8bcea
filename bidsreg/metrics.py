"""Registration accuracy and transform regularity measures.

Label overlap follows Klein et al. (2009), "Evaluation of 14 nonlinear deformation algorithms
applied to human brain MRI registration", NeuroImage 46:786-802: with S the warped moving
label map and T the fixed label map, both on the fixed image's voxel grid, per label

* target overlap ``|S∩T| / |T|``
* mean overlap (Dice) ``2 |S∩T| / (|S| + |T|)``
* union overlap (Jaccard) ``|S∩T| / |S∪T|``
* false negative ``|T\\S| / |T|``
* false positive ``|S\\T| / |S|``

plus the 95th percentile symmetric surface Hausdorff distance (HD95, mm). Transform regularity
is read from the Jacobian determinant of ``x -> x + u(x)``: the percentage of folded voxels
(determinant <= 0) and SDlogJ.

Arrays are in voxel order (X, Y, Z), the order nibabel gives; ``spacing`` holds the voxel
sizes in mm along those axes.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "OVERLAP_COLUMNS",
    "jacobian_determinant",
    "jacobian_stats",
    "world_jacobian_determinant",
    "overlap_table",
    "read_lut",
    "summarise",
]

#: Columns of :func:`overlap_table`, in order.
OVERLAP_COLUMNS = (
    "label",
    "name",
    "target_overlap",
    "dice",
    "jaccard",
    "false_negative",
    "false_positive",
    "hd95",
    "fixed_voxels",
    "warped_voxels",
)

#: Determinants are clipped here before the logarithm in SDlogJ.
LOG_JACOBIAN_FLOOR = 1e-9

# Largest label value range mapped through a lookup table rather than a binary search.
_MAX_LOOKUP = 1 << 24

# Voxels per slab in jacobian_determinant: keeps its float64 temporaries near 70 MB for
# any volume (about 1 GB if a 256x256x160 field were differentiated whole).
_SLAB_VOXELS = 1 << 18


def overlap_table(
    warped_labels: np.ndarray,
    fixed_labels: np.ndarray,
    labels: Iterable[int] | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    lut: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """Klein et al. (2009) overlap measures and HD95 for every label.

    Parameters
    ----------
    warped_labels : numpy.ndarray
        S, the moving label map warped onto the fixed grid, integer, shape (X, Y, Z).
    fixed_labels : numpy.ndarray
        T, the fixed label map, integer, shape (X, Y, Z).
    labels : iterable of int, optional
        Labels to measure. Default: every non-zero label present in ``fixed_labels``.
    spacing : sequence of 3 float, optional
        Voxel sizes in mm along X, Y, Z (used for HD95 only).
    lut : mapping of int to str, optional
        Label names, e.g. from :func:`read_lut`; labels it lacks get an empty name.

    Returns
    -------
    pandas.DataFrame
        One row per label, sorted by label, with the columns :data:`OVERLAP_COLUMNS`:
        ``label`` (int), ``name`` (str), ``target_overlap``, ``dice``, ``jaccard``,
        ``false_negative``, ``false_positive`` (fractions in [0, 1]), ``hd95`` (mm),
        ``fixed_voxels`` |T| and ``warped_voxels`` |S| (counts).
        A ratio whose denominator is zero is NaN (e.g. ``false_positive`` of a label absent
        from S); ``hd95`` is NaN unless the label is present in both maps.

    Notes
    -----
    The overlap measures are SimpleITK's ``LabelOverlapMeasuresImageFilter`` (Klein's false
    positive is its false discovery rate), on the maps of the measured labels.
    HD95 is ``max(P95(d(∂S, ∂T)), P95(d(∂T, ∂S)))``, the larger of the two directed 95th
    percentiles (linear interpolation) of the distances from the surface voxels of one
    region to the nearest surface voxel of the other, as in MONAI and the Learn2Reg
    evaluation. Surface voxels are those of the region with a 6-neighbour outside it or on
    the array border. Distances come from Euclidean distance transforms on the bounding box
    of ``S ∪ T``, so the cost follows each label's extent, not the volume's.

    Examples
    --------
    >>> fixed = np.array([[[1, 1, 1, 1, 2, 2, 0, 0]]])
    >>> warped = np.array([[[1, 1, 0, 2, 2, 2, 2, 0]]])
    >>> overlap_table(warped, fixed)[["label", "dice", "jaccard"]].round(3)
       label   dice  jaccard
    0      1  0.667      0.5
    1      2  0.667      0.5
    """
    warped = _as_label_map(warped_labels, "warped_labels")
    fixed = _as_label_map(fixed_labels, "fixed_labels")
    if warped.shape != fixed.shape:
        raise ValueError(
            f"warped_labels has shape {warped.shape} and fixed_labels has shape "
            f"{fixed.shape}; resample the warped label map onto the fixed grid first."
        )
    sampling = _as_spacing(spacing)
    label_values = _label_set(labels, fixed)
    n_labels = label_values.size

    # Rank of each voxel's label in label_values, 1-based; 0 for labels not measured.
    warped_rank = _rank(warped, label_values)
    fixed_rank = _rank(fixed, label_values)
    n_warped = np.bincount(warped_rank.ravel(), minlength=n_labels + 1)[1:]
    n_fixed = np.bincount(fixed_rank.ravel(), minlength=n_labels + 1)[1:]
    dice, jaccard, false_negative, false_positive = _klein_measures(warped_rank, fixed_rank, n_warped, n_fixed)
    target_overlap = 1.0 - false_negative

    names = lut or {}
    return pd.DataFrame(
        {
            "label": label_values.astype(np.int64),
            "name": [names.get(int(v), "") for v in label_values],
            "target_overlap": target_overlap,
            "dice": dice,
            "jaccard": jaccard,
            "false_negative": false_negative,
            "false_positive": false_positive,
            "hd95": _hd95_per_label(warped_rank, fixed_rank, n_labels, sampling),
            "fixed_voxels": n_fixed.astype(np.int64),
            "warped_voxels": n_warped.astype(np.int64),
        },
        columns=list(OVERLAP_COLUMNS),
    )


def _klein_measures(
    warped_rank: np.ndarray, fixed_rank: np.ndarray, n_warped: np.ndarray, n_fixed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dice, Jaccard, false negative and false positive of ranks 1..n with SimpleITK; NaN where a
    ratio's denominator is empty."""
    import SimpleITK as sitk

    n_labels = n_warped.size
    measures = np.full((4, n_labels), np.nan)
    present = np.flatnonzero((n_warped + n_fixed) > 0)
    if present.size:
        overlap = sitk.LabelOverlapMeasuresImageFilter()
        overlap.Execute(sitk.GetImageFromArray(warped_rank), sitk.GetImageFromArray(fixed_rank))
        for index in present:
            rank = int(index) + 1
            measures[:, index] = (overlap.GetDiceCoefficient(rank), overlap.GetJaccardCoefficient(rank),
                                  overlap.GetFalseNegativeError(rank), overlap.GetFalseDiscoveryRate(rank))
    measures[2, n_fixed == 0] = np.nan
    measures[3, n_warped == 0] = np.nan
    return measures[0], measures[1], measures[2], measures[3]


def read_lut(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read a BIDS segmentation lookup table (``desc-<label>_dseg.tsv``).

    Parameters
    ----------
    path : str or os.PathLike
        Tab-separated file with at least the columns ``index`` (integer label value) and
        ``name``; other columns (``abbreviation``, ``color``, ...) are ignored.

    Returns
    -------
    dict of int to str
        Label value -> name, in file order.
    """
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [column for column in ("index", "name") if column not in table.columns]
    if missing:
        raise ValueError(
            f"{os.fspath(path)}: lookup table lacks column(s) {missing}; found "
            f"{list(table.columns)}. A BIDS dseg.tsv needs tab-separated 'index' and 'name'."
        )
    lut: dict[int, str] = {}
    for row, (index, name) in enumerate(zip(table["index"], table["name"]), start=2):
        try:
            value = int(index.strip())
        except ValueError:
            raise ValueError(
                f"{os.fspath(path)}, line {row}: index {index!r} is not an integer."
            ) from None
        if value in lut:
            raise ValueError(f"{os.fspath(path)}, line {row}: index {value} appears twice.")
        lut[value] = name.strip()
    return lut


def jacobian_determinant(displacement: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Jacobian determinant of the mapping ``x -> x + u(x)``.

    Parameters
    ----------
    displacement : numpy.ndarray
        u, shape (X, Y, Z, 3), in mm; component c is the displacement along voxel axis c.
        Each spatial axis needs at least 2 voxels.
    spacing : sequence of 3 float
        Voxel sizes in mm along X, Y, Z.

    Returns
    -------
    numpy.ndarray
        float32, shape (X, Y, Z): ``det(I + du/dx)``, unitless; 1 where the mapping keeps
        volume, <= 0 where it folds.

    Notes
    -----
    Derivatives are central differences inside and one-sided differences on the borders
    (:func:`numpy.gradient`), in float64. The volume is processed in slabs along X so that
    the temporaries stay near 70 MB for any volume size.

    Examples
    --------
    >>> x = np.indices((4, 4, 4)).transpose(1, 2, 3, 0) * 2.0   # voxel centres, mm
    >>> float(jacobian_determinant(0.5 * x, (2.0, 2.0, 2.0)).mean())   # scale 1.5
    3.375
    """
    u = np.asarray(displacement)
    if u.ndim != 4 or u.shape[-1] != 3:
        raise ValueError(
            f"displacement has shape {u.shape}; expected (X, Y, Z, 3) with the components "
            "last."
        )
    if min(u.shape[:3]) < 2:
        raise ValueError(
            f"displacement has shape {u.shape}; each spatial axis needs at least 2 voxels "
            "for finite differences."
        )
    if not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)):
        raise ValueError(f"displacement has dtype {u.dtype}; expected real numbers (mm).")
    sampling = _as_spacing(spacing)

    n_x = u.shape[0]
    slab = max(1, _SLAB_VOXELS // (u.shape[1] * u.shape[2]))
    det = np.empty(u.shape[:3], dtype=np.float32)
    for start in range(0, n_x, slab):
        stop = min(start + slab, n_x)
        # One halo plane on each side makes the slab's X differences central, as in the
        # whole volume; at the true borders np.gradient falls back to one-sided ones.
        lo, hi = max(start - 1, 0), min(stop + 1, n_x)
        block = u[lo:hi].astype(np.float64)
        keep = slice(start - lo, stop - lo)
        jac = [
            [d[keep] for d in np.gradient(block[..., c], *sampling)] for c in range(3)
        ]
        for c in range(3):
            jac[c][c] += 1.0
        det[start:stop] = (
            jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
            - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
            + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0])
        )
    return det


def world_jacobian_determinant(displacement_ras: np.ndarray, reference_affine: np.ndarray) -> np.ndarray:
    """Jacobian determinant of ``x -> x + d(x)`` for a displacement in RAS+ mm on any grid.

    The world vectors are expressed along the grid's voxel axes (the rotation part of
    ``reference_affine``) before :func:`jacobian_determinant`, so oblique and flipped grids
    are handled; the determinant does not depend on the frame.

    bidsreg's own, not SimpleITK's ``DisplacementFieldJacobianDeterminantFilter``, because that
    filter differentiates along the voxel axes without the grid's direction cosines: on an LAS
    grid it is off by up to 0.056 for a smooth 3 mm field, where this one gives the same
    determinant as on the RAS grid (``benchmarks/library_routines.py``; the filter is faster,
    0.3 s against 0.6 s for 256x256x160, not worth a wrong determinant on every grid not stored
    along RAS, LAS and LPS among them).

    Parameters
    ----------
    displacement_ras : numpy.ndarray
        (X, Y, Z, 3) displacement, RAS+ mm.
    reference_affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm of its grid.
    """
    affine = np.asarray(reference_affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    directions = affine[:3, :3] / spacing
    if np.allclose(directions, np.eye(3)):
        along_axes = displacement_ras
    else:
        along_axes = (displacement_ras.reshape(-1, 3) @ directions).reshape(displacement_ras.shape)
    return jacobian_determinant(along_axes, spacing)


def jacobian_stats(det: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Folding and smoothness statistics of a Jacobian determinant map.

    Parameters
    ----------
    det : numpy.ndarray
        Jacobian determinant, shape (X, Y, Z), e.g. from :func:`jacobian_determinant`.
    mask : numpy.ndarray, optional
        Region to summarise (non-zero = inside, typically the fixed brain mask), same shape
        as ``det``. Default: every voxel.

    Returns
    -------
    dict of str to float
        ``folding_percent``: percentage (0-100) of voxels with determinant <= 0;
        ``sdlogj``: standard deviation (ddof 0) of ``log(max(det, 1e-9))``;
        ``jacobian_min`` and ``jacobian_max``: extreme determinants.
    """
    values = np.asarray(det)
    if mask is not None:
        inside = np.asarray(mask)
        if inside.shape != values.shape:
            raise ValueError(
                f"mask has shape {inside.shape} but the Jacobian determinant has shape "
                f"{values.shape}; they must be on the same grid."
            )
        values = values[inside != 0]
    if values.size == 0:
        raise ValueError("no voxels to summarise: the Jacobian determinant or mask is empty.")
    values = values.astype(np.float64, copy=False).ravel()
    log_det = np.log(np.maximum(values, LOG_JACOBIAN_FLOOR))
    return {
        "folding_percent": 100.0 * int(np.count_nonzero(values <= 0)) / values.size,
        "sdlogj": float(log_det.std()),
        "jacobian_min": float(values.min()),
        "jacobian_max": float(values.max()),
    }


def summarise(table: pd.DataFrame) -> dict[str, float]:
    """Per-subject summary of an :func:`overlap_table` over its labels.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`overlap_table` (at least ``dice``, ``jaccard``,
        ``target_overlap`` and ``hd95``).

    Returns
    -------
    dict of str to float
        ``dice``, ``jaccard``, ``target_overlap``, ``hd95`` (mm): means over labels, NaNs
        skipped (NaN when every value is NaN); ``dsc30``: 30th percentile of the labels'
        Dice (linear interpolation), the robustness measure of the group tables.
    """
    required = ("dice", "jaccard", "target_overlap", "hd95")
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ValueError(
            f"overlap table lacks column(s) {missing}; found {list(table.columns)}. "
            "Pass the output of overlap_table()."
        )
    if table.empty:
        raise ValueError("overlap table has no rows: nothing to summarise.")
    summary = {column: _nanmean(table[column].to_numpy(dtype=float)) for column in required}
    dice = table["dice"].to_numpy(dtype=float)
    dice = dice[~np.isnan(dice)]
    summary["dsc30"] = float(np.percentile(dice, 30)) if dice.size else math.nan
    return summary


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _as_label_map(array: np.ndarray, what: str) -> np.ndarray:
    """Return ``array`` as an integer (X, Y, Z) array, accepting integral floats."""
    labels = np.asarray(array)
    if labels.ndim != 3:
        raise ValueError(f"{what} has shape {labels.shape}; expected a 3D label map (X, Y, Z).")
    if np.issubdtype(labels.dtype, np.integer):
        return labels
    if labels.dtype == np.bool_:
        return labels.astype(np.uint8)
    if np.issubdtype(labels.dtype, np.floating) and np.array_equal(labels, np.round(labels)):
        return labels.astype(np.int64)
    raise ValueError(
        f"{what} has dtype {labels.dtype} with non-integer values; label maps must hold "
        "integer labels (resample them with nearest-neighbour interpolation)."
    )


def _as_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing {tuple(spacing)} must be 3 positive voxel sizes in mm.")
    return values  # type: ignore[return-value]


def _label_set(labels: Iterable[int] | None, fixed: np.ndarray) -> np.ndarray:
    """Sorted unique labels to measure (int64)."""
    if labels is None:
        values = pd.unique(fixed.ravel())
        values = np.sort(values[values != 0]).astype(np.int64)
        if values.size == 0:
            raise ValueError("fixed_labels holds no non-zero label; nothing to measure.")
        return values
    requested = np.asarray(list(labels))
    if requested.size == 0:
        raise ValueError("labels is empty; pass None to measure every label of fixed_labels.")
    if requested.ndim != 1 or not np.issubdtype(requested.dtype, np.integer):
        raise ValueError(f"labels must be a flat sequence of integers, got {requested!r}.")
    return np.unique(requested).astype(np.int64)


def _rank(label_map: np.ndarray, label_values: np.ndarray) -> np.ndarray:
    """1-based position of each voxel's label in sorted ``label_values``; 0 if absent."""
    dtype = np.uint16 if label_values.size < np.iinfo(np.uint16).max else np.int32
    low, high = int(label_map.min()), int(label_map.max())
    if high - low < _MAX_LOOKUP:
        # A lookup table indexed by label value is ~20x faster than a binary search.
        table = np.zeros(high - low + 1, dtype=dtype)
        inside = (label_values >= low) & (label_values <= high)
        table[label_values[inside] - low] = np.flatnonzero(inside) + 1
        return table[np.subtract(label_map, low, dtype=np.intp)]
    position = np.searchsorted(label_values, label_map)
    np.minimum(position, label_values.size - 1, out=position)
    found = label_values[position] == label_map
    return np.where(found, position + 1, 0).astype(dtype)


def _surface(rank: np.ndarray) -> np.ndarray:
    """Voxels whose label differs from a 6-neighbour's, or that lie on the array border.

    For each label this equals ``region & ~binary_erosion(region)`` with a 6-connected
    structuring element and ``border_value=0``, computed for all labels in one pass.
    """
    surface = np.zeros(rank.shape, dtype=bool)
    for axis in range(rank.ndim):
        lower = [slice(None)] * rank.ndim
        upper = [slice(None)] * rank.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        differs = rank[tuple(lower)] != rank[tuple(upper)]
        surface[tuple(lower)] |= differs
        surface[tuple(upper)] |= differs
        edge = [slice(None)] * rank.ndim
        edge[axis] = [0, -1]
        surface[tuple(edge)] = True
    return surface


def _hd95_per_label(
    warped_rank: np.ndarray,
    fixed_rank: np.ndarray,
    n_labels: int,
    sampling: tuple[float, float, float],
) -> np.ndarray:
    """HD95 in mm for ranks 1..n_labels (NaN where a region is empty); see overlap_table."""
    hd95 = np.full(n_labels, np.nan)
    warped_boxes = ndimage.find_objects(warped_rank, max_label=n_labels)
    fixed_boxes = ndimage.find_objects(fixed_rank, max_label=n_labels)
    warped_surface = _surface(warped_rank)
    fixed_surface = _surface(fixed_rank)
    for index, (warped_box, fixed_box) in enumerate(zip(warped_boxes, fixed_boxes)):
        if warped_box is None or fixed_box is None:
            continue
        box = tuple(
            slice(min(a.start, b.start), max(a.stop, b.stop))
            for a, b in zip(warped_box, fixed_box)
        )
        rank = index + 1
        on_warped = warped_surface[box] & (warped_rank[box] == rank)
        on_fixed = fixed_surface[box] & (fixed_rank[box] == rank)
        # The box holds both regions whole, so the nearest surface voxel is always inside it.
        to_fixed = ndimage.distance_transform_edt(~on_fixed, sampling=sampling)[on_warped]
        to_warped = ndimage.distance_transform_edt(~on_warped, sampling=sampling)[on_fixed]
        hd95[index] = max(np.percentile(to_fixed, 95), np.percentile(to_warped, 95))
    return hd95
