"""The group level knows what the participant runs were asked for (bidsreg.group.requests):
a missing result is named, and the methods are compared on the images they share."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bidsreg import exit_codes
from bidsreg.cli.run import main
from bidsreg.group.collect import collect
from bidsreg.group.requests import read_requests, reconcile, write_requests

OVERLAP = ("label\tname\ttarget_overlap\tdice\tjaccard\tfalse_negative\tfalse_positive\thd95\n"
           "1\tleft\t0.5\t{dice}\t0.4\t0.5\t0.3\t2.0\n")
#: Dice of each (subject, method) written by :func:`results`.
DICE = {("02", "original"): 0.1, ("02", "cnn"): 0.5, ("02", "antssyn"): 0.6,
        ("03", "original"): 0.2, ("03", "cnn"): 0.7, ("03", "antssyn"): 0.8}


def results(out: Path) -> Path:
    """A participant run's outputs (overlaps, sidecars, transforms) and its record of requests."""
    (out / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    for (subject, method), dice in DICE.items():
        anat = out / f"sub-{subject}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        (anat / f"sub-{subject}_seg-DK_desc-{method}_overlap.tsv").write_text(OVERLAP.format(dice=dice))
        (anat / f"sub-{subject}_seg-DK_desc-{method}_overlap.json").write_text(
            json.dumps({"Space": "sub01", "SkullStripped": True, "seconds": 1.0}))
        if method != "original":
            (anat / f"sub-{subject}_from-T1w_to-sub01_desc-{method}_mode-image_xfm.h5").write_text("")
    write_requests(out, [{"subject": "02"}, {"subject": "03"}], ["cnn", "antssyn"], [True, True])
    return out


def test_requests_are_recorded_and_matched_to_the_results(tmp_path):
    out = results(tmp_path / "out")
    write_requests(out, [{"subject": "04", "session": "a"}], ["cnn"], [False])  # a later run, no labels
    requests = read_requests(out)
    assert len(requests) == 6 + 1 and not requests.set_index(["subject", "method"]).loc[("04", "cnn"), "measured"]
    subjects, missing = reconcile(collect(out)[0], requests)
    assert list(missing[["subject", "session", "method"]].itertuples(index=False, name=None)) == [("04", "a", "cnn")]
    assert len(subjects) == 6


def test_group_names_a_missing_result_and_exits_66(tmp_path, capsys):
    out = results(tmp_path / "out")
    (out / "sub-03/anat/sub-03_seg-DK_desc-cnn_overlap.tsv").unlink()
    code = main([str(tmp_path / "bids"), str(out), "group"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == exit_codes.INPUT_MISSING and "1 of the 6 requested results are missing" in line
    assert "sub-03 cnn (overlaps)" in line and "--allow-missing" in line
    assert not (out / "group").exists()


def test_group_with_allow_missing_compares_the_shared_images_and_flags_the_rest(tmp_path):
    out = results(tmp_path / "out")
    (out / "sub-03/anat/sub-03_seg-DK_desc-cnn_overlap.tsv").unlink()
    assert main([str(tmp_path / "bids"), str(out), "group", "--allow-missing"]) == exit_codes.OK
    group = out / "group"
    methods = pd.read_csv(group / "methods.tsv", sep="\t", na_values="n/a").set_index("method")
    assert list(methods.index) == ["original", "cnn", "antssyn"]  # no stray row of the orphan transform
    assert (methods["n"] == 1).all() and methods.loc["antssyn", "dice_mean"] == pytest.approx(0.6)  # sub-02 only
    qc = pd.read_csv(group / "qc.tsv", sep="\t", na_values="n/a", dtype={"subject": str}).set_index(["subject", "method"])
    assert qc.loc[("03", "cnn"), "qc"] == "missing: no result"
    assert "left out of the comparison" in qc.loc[("03", "antssyn"), "qc"] and qc.loc[("02", "cnn"), "qc"] == "ok"
    report = (group / "report.html").read_text()
    assert "Missing results" in report and "left out" in report


def test_group_on_complete_results_is_unchanged_by_the_records(tmp_path):
    out = results(tmp_path / "out")
    assert main([str(tmp_path / "bids"), str(out), "group"]) == exit_codes.OK
    methods = pd.read_csv(out / "group" / "methods.tsv", sep="\t", na_values="n/a").set_index("method")
    assert (methods["n"] == 2).all() and methods.loc["cnn", "dice_mean"] == pytest.approx(0.6)
    assert "Missing results" not in (out / "group" / "report.html").read_text()
