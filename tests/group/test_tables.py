"""Group tables (bidsreg.group.tables) on small hand-made results."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from bidsreg.group.tables import cnn_stages, label_table, method_table, qc_flags, wilcoxon_table


@pytest.fixture()
def subjects() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for index, subject in enumerate(["01", "02", "03", "04", "05", "06"]):
        base = 0.1 + 0.01 * index
        for method, gain in (("original", 0.0), ("cnnaffine", 0.3), ("cnn", 0.45), ("antssyn", 0.5 + 0.01 * index)):
            rows.append({"subject": subject, "session": None, "run": None, "method": method, "seg": "aseg",
                         "space": "sub09", "dice": base + gain, "jaccard": (base + gain) / 2, "target_overlap": base,
                         "hd95": 5 - gain, "dsc30": base, "seconds": None if method == "original" else 1 + rng.random(),
                         "peak_memory_mb": 100.0, "folding_percent": 0.5 if method in ("cnn", "antssyn") else None,
                         "sdlogj": 0.1, "skull_stripped": True})
    table = pd.DataFrame(rows)
    table.loc[(table["subject"] == "06") & (table["method"] == "cnn"), ["dice", "folding_percent"]] = [0.05, 3.0]
    return table


def test_method_table_means_and_sds_in_the_papers_order(subjects):
    table = method_table(subjects)
    assert list(table["method"]) == ["original", "cnnaffine", "cnn", "antssyn"]
    original = subjects[subjects["method"] == "original"]["dice"]
    row = table.set_index("method").loc["original"]
    assert row["dice_mean"] == pytest.approx(original.mean()) and row["dice_sd"] == pytest.approx(original.std(ddof=1))
    assert np.isnan(row["seconds_mean"]) and row["n"] == 6


def test_cnn_stages(subjects):
    stages = cnn_stages(method_table(subjects))
    assert list(stages["stage"]) == ["original", "global", "registered"]
    assert list(stages["method"]) == ["original", "cnnaffine", "cnn"]


def test_wilcoxon_matches_scipy_on_the_paired_subjects(subjects):
    tests = wilcoxon_table(subjects).set_index(["method_a", "method_b"])
    assert len(tests) == 6
    a = subjects[subjects["method"] == "cnnaffine"].sort_values("subject")["dice"].to_numpy()
    b = subjects[subjects["method"] == "antssyn"].sort_values("subject")["dice"].to_numpy()
    expected = wilcoxon(b, a)
    row = tests.loc[("cnnaffine", "antssyn")]
    assert row["p"] == pytest.approx(expected.pvalue) and row["n"] == 6
    assert row["smallest_p"] == pytest.approx(1 / 32) and row["p"] >= row["smallest_p"]  # 6 pairs: 2 / 2**6
    assert row["median_b_minus_a"] == pytest.approx(np.median(b - a))


def test_qc_flags_outliers_worse_than_original_and_folding(subjects):
    qc = qc_flags(subjects).set_index(["subject", "method"])["qc"]
    flagged = qc.loc[("06", "cnn")]
    assert "Dice outlier" in flagged and "not above the original" in flagged and "3.00 % folded" in flagged
    assert qc.loc[("01", "cnn")] == "ok" and qc.loc[("01", "original")] == "ok"


def test_label_table_one_row_per_label():
    labels = pd.DataFrame({
        "subject": ["01", "01", "02", "02"], "method": ["cnn", "cnn", "cnn", "antssyn"], "seg": "aseg",
        "label": [1, 2, 1, 1], "name": ["a", "b", "a", "a"], "dice": [0.5, 0.7, 0.7, 0.9],
    })
    table = label_table(labels)
    assert list(table["label"]) == [1, 2] and list(table.columns) == ["seg", "label", "name", "cnn", "antssyn"]
    assert table.loc[0, "cnn"] == pytest.approx(0.6) and np.isnan(table.loc[1, "antssyn"])


def test_qc_flags_images_not_known_to_be_skull_stripped(subjects):
    subjects["skull_stripped"] = [None if s == "02" else True for s in subjects["subject"]]  # as sidecars give it
    qc = qc_flags(subjects).set_index(["subject", "method"])["qc"]
    assert qc.loc[("02", "cnn")] == "T1w not known to be skull-stripped" and qc.loc[("02", "original")] == "ok"
