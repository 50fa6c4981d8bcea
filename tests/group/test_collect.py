"""Participant outputs read back into pandas tables (bidsreg.group.collect)."""
from __future__ import annotations

import json

import pandas as pd

from bidsreg.group.collect import SUBJECT_COLUMNS, collect


def _write(path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def test_overlaps_and_registrations_without_labels_make_one_row_each(tmp_path):
    anat = tmp_path / "sub-10" / "ses-a" / "anat"
    table = "label\tname\ttarget_overlap\tdice\tjaccard\tfalse_negative\tfalse_positive\thd95\n" \
            "1\tleft\t0.5\t0.6\t0.4\t0.5\t0.3\t2.0\n2\tright\t0.7\t0.8\t0.6\t0.3\t0.1\tn/a\n"
    _write(anat / "sub-10_ses-a_seg-DK_desc-cnn_overlap.tsv", table)
    _write(anat / "sub-10_ses-a_seg-DK_desc-cnn_overlap.json",
           json.dumps({"Space": "sub09", "seconds": 4.0, "FoldingPercent": 0.1, "SkullStripped": True}))
    _write(anat / "sub-10_ses-a_from-T1w_to-sub09_desc-cnn_mode-image_xfm.h5", "")
    _write(tmp_path / "sub-11" / "anat" / "sub-11_from-T1w_to-sub09_desc-antssyn_mode-image_xfm.h5", "")
    _write(tmp_path / "sub-11" / "anat" / "sub-11_from-T1w_to-sub09_desc-antssyn_mode-image_xfm.json",
           json.dumps({"seconds": 80.0}))
    subjects, labels = collect(tmp_path)
    assert tuple(subjects.columns) == SUBJECT_COLUMNS and len(subjects) == 2
    cnn = subjects[subjects["method"] == "cnn"].iloc[0]
    assert (cnn["subject"], cnn["session"], cnn["seg"], cnn["space"]) == ("10", "a", "DK", "sub09")
    assert cnn["dice"] == 0.7 and cnn["hd95"] == 2.0 and cnn["seconds"] == 4.0 and cnn["folding_percent"] == 0.1
    syn = subjects[subjects["method"] == "antssyn"].iloc[0]
    assert syn["subject"] == "11" and pd.isna(syn["dice"]) and syn["space"] == "sub09" and syn["seconds"] == 80.0
    assert list(labels[["subject", "session", "method", "seg", "label"]].itertuples(index=False, name=None)) == [
        ("10", "a", "cnn", "DK", 1), ("10", "a", "cnn", "DK", 2)]
