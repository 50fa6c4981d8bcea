"""Derivative file names (bidsreg.bids.derivatives), read back by pybids."""
from __future__ import annotations

import json

import pytest
from bids import BIDSLayout

from bidsreg.bids.derivatives import derivative_path, parse_name, sidecar_path, space_label


@pytest.mark.parametrize(
    "fixed, label",
    [("sub-09", "sub09"), ("/data/tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz", "MNI152NLin2009cAsym"),
     ("atlas.nii.gz", "atlas"), ("My-Template_T1w.nii", "MyTemplate")],
)
def test_space_label(fixed, label):
    assert space_label(fixed) == label


def test_names_of_conventions_and_pybids_reads_them_back(tmp_path):
    base = {"subject": "10", "session": None}
    files = {
        "image": derivative_path(tmp_path, {**base, "space": "sub09", "desc": "cnn"}, "T1w", ".nii.gz"),
        "xfm": derivative_path(tmp_path, {**base, "from": "T1w", "to": "sub09", "mode": "image", "desc": "cnn"}, "xfm", ".h5"),
        "labels": derivative_path(tmp_path, {**base, "space": "sub09", "segmentation": "DKT31aseg", "desc": "cnn"}, "dseg",
                                  ".nii.gz"),
        "overlap": derivative_path(tmp_path, {"subject": "10", "session": "a", "segmentation": "DKT31aseg",
                                              "desc": "antssyn"}, "overlap", ".tsv"),
    }
    assert files["image"] == tmp_path / "sub-10/anat/sub-10_space-sub09_desc-cnn_T1w.nii.gz"
    assert files["xfm"].name == "sub-10_from-T1w_to-sub09_desc-cnn_mode-image_xfm.h5"
    assert files["labels"].name == "sub-10_space-sub09_seg-DKT31aseg_desc-cnn_dseg.nii.gz"
    assert files["overlap"] == tmp_path / "sub-10/ses-a/anat/sub-10_ses-a_seg-DKT31aseg_desc-antssyn_overlap.tsv"
    (tmp_path / "dataset_description.json").write_text(
        json.dumps({"Name": "bidsreg", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "bidsreg"}]})
    )
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    layout = BIDSLayout(tmp_path, validate=False, is_derivative=True)
    (xfm,) = layout.get(suffix="xfm", extension=".h5")
    entities = xfm.get_entities()
    assert (entities["subject"], entities["desc"], entities["mode"]) == ("10", "cnn", "image")
    assert (entities["from"], entities["to"]) == ("T1w", "sub09")
    (image,) = layout.get(suffix="T1w", space="sub09", desc="cnn")
    assert image.path == str(files["image"])
    # and bidsreg reads them back the same way
    assert parse_name(files["overlap"]) == {"subject": "10", "session": "a", "segmentation": "DKT31aseg",
                                            "desc": "antssyn", "suffix": "overlap", "extension": ".tsv"}
    assert sidecar_path(files["labels"]).name == "sub-10_space-sub09_seg-DKT31aseg_desc-cnn_dseg.json"


@pytest.mark.parametrize(
    "entities, words",
    [({"space": "x"}, "'subject'"), ({"subject": "01", "task": "rest"}, "task"),
     ({"subject": "01", "desc": "a_b"}, "letters")],
)
def test_bad_entities(tmp_path, entities, words):
    with pytest.raises(ValueError, match=words):
        derivative_path(tmp_path, entities, "T1w", ".nii.gz")
