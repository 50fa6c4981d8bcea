"""Finding T1w images, label maps and masks with pybids (bidsreg.bids.layout)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bidsreg import exit_codes
from bidsreg.bids.layout import collect_t1w, load_layout, read_filters, select_subjects
from bidsreg.errors import InputError

OASIS = Path(os.environ.get("BIDSREG_OASIS_DIR", Path(__file__).resolve().parents[3] / "shared/data/oasis-trt-20-dev"))


def _nifti(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), path)


@pytest.fixture()
def dataset(tmp_path) -> dict[str, Path]:
    """sub-01 (sessions a and b, SkullStripped true), sub-02 (no sidecar), sub-03 (no T1w);
    labels with two descs; a brain mask for sub-02 only."""
    root, labels, masks = tmp_path / "bids", tmp_path / "labels", tmp_path / "masks"
    (root).mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    for ses in ("a", "b"):
        _nifti(root / f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_T1w.nii.gz")
        (root / f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_T1w.json").write_text('{"SkullStripped": true}')
    _nifti(root / "sub-02/anat/sub-02_T1w.nii.gz")
    _nifti(root / "sub-03/anat/sub-03_T2w.nii.gz")
    for folder in (labels, masks):
        folder.mkdir()
        (folder / "dataset_description.json").write_text(
            json.dumps({"Name": "d", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "x"}]})
        )
    for desc in ("aparc", "aseg"):
        _nifti(labels / f"sub-01/ses-a/anat/sub-01_ses-a_desc-{desc}_dseg.nii.gz")
        _nifti(labels / f"sub-02/anat/sub-02_desc-{desc}_dseg.nii.gz")
    _nifti(masks / "sub-02/anat/sub-02_desc-brain_mask.nii.gz")
    return {"root": root, "labels": labels, "masks": masks}


def test_subjects_sessions_labels_and_masks(dataset):
    layout = load_layout(dataset["root"])
    labels, masks = (load_layout(dataset[key], derivative=True) for key in ("labels", "masks"))
    assert select_subjects(layout, None) == ["01", "02", "03"]
    assert select_subjects(layout, ["02", "01", "02"]) == ["02", "01"]
    images = collect_t1w(layout, "01", labels=labels, labels_desc="aseg", masks=masks)
    assert [t.entities["session"] for t in images] == ["a", "b"]
    assert images[0].skull_stripped is True and images[0].labels.name == "sub-01_ses-a_desc-aseg_dseg.nii.gz"
    assert images[1].labels is None and images[0].mask is None  # no labels for session b
    (only_b,) = collect_t1w(layout, "01", sessions=["b"])
    assert only_b.entities == {"subject": "01", "session": "b"} and only_b.labels is None
    (second,) = collect_t1w(layout, "02", labels=labels, labels_desc="aparc", masks=masks)
    assert second.skull_stripped is None and second.labels.name == "sub-02_desc-aparc_dseg.nii.gz"
    assert second.mask.name == "sub-02_desc-brain_mask.nii.gz"


@pytest.mark.parametrize(
    "call, code, words",
    [
        (lambda d, l: select_subjects(l, ["01", "09"]), exit_codes.NO_FILES, "no subject sub-09"),
        (lambda d, l: collect_t1w(l, "03"), exit_codes.INPUT_MISSING, "sub-03: no T1w image"),
        (lambda d, l: collect_t1w(l, "01", sessions=["c"]), exit_codes.INPUT_MISSING, "session(s) c"),
        (lambda d, l: collect_t1w(l, "02", labels=load_layout(d["labels"], True)), exit_codes.BAD_INPUT, "--labels-desc"),
        (lambda d, l: load_layout(d["root"] / "sub-01"), exit_codes.VALIDATION_FAILED, "not a BIDS dataset"),
        (lambda d, l: load_layout(d["root"] / "none", True), exit_codes.INPUT_MISSING, "derivatives"),
    ],
)
def test_selection_errors_name_the_problem_and_carry_exit_codes(dataset, call, code, words):
    with pytest.raises(InputError) as info:
        call(dataset, load_layout(dataset["root"]))
    assert info.value.exit_code == code and words in str(info.value), str(info.value)


def test_filter_file(dataset, tmp_path):
    assert read_filters(None) == {}
    path = tmp_path / "filters.json"
    path.write_text(json.dumps({"t1w": {"session": "b"}, "bold": {"task": "rest"}}))
    assert read_filters(path) == {"session": "b"}
    (image,) = collect_t1w(load_layout(dataset["root"]), "01", filters=read_filters(path))
    assert image.entities["session"] == "b"
    path.write_text("{not json")
    with pytest.raises(InputError, match="filters.json: not valid JSON"):
        read_filters(path)
    path.write_text('{"t1w": ["session"]}')
    with pytest.raises(InputError, match="expected"):
        read_filters(path)
    with pytest.raises(InputError, match="not found") as info:
        read_filters(tmp_path / "none.json")
    assert info.value.exit_code == exit_codes.INPUT_MISSING


@pytest.mark.oasis
@pytest.mark.skipif(not OASIS.is_dir(), reason="OASIS-TRT-20 dev data not found (set BIDSREG_OASIS_DIR)")
def test_oasis_dev_dataset():
    layout = load_layout(OASIS)
    labels = load_layout(OASIS / "derivatives" / "manual", derivative=True)
    assert select_subjects(layout, None) == [f"{i:02d}" for i in range(1, 13)]
    (image,) = collect_t1w(layout, "09", labels=labels, labels_desc="DKT31aseg")
    assert image.skull_stripped is True and image.labels.name == "sub-09_desc-DKT31aseg_dseg.nii.gz"
