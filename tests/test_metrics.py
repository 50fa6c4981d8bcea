"""Tests of bidsreg.metrics on tiny volumes whose answers are counted by hand."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from bidsreg import metrics
from bidsreg.metrics import (
    OVERLAP_COLUMNS,
    jacobian_determinant,
    jacobian_stats,
    overlap_table,
    read_lut,
    summarise,
)

# One row of 8 voxels (shape 1x1x8). Fixed T and warped S:
#   T = 1 1 1 1 2 2 3 0
#   S = 1 1 0 2 2 2 2 0
# label 1: |T|=4 |S|=2 |S∩T|=2 |S∪T|=4;  label 2: |T|=2 |S|=4 |S∩T|=2 |S∪T|=4;
# label 3: |T|=1 |S|=0.
FIXED_ROW = np.array([[[1, 1, 1, 1, 2, 2, 3, 0]]], dtype=np.int16)
WARPED_ROW = np.array([[[1, 1, 0, 2, 2, 2, 2, 0]]], dtype=np.int16)


def _row(table: pd.DataFrame, label: int) -> pd.Series:
    return table.set_index("label").loc[label]


def _cube(shape: tuple[int, int, int], corner: tuple[int, int, int], side: int) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[tuple(slice(c, c + side) for c in corner)] = 1
    return labels


def test_overlap_measures_counted_by_hand() -> None:
    table = overlap_table(WARPED_ROW, FIXED_ROW, lut={1: "one", 2: "two"})

    assert list(table.columns) == list(OVERLAP_COLUMNS)
    assert table["label"].tolist() == [1, 2, 3]
    assert table["name"].tolist() == ["one", "two", ""]
    assert table["fixed_voxels"].tolist() == [4, 2, 1]
    assert table["warped_voxels"].tolist() == [2, 4, 0]

    one = _row(table, 1)
    assert one["target_overlap"] == pytest.approx(2 / 4)
    assert one["dice"] == pytest.approx(2 * 2 / (2 + 4))
    assert one["jaccard"] == pytest.approx(2 / 4)
    assert one["false_negative"] == pytest.approx(2 / 4)
    assert one["false_positive"] == pytest.approx(0 / 2)

    two = _row(table, 2)
    assert two["target_overlap"] == pytest.approx(2 / 2)
    assert two["dice"] == pytest.approx(2 * 2 / (4 + 2))
    assert two["jaccard"] == pytest.approx(2 / 4)
    assert two["false_negative"] == pytest.approx(0 / 2)
    assert two["false_positive"] == pytest.approx(2 / 4)


def test_label_missing_from_warped_map() -> None:
    three = _row(overlap_table(WARPED_ROW, FIXED_ROW), 3)

    assert three["dice"] == 0.0
    assert three["target_overlap"] == 0.0
    assert three["jaccard"] == 0.0
    assert three["false_negative"] == 1.0
    assert math.isnan(three["false_positive"])  # |S\T| / |S| = 0 / 0
    assert math.isnan(three["hd95"])


def test_hd95_counted_by_hand() -> None:
    # In a 1-voxel-thick row every voxel of a region is a surface voxel.
    # label 2: d(S -> T) = 1,0,0,1 -> P95 = 1; d(T -> S) = 0,0.
    # label 1: d(S -> T) = 0,0; d(T -> S) = 0,0,1,2 -> P95 = 1 + 0.85 * (2 - 1) = 1.85.
    table = overlap_table(WARPED_ROW, FIXED_ROW, spacing=(1.0, 1.0, 1.0))

    assert _row(table, 1)["hd95"] == pytest.approx(1.85)
    assert _row(table, 2)["hd95"] == pytest.approx(1.0)
    scaled = overlap_table(WARPED_ROW, FIXED_ROW, spacing=(5.0, 5.0, 3.0))
    assert _row(scaled, 1)["hd95"] == pytest.approx(3 * 1.85)


def test_identical_maps() -> None:
    fixed = np.zeros((6, 6, 6), dtype=np.int32)
    fixed[1:4, 1:5, 2:5] = 7
    fixed[4:6, :, :3] = 12
    table = overlap_table(fixed, fixed.copy(), spacing=(1.0, 2.0, 3.0))

    assert table["label"].tolist() == [7, 12]
    np.testing.assert_array_equal(table["dice"], 1.0)
    np.testing.assert_array_equal(table["jaccard"], 1.0)
    np.testing.assert_array_equal(table["target_overlap"], 1.0)
    np.testing.assert_array_equal(table["false_negative"], 0.0)
    np.testing.assert_array_equal(table["false_positive"], 0.0)
    np.testing.assert_array_equal(table["hd95"], 0.0)


def test_disjoint_maps() -> None:
    fixed = _cube((8, 4, 4), (0, 0, 0), 3)
    warped = _cube((8, 4, 4), (5, 0, 0), 3)
    one = _row(overlap_table(warped, fixed), 1)

    assert one["dice"] == 0.0
    assert one["jaccard"] == 0.0
    assert one["target_overlap"] == 0.0
    assert one["false_negative"] == 1.0
    assert one["false_positive"] == 1.0
    assert one["hd95"] > 0


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hd95_of_a_shifted_cube_is_the_shift_in_mm(axis: int) -> None:
    # A 4^3 cube moved 2 voxels: no surface voxel is farther than 2 voxels along `axis`
    # from the other surface, and the 16 of 56 on the leading face are exactly that far.
    spacing = (2.0, 1.0, 0.5)
    shift = [0, 0, 0]
    shift[axis] = 2
    fixed = _cube((9, 9, 9), (1, 1, 1), 4)
    warped = _cube((9, 9, 9), tuple(1 + s for s in shift), 4)
    one = _row(overlap_table(warped, fixed, spacing=spacing), 1)

    assert one["hd95"] == pytest.approx(2 * spacing[axis])
    # Half of each cube overlaps the other: 32 of 64 voxels.
    assert one["dice"] == pytest.approx(0.5)
    assert one["jaccard"] == pytest.approx(32 / 96)


def test_hd95_matches_brute_force_surface_distances() -> None:
    rng = np.random.default_rng(3)
    fixed = np.zeros((14, 12, 10), dtype=np.int16)
    fixed[2:9, 3:10, 1:7] = 1
    fixed[8:13, 1:6, 4:9] = 2
    warped = np.roll(fixed, (1, -1, 2), axis=(0, 1, 2))
    warped[rng.random(warped.shape) < 0.05] = 0
    spacing = (1.2, 0.9, 2.5)
    table = overlap_table(warped, fixed, spacing=spacing)

    structure = ndimage.generate_binary_structure(3, 1)
    for label in (1, 2):
        points = []
        for labels in (warped, fixed):
            region = labels == label
            surface = region & ~ndimage.binary_erosion(region, structure)
            points.append(np.argwhere(surface) * spacing)
        distances = cdist(*points)
        expected = max(
            np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95)
        )
        assert _row(table, label)["hd95"] == pytest.approx(expected)


def test_overlap_agrees_with_simpleitk() -> None:
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(0)
    fixed = rng.integers(0, 4, size=(12, 10, 8)).astype(np.int16)
    warped = fixed.copy()
    changed = rng.random(fixed.shape) < 0.3
    warped[changed] = rng.integers(0, 4, size=int(changed.sum()))
    table = overlap_table(warped, fixed).set_index("label")

    measures = sitk.LabelOverlapMeasuresImageFilter()
    measures.Execute(sitk.GetImageFromArray(warped), sitk.GetImageFromArray(fixed))
    assert table.index.tolist() == [1, 2, 3]
    for label, row in table.iterrows():
        assert row["dice"] == pytest.approx(measures.GetDiceCoefficient(label))
        assert row["jaccard"] == pytest.approx(measures.GetJaccardCoefficient(label))
        assert row["false_negative"] == pytest.approx(measures.GetFalseNegativeError(label))
        assert row["target_overlap"] == pytest.approx(1 - measures.GetFalseNegativeError(label))
        # Since ITK 5.3 GetFalsePositiveError is |S\T| / |not T| (a rate); Klein's false
        # positive |S\T| / |S| is ITK's false discovery rate.
        assert row["false_positive"] == pytest.approx(measures.GetFalseDiscoveryRate(label))


def test_explicit_labels_large_values_and_float_maps() -> None:
    big = 2**40
    fixed = FIXED_ROW.astype(np.int64)
    fixed[fixed == 3] = big
    warped = WARPED_ROW.astype(np.int64)
    warped[warped == 3] = big
    reference = overlap_table(WARPED_ROW, FIXED_ROW, labels=[3, 2, 9])
    remapped = overlap_table(warped, fixed, labels=[big, 2, 9])
    from_floats = overlap_table(
        WARPED_ROW.astype(np.float32), FIXED_ROW.astype(np.float64), labels=[3, 2, 9]
    )

    assert reference["label"].tolist() == [2, 3, 9]
    assert remapped["label"].tolist() == [2, 9, big]
    measures = ["dice", "jaccard", "target_overlap", "fixed_voxels", "warped_voxels"]
    pd.testing.assert_frame_equal(
        remapped.loc[[0, 2, 1], measures].reset_index(drop=True), reference[measures]
    )
    pd.testing.assert_frame_equal(from_floats, reference)
    absent = _row(reference, 9)
    assert (absent["fixed_voxels"], absent["warped_voxels"]) == (0, 0)
    assert math.isnan(absent["dice"]) and math.isnan(absent["hd95"])


@pytest.mark.parametrize(
    ("warped", "fixed", "kwargs", "match"),
    [
        (np.zeros((2, 3, 4), int), np.zeros((2, 3, 5), int), {}, r"\(2, 3, 4\).*\(2, 3, 5\)"),
        (np.zeros((2, 3), int), np.zeros((2, 3), int), {}, "3D label map"),
        (np.full((2, 2, 2), 0.5), np.ones((2, 2, 2), int), {}, "non-integer"),
        (np.ones((2, 2, 2), int), np.zeros((2, 2, 2), int), {}, "no non-zero label"),
        (np.ones((2, 2, 2), int), np.ones((2, 2, 2), int), {"labels": []}, "labels is empty"),
        (np.ones((2, 2, 2), int), np.ones((2, 2, 2), int), {"spacing": (1, 0, 1)}, "spacing"),
    ],
)
def test_overlap_table_rejects_bad_input(warped, fixed, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        overlap_table(warped, fixed, **kwargs)


def test_read_lut(tmp_path) -> None:
    path = tmp_path / "desc-test_dseg.tsv"
    path.write_text(
        "index\tname\tabbreviation\n"
        "4\tLeft-Lateral-Ventricle\tLLV\n"
        "1002\tctx-lh-caudalanteriorcingulate\tcACC\n"
        "9\tNA\t\n"
    )

    assert read_lut(path) == {
        4: "Left-Lateral-Ventricle",
        1002: "ctx-lh-caudalanteriorcingulate",
        9: "NA",
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("label\tname\n1\tx\n", r"lacks column\(s\) \['index'\]"),
        ("index\tname\n1.5\tx\n", "line 2: index '1.5' is not an integer"),
        ("index\tname\n1\tx\n1\ty\n", "line 3: index 1 appears twice"),
    ],
)
def test_read_lut_rejects_bad_tables(tmp_path, text: str, match: str) -> None:
    path = tmp_path / "desc-bad_dseg.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_lut(path)


def _voxel_centres_mm(shape: tuple[int, int, int], spacing: tuple[float, ...]) -> np.ndarray:
    """Positions in mm of the voxel centres, shape (X, Y, Z, 3)."""
    return np.indices(shape).transpose(1, 2, 3, 0) * np.asarray(spacing)


def test_jacobian_of_zero_displacement_is_one() -> None:
    det = jacobian_determinant(np.zeros((3, 4, 5, 3), dtype=np.float32), (1.0, 2.0, 0.5))

    assert det.shape == (3, 4, 5)
    assert det.dtype == np.float32
    np.testing.assert_array_equal(det, 1.0)


def test_jacobian_of_uniform_scaling() -> None:
    # u = (s - 1) x maps x to s x: every volume grows by s^3, borders included.
    spacing = (1.0, 2.0, 0.7)
    scale = 1.3
    x = _voxel_centres_mm((4, 5, 6), spacing)
    det = jacobian_determinant((scale - 1) * x, spacing)

    np.testing.assert_allclose(det, scale**3, rtol=1e-6)


def test_jacobian_uses_the_spacing_and_each_component() -> None:
    # u_0 = 0.5 x_1 (a shear) keeps volume; u_2 = -0.5 x_2 halves it.
    spacing = (1.0, 2.0, 3.0)
    x = _voxel_centres_mm((3, 3, 3), spacing)
    displacement = np.zeros_like(x)
    displacement[..., 0] = 0.5 * x[..., 1]
    displacement[..., 2] = -0.5 * x[..., 2]

    np.testing.assert_allclose(jacobian_determinant(displacement, spacing), 0.5, rtol=1e-6)


def test_jacobian_in_slabs_equals_the_whole_volume(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    displacement = rng.normal(size=(9, 4, 3, 3))
    spacing = (1.5, 1.0, 2.0)
    grads = [np.gradient(displacement[..., c], *spacing) for c in range(3)]
    jac = np.stack([np.stack(g, axis=-1) for g in grads], axis=-2) + np.eye(3)
    expected = np.linalg.det(jac)

    monkeypatch.setattr(metrics, "_SLAB_VOXELS", 2 * 4 * 3)  # 2 planes per slab
    np.testing.assert_allclose(jacobian_determinant(displacement, spacing), expected, rtol=1e-5)


def test_folding_field() -> None:
    # u_0 along X is 0 0 3 0 0 (mm, unit spacing). Central differences give du_0/dx_0 =
    # 0, 1.5, 0, -1.5, 0, so det = 1, 2.5, 1, -0.5, 1: one plane in five folds.
    displacement = np.zeros((5, 3, 3, 3))
    displacement[2, :, :, 0] = 3.0
    det = jacobian_determinant(displacement, (1.0, 1.0, 1.0))

    np.testing.assert_allclose(det[:, 1, 1], [1.0, 2.5, 1.0, -0.5, 1.0])
    stats = jacobian_stats(det)
    assert stats["folding_percent"] == pytest.approx(20.0)
    assert stats["jacobian_min"] == pytest.approx(-0.5)
    assert stats["jacobian_max"] == pytest.approx(2.5)


def test_jacobian_stats_in_a_mask() -> None:
    det = np.array([[[1.0, np.e, -1.0, 0.0]]], dtype=np.float32)
    mask = np.array([[[1, 1, 0, 0]]], dtype=np.uint8)

    inside = jacobian_stats(det, mask)
    assert inside["folding_percent"] == 0.0
    assert inside["sdlogj"] == pytest.approx(0.5, rel=1e-6)  # std of log = {0, 1}
    assert (inside["jacobian_min"], inside["jacobian_max"]) == pytest.approx((1.0, np.e))

    everywhere = jacobian_stats(det)
    assert everywhere["folding_percent"] == pytest.approx(50.0)
    log_det = [0.0, 1.0, math.log(1e-9), math.log(1e-9)]
    assert everywhere["sdlogj"] == pytest.approx(np.std(log_det), rel=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: jacobian_determinant(np.zeros((3, 3, 3)), (1, 1, 1)), r"\(3, 3, 3\)"),
        (lambda: jacobian_determinant(np.zeros((1, 3, 3, 3)), (1, 1, 1)), "at least 2"),
        (lambda: jacobian_determinant(np.zeros((2, 2, 2, 3)), (1, 1)), "spacing"),
        (lambda: jacobian_stats(np.ones((2, 2, 2)), np.ones((2, 2))), r"\(2, 2\)"),
        (lambda: jacobian_stats(np.ones((2, 2, 2)), np.zeros((2, 2, 2))), "empty"),
    ],
)
def test_jacobian_rejects_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_summarise() -> None:
    table = pd.DataFrame(
        {
            "label": [1, 2, 3, 4],
            "dice": [0.2, 0.4, 0.6, 0.8],
            "jaccard": [0.1, 0.2, 0.3, 0.4],
            "target_overlap": [0.5, 0.5, 1.0, 1.0],
            "hd95": [1.0, np.nan, 3.0, 5.0],
        }
    )
    summary = summarise(table)

    assert summary["dice"] == pytest.approx(0.5)
    assert summary["jaccard"] == pytest.approx(0.25)
    assert summary["target_overlap"] == pytest.approx(0.75)
    assert summary["hd95"] == pytest.approx(3.0)  # the NaN label is skipped
    # 30th percentile of 0.2, 0.4, 0.6, 0.8: position 0.9 -> 0.2 + 0.9 * 0.2.
    assert summary["dsc30"] == pytest.approx(0.38)


def test_summarise_of_a_real_table_and_bad_tables() -> None:
    summary = summarise(overlap_table(WARPED_ROW, FIXED_ROW))
    assert summary["dice"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert summary["hd95"] == pytest.approx((1.85 + 1.0) / 2)

    with pytest.raises(ValueError, match="lacks column"):
        summarise(pd.DataFrame({"dice": [1.0]}))
    with pytest.raises(ValueError, match="no rows"):
        summarise(pd.DataFrame(columns=list(OVERLAP_COLUMNS)))


def test_docstring_examples() -> None:
    result = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
