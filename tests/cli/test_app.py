"""The BIDS-App end to end on the phantom BIDS dataset: train both networks (a few steps),
participant with every method (few iterations of the classical ones), group."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
import torch
from bids import BIDSLayout

from bidsreg import exit_codes
from bidsreg.cli.run import main
from bidsreg.methods.ants import SCRIPTS
from bidsreg.methods.table import TABLE, deformable, method_names, reported_names
from bidsreg.metrics import OVERLAP_COLUMNS
from bidsreg.transform import Transform

pytestmark = pytest.mark.slow

SUBJECTS = ("02", "03")  # sub-01 is the fixed image
#: bspline runs elastix, a system package (.ci/run installs it); without it the app runs the others.
ELASTIX = shutil.which("elastix") is not None
#: Every reported method of the table (every stage of every method), in its order.
METHODS = tuple(m for m in reported_names()[1:] if ELASTIX or m != "bspline")
# The ANTs scripts (SCRIPTS) keep their settings for 1 mm brains (shrink factors 8 4 2 1, a rigid
# stage on mutual information): on the 40-voxel phantom their coarsest level is 5 voxels wide and
# their rigid stage lands anywhere from 0.0 to 0.9 Dice with the seed. The app tests check that they
# run and write consistent transforms; tests/methods/test_ants.py checks that they register.

#: Every derivative of sub-02 with every method (CONVENTIONS.md), written out: the names must not change.
DERIVATIVES = (
    "sub-02_from-T1w_to-sub01_desc-antsaffine_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-antsaffine_mode-image_xfm.json",
    "sub-02_from-T1w_to-sub01_desc-antssyn_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-antssynquick_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-antssynfull_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-antssyn_mode-image_xfm.json",
    "sub-02_from-T1w_to-sub01_desc-antssynquick_mode-image_xfm.json",
    "sub-02_from-T1w_to-sub01_desc-antssynfull_mode-image_xfm.json",
    "sub-02_from-T1w_to-sub01_desc-bspline_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-bspline_mode-image_xfm.json",
    "sub-02_from-T1w_to-sub01_desc-cnn_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-cnn_mode-image_xfm.json",
    "sub-02_from-T1w_to-sub01_desc-cnnaffine_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-cnnaffine_mode-image_xfm.json",
    "sub-02_from-T1w_to-sub01_desc-cnnio_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-cnnio_mode-image_xfm.json",
    "sub-02_from-T1w_to-sub01_desc-demons_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-demons_mode-image_xfm.json",
    "sub-02_from-T1w_to-sub01_desc-voxelmorph_mode-image_xfm.h5",
    "sub-02_from-T1w_to-sub01_desc-voxelmorph_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-antsaffine_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-antsaffine_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-antssyn_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-antssynquick_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-antssynfull_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-antssyn_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-antssynquick_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-antssynfull_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-bspline_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-bspline_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-cnn_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-cnn_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-cnnaffine_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-cnnaffine_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-cnnio_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-cnnio_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-demons_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-demons_mode-image_xfm.json",
    "sub-02_from-sub01_to-T1w_desc-voxelmorph_mode-image_xfm.h5",
    "sub-02_from-sub01_to-T1w_desc-voxelmorph_mode-image_xfm.json",
    "sub-02_seg-phantom_desc-antsaffine_overlap.json",
    "sub-02_seg-phantom_desc-antsaffine_overlap.tsv",
    "sub-02_seg-phantom_desc-antssyn_overlap.json",
    "sub-02_seg-phantom_desc-antssynquick_overlap.json",
    "sub-02_seg-phantom_desc-antssynfull_overlap.json",
    "sub-02_seg-phantom_desc-antssyn_overlap.tsv",
    "sub-02_seg-phantom_desc-antssynquick_overlap.tsv",
    "sub-02_seg-phantom_desc-antssynfull_overlap.tsv",
    "sub-02_seg-phantom_desc-bspline_overlap.json",
    "sub-02_seg-phantom_desc-bspline_overlap.tsv",
    "sub-02_seg-phantom_desc-cnn_overlap.json",
    "sub-02_seg-phantom_desc-cnn_overlap.tsv",
    "sub-02_seg-phantom_desc-cnnaffine_overlap.json",
    "sub-02_seg-phantom_desc-cnnaffine_overlap.tsv",
    "sub-02_seg-phantom_desc-cnnio_overlap.json",
    "sub-02_seg-phantom_desc-cnnio_overlap.tsv",
    "sub-02_seg-phantom_desc-demons_overlap.json",
    "sub-02_seg-phantom_desc-demons_overlap.tsv",
    "sub-02_seg-phantom_desc-original_overlap.json",
    "sub-02_seg-phantom_desc-original_overlap.tsv",
    "sub-02_seg-phantom_desc-voxelmorph_overlap.json",
    "sub-02_seg-phantom_desc-voxelmorph_overlap.tsv",
    "sub-02_space-sub01_desc-antsaffine_T1w.json",
    "sub-02_space-sub01_desc-antsaffine_T1w.nii.gz",
    "sub-02_space-sub01_desc-antssyn_T1w.json",
    "sub-02_space-sub01_desc-antssynquick_T1w.json",
    "sub-02_space-sub01_desc-antssynfull_T1w.json",
    "sub-02_space-sub01_desc-antssyn_T1w.nii.gz",
    "sub-02_space-sub01_desc-antssynquick_T1w.nii.gz",
    "sub-02_space-sub01_desc-antssynfull_T1w.nii.gz",
    "sub-02_space-sub01_desc-antssyn_jacobian.json",
    "sub-02_space-sub01_desc-antssynquick_jacobian.json",
    "sub-02_space-sub01_desc-antssynfull_jacobian.json",
    "sub-02_space-sub01_desc-antssyn_jacobian.nii.gz",
    "sub-02_space-sub01_desc-antssynquick_jacobian.nii.gz",
    "sub-02_space-sub01_desc-antssynfull_jacobian.nii.gz",
    "sub-02_space-sub01_desc-bspline_T1w.json",
    "sub-02_space-sub01_desc-bspline_T1w.nii.gz",
    "sub-02_space-sub01_desc-bspline_jacobian.json",
    "sub-02_space-sub01_desc-bspline_jacobian.nii.gz",
    "sub-02_space-sub01_desc-cnn_T1w.json",
    "sub-02_space-sub01_desc-cnn_T1w.nii.gz",
    "sub-02_space-sub01_desc-cnn_jacobian.json",
    "sub-02_space-sub01_desc-cnn_jacobian.nii.gz",
    "sub-02_space-sub01_desc-cnnaffine_T1w.json",
    "sub-02_space-sub01_desc-cnnaffine_T1w.nii.gz",
    "sub-02_space-sub01_desc-cnnio_T1w.json",
    "sub-02_space-sub01_desc-cnnio_T1w.nii.gz",
    "sub-02_space-sub01_desc-cnnio_jacobian.json",
    "sub-02_space-sub01_desc-cnnio_jacobian.nii.gz",
    "sub-02_space-sub01_desc-demons_T1w.json",
    "sub-02_space-sub01_desc-demons_T1w.nii.gz",
    "sub-02_space-sub01_desc-demons_jacobian.json",
    "sub-02_space-sub01_desc-demons_jacobian.nii.gz",
    "sub-02_space-sub01_desc-voxelmorph_T1w.json",
    "sub-02_space-sub01_desc-voxelmorph_T1w.nii.gz",
    "sub-02_space-sub01_desc-voxelmorph_jacobian.json",
    "sub-02_space-sub01_desc-voxelmorph_jacobian.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-antsaffine_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-antsaffine_dseg.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-antssyn_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-antssynquick_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-antssynfull_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-antssyn_dseg.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-antssynquick_dseg.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-antssynfull_dseg.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-bspline_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-bspline_dseg.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-cnn_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-cnn_dseg.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-cnnaffine_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-cnnaffine_dseg.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-cnnio_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-cnnio_dseg.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-demons_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-demons_dseg.nii.gz",
    "sub-02_space-sub01_seg-phantom_desc-voxelmorph_dseg.json",
    "sub-02_space-sub01_seg-phantom_desc-voxelmorph_dseg.nii.gz",
)
QUICK = ["--ants-affine-iterations", "100", "50", "0", "--ants-syn-iterations", "20", "10", "0",
         "--demons-shrink-factors", "2", "1", "--demons-iterations", "30", "15",
         "--bspline-shrink-factors", "2", "1", "--bspline-iterations", "200", "200", "--bspline-grid-spacing", "24"]


def _participant(bids: Path, out: Path, *extra: str) -> int:
    return main([str(bids), str(out), "participant", "--fixed", "sub-01", "--labels", str(bids / "derivatives/manual"),
                 "--labels-desc", "phantom", "--skip-bids-validation", *QUICK, *extra])


@pytest.fixture(scope="module")
def app(bids_dataset, tmp_path_factory) -> dict:
    """Train, participant (all methods) and group on the phantom dataset, once."""
    out = tmp_path_factory.mktemp("app") / "derivatives"
    codes = {"train": main([str(bids_dataset), str(out), "train", "--methods", "all", "--affine-steps", "4",
                            "--deformable-steps", "4"])}
    methods = ",".join(m for m in method_names() if ELASTIX or m != "bspline")
    codes["participant"] = _participant(bids_dataset, out, "--methods", methods, "--nprocs", "2")
    codes["group"] = main([str(bids_dataset), str(out), "group"])
    return {"bids": bids_dataset, "out": out, "codes": codes}


def test_levels_exit_zero(app):
    assert app["codes"] == {"train": 0, "participant": 0, "group": 0}


def test_train_writes_checkpoint_and_model_card(app):
    models = app["out"] / "models"
    payload = torch.load(models / "bidsreg_model.pt", weights_only=True)
    assert payload["training"]["complete"] and payload["training"]["steps"] == 8
    card = json.loads((models / "bidsreg_model.json").read_text())
    assert card["TrainingData"]["Subjects"] == ["sub-01", "sub-02", "sub-03"] and card["Training"]["Steps"] == 8
    assert card["Config"]["affine_steps"] == 4 and card["LossCurve"] == "bidsreg_model_loss.png"
    assert (models / "bidsreg_model_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert card["Config"]["diffeomorphic"] is True and "stationary velocity field" in card["Method"]


def test_train_all_also_writes_the_one_stage_model(app):
    models = app["out"] / "models"
    payload = torch.load(models / "bidsreg_voxelmorph.pt", weights_only=True)
    config = payload["training"]["config"]
    assert payload["training"]["complete"] and config["global_stage"] is False and config["affine_steps"] == 0
    assert payload["training"]["steps"] == 4 and len(payload["training"]["history"]["affine"]) == 0
    card = json.loads((models / "bidsreg_voxelmorph.json").read_text())
    assert "one-stage" in card["Method"] and "U-Net displacement field" in card["Method"]
    assert config["diffeomorphic"] is False  # the original one-stage VoxelMorph predicts a displacement


def test_derivatives_dataset_description(app):
    description = json.loads((app["out"] / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "bidsreg"
    assert description["SourceDatasets"][0]["URL"] == app["bids"].as_uri()


def test_the_bids_validator_accepts_the_derivatives(app):
    from bidsreg.bids.validation import validate_dataset

    validate_dataset(app["out"])  # raises BIDSValidationError on any error


def test_participant_derivatives_have_the_conventions_names(app):
    """Exactly the listed files, for each subject (without elastix, no bspline); a Jacobian for
    every deformable method."""
    out = app["out"]
    for subject in SUBJECTS:
        expected = {name.replace("sub-02", f"sub-{subject}") for name in DERIVATIVES
                    if ELASTIX or "desc-bspline" not in name}
        assert {p.name for p in (out / f"sub-{subject}" / "anat").iterdir()} == expected
    jacobians = {name.split("desc-")[1].split("_")[0] for name in DERIVATIVES if name.endswith("_jacobian.nii.gz")}
    assert jacobians == {method for method in reported_names() if deformable(method)}
    assert not (out / "sub-01").exists()  # the fixed subject is not registered to itself


def test_the_run_configuration_is_stored_in_the_derivatives(app):
    stored = {path.name.split("_")[1]: json.loads(path.read_text()) for path in (app["out"] / "logs").glob("config_*.json")}
    assert set(stored) == {"train", "participant", "group"}
    participant = stored["participant"]
    assert participant["methods"] == [m for m in method_names() if ELASTIX or m != "bspline"]
    assert participant["method_configs"]["cnn"]["model"] == str(app["out"] / "models" / "bidsreg_model.pt")
    assert participant["method_configs"]["demons"]["iterations"] == [30, 15]


def test_pybids_reads_the_derivatives_back(app):
    layout = BIDSLayout(app["out"], validate=False, is_derivative=True)
    assert sorted(layout.get_subjects()) == list(SUBJECTS)
    warped = layout.get(subject="02", suffix="T1w", space="sub01", desc="cnn", extension=".nii.gz")
    assert len(warped) == 1
    forward = layout.get(subject="03", suffix="xfm", desc="antssyn", extension=".h5", **{"from": "T1w"})
    assert len(forward) == 1 and forward[0].get_entities()["to"] == "sub01"
    sidecar = warped[0].get_metadata()
    assert sidecar["SpatialReference"] == "sub-01" and sidecar["Method"] == "cnn" and sidecar["seconds"] > 0
    assert sidecar["SkullStripped"] is True and sidecar["parameters"]["model"] == "bidsreg_model.pt"
    fixed = nb.load(app["bids"] / "sub-01/anat/sub-01_T1w.nii.gz")
    image = nb.load(warped[0].path)
    assert image.shape == fixed.shape and np.allclose(image.affine, fixed.affine)
    labels = nb.load(layout.get(subject="02", suffix="dseg", desc="antssyn", extension=".nii.gz")[0].path)
    assert np.issubdtype(labels.get_data_dtype(), np.integer)
    assert set(np.unique(np.asarray(labels.dataobj))) <= set(range(11))


def test_overlap_tables_and_sidecars(app):
    anat = app["out"] / "sub-02" / "anat"
    table = pd.read_csv(anat / "sub-02_seg-phantom_desc-cnn_overlap.tsv", sep="\t", na_values="n/a")
    assert tuple(table.columns) == OVERLAP_COLUMNS and list(table["label"]) == list(range(1, 11))
    assert table["name"].iloc[0] == "octant-LPI" and table["dice"].between(0, 1).all()
    sidecar = json.loads((anat / "sub-02_from-T1w_to-sub01_desc-antssyn_mode-image_xfm.json").read_text())
    assert {"FoldingPercent", "SDlogJ", "seconds", "peak_memory_mb", "parameters"} <= set(sidecar)
    assert sidecar["parameters"]["reg_iterations"] == [20, 10, 0]
    # Compact transforms: each field on its method's grid, said in the sidecar.
    fixed = nb.load(app["bids"] / "sub-01/anat/sub-01_T1w.nii.gz")
    spacing = TABLE["antssyn"].field_spacing
    expected = fixed.header.get_zooms()[:3] if spacing is None else (spacing,) * 3
    assert sidecar["field_grid"]["resolution"] == "compact"
    assert np.allclose(sidecar["field_grid"]["spacing_mm"], expected)
    cnn = json.loads((anat / "sub-02_from-T1w_to-sub01_desc-cnn_mode-image_xfm.json").read_text())
    written = Transform.read(anat / "sub-02_from-T1w_to-sub01_desc-cnn_mode-image_xfm.h5")
    assert written.field_grid.shape == tuple(cnn["field_grid"]["shape"]) != fixed.shape
    assert np.allclose(np.linalg.norm(written.field_affine[:3, :3], axis=0), cnn["field_grid"]["spacing_mm"])


def test_group_tables_and_report(app):
    group = app["out"] / "group"
    subjects = pd.read_csv(group / "subjects.tsv", sep="\t", na_values="n/a", dtype={"subject": str})
    assert set(subjects["method"]) == {"original", *METHODS}
    assert len(subjects) == len(SUBJECTS) * (len(METHODS) + 1)
    dice = subjects.pivot_table(index="subject", columns="method", values="dice")
    for method in set(METHODS) - set(SCRIPTS):  # registration helps every subject with every method
        assert (dice[method] > dice["original"]).all(), (method, dice)
    methods = pd.read_csv(group / "methods.tsv", sep="\t", na_values="n/a")
    assert list(methods["method"]) == ["original", *METHODS]
    assert {"dice_mean", "dice_sd", "jaccard_mean", "hd95_mean", "dsc30_mean", "folding_percent_mean",
            "sdlogj_mean", "seconds_mean"} <= set(methods.columns)
    stages = pd.read_csv(group / "cnn_stages.tsv", sep="\t")
    assert list(stages["stage"]) == ["original", "global", "registered", "optimised"]
    labels = pd.read_csv(group / "labels.tsv", sep="\t")
    assert len(labels) == 10 and {"name", "cnn", "antssyn"} <= set(labels.columns)
    tests = pd.read_csv(group / "wilcoxon.tsv", sep="\t", na_values="n/a")
    assert len(tests) == len(METHODS) * (len(METHODS) + 1) // 2 and set(tests["n"]) == {2}
    assert set(tests["smallest_p"]) == {0.5}  # 2 subjects: no test can say more
    qc = pd.read_csv(group / "qc.tsv", sep="\t", na_values="n/a")
    assert len(qc) == len(subjects) and "qc" in qc
    report = (group / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 4  # boxplots and an overlay per subject
    assert "http://" not in report and "https://" not in report  # opens offline: nothing to fetch
    for words in ("original / global / registered", "Wilcoxon", "Methods", "antspyx", "QC flags",
                  "FastSymmetricForcesDemons", "one-stage", "stationary velocity field integrated by scaling",
                  "predicting a displacement field", *(["elastix"] if ELASTIX else [])):
        assert words in report
    assert "fixed: sub-01 (space-sub01)" in report and "registered to sub-01 (space-sub01)" in report
    assert "<th>Dice</th>" in report and "dice_mean" not in report  # the tables say what they show
    assert (group / "figures" / "sub-02_overlay.png").is_file()  # every method, beside each other
    assert "the hardest first" in report and "look at these first" in report
    overlap = json.loads((app["out"] / "sub-02/anat/sub-02_seg-phantom_desc-cnn_overlap.json").read_text())
    assert overlap["FixedLabels"].endswith("sub-01_desc-phantom_dseg.nii.gz")


def test_each_level_writes_its_log_beside_its_configuration(app, capsys):
    logs = app["out"] / "logs"
    for level in ("train", "participant", "group"):
        configs = sorted(logs.glob(f"config_{level}_*.json"))
        assert configs and all(c.with_name(c.stem.replace("config_", "log_") + ".txt").is_file() for c in configs)
    participant = next(logs.glob("log_participant_*.txt")).read_text()
    assert "sub-02 cnn: registered in" in participant and "registrations)" in participant
    assert main([str(app["bids"]), str(app["out"]), "group"]) == 0
    err = capsys.readouterr().err  # the comparison, rounded, before the report's path
    assert "methods compared" in err and "dice_mean" in err and "antssyn" in err
    assert "methods compared" in sorted(logs.glob("log_group_*.txt"))[-1].read_text()


def test_rerun_redoes_only_what_is_missing(app, capsys):
    out = app["out"]
    lost = out / "sub-02/anat/sub-02_space-sub01_desc-antssyn_T1w.nii.gz"
    kept = out / "sub-03/anat/sub-03_from-T1w_to-sub01_desc-cnn_mode-image_xfm.h5"
    result = out / "work/bidsreg_wf/sub_02_wf/register_antssyn/result_register_antssyn.pklz"
    before = kept.read_bytes(), result.stat().st_mtime_ns
    lost.unlink()
    methods = ",".join(m for m in method_names() if ELASTIX or m != "bspline")
    assert _participant(app["bids"], out, "--methods", methods, "--plugin", "Linear") == 0
    assert lost.is_file() and kept.read_bytes() == before[0]
    assert result.stat().st_mtime_ns == before[1]  # the registration was not run again
    log = capsys.readouterr().err  # a line per subject and method, and a summary
    assert "sub-02 antssyn: registered by an earlier run" in log and "kept from the work folder" in log
    registrations = 2 * sum(len(TABLE[name].stages) for name in methods.split(","))  # sub-02 and sub-03
    assert f"({registrations} of {registrations} registrations)" in log
    assert "sub-03 cnn: mean Dice" in log and "summary" in log


@pytest.mark.parametrize("method", [m for m in METHODS if deformable(m)])
def test_inverse_transform_brings_fixed_labels_into_the_subject(app, method):
    """The inverse transform file warps the fixed labels onto the subject about as well as the
    forward one warps the subject's onto the fixed image, and better than no registration."""
    from bidsreg.image import load_volume
    from bidsreg.metrics import overlap_table

    labels = app["bids"] / "derivatives/manual"
    atlas = load_volume(labels / "sub-01/anat/sub-01_desc-phantom_dseg.nii.gz", labels=True)
    subject = load_volume(labels / "sub-02/anat/sub-02_desc-phantom_dseg.nii.gz", labels=True)
    anat = app["out"] / "sub-02/anat"
    transform = Transform.read(anat / f"sub-02_from-T1w_to-sub01_desc-{method}_mode-image_xfm.h5",
                               anat / f"sub-02_from-sub01_to-T1w_desc-{method}_mode-image_xfm.h5")
    warped = transform.apply_inverse(atlas, subject.grid, nearest=True)
    before = Transform(np.eye(4)).apply_inverse(atlas, subject.grid, nearest=True)
    after_dice = overlap_table(warped.astype(np.int32), subject.data)["dice"].mean()
    before_dice = overlap_table(before.astype(np.int32), subject.data)["dice"].mean()
    forward = pd.read_csv(anat / f"sub-02_seg-phantom_desc-{method}_overlap.tsv", sep="\t", na_values="n/a")
    assert abs(after_dice - forward["dice"].mean()) < 0.1
    if method not in SCRIPTS:
        assert after_dice > before_dice + 0.05


def test_train_again_keeps_the_finished_model_and_refuses_another_setup(app, capsys):
    checkpoint = app["out"] / "models" / "bidsreg_model.pt"
    before = checkpoint.read_bytes()
    common = [str(app["bids"]), str(app["out"]), "train", "--skip-bids-validation", "--deformable-steps", "4"]
    assert main([*common, "--affine-steps", "4"]) == 0
    assert checkpoint.read_bytes() == before and "already holds this finished training" in capsys.readouterr().err
    assert main([*common, "--affine-steps", "5"]) == exit_codes.BAD_INPUT
    assert "another configuration" in capsys.readouterr().err and checkpoint.read_bytes() == before


def test_cnn_and_cnnio_share_one_training(bids_dataset, tmp_path, capsys):
    """Both methods run the two-stage checkpoint: training both trains it once."""
    out = tmp_path / "out"
    assert main([str(bids_dataset), str(out), "train", "--skip-bids-validation", "--methods", "cnn,cnnio",
                 "--affine-steps", "2", "--deformable-steps", "2"]) == 0
    started = [line for line in capsys.readouterr().err.splitlines() if " on 3 T1w image(s) " in line]
    assert len(started) == 1 and " training cnn on " in started[0], started
    assert sorted(p.name for p in (out / "models").glob("*.pt")) == ["bidsreg_model.pt"]


def test_train_fine_tunes_the_shipped_weights(bids_dataset, tmp_path, capsys):
    """``--initial-weights default`` starts from the shipped weights and says so in the checkpoint and card."""
    from bidsreg.data import DEFAULT_MODEL

    out = tmp_path / "out"
    common = [str(bids_dataset), str(out), "train", "--skip-bids-validation", "--affine-steps", "1",
              "--deformable-steps", "1"]
    assert main([*common, "--initial-weights", "default"]) == 0
    assert "from " + str(DEFAULT_MODEL) in capsys.readouterr().err
    shipped = torch.load(DEFAULT_MODEL, weights_only=True)["training"]
    payload = torch.load(out / "models" / "bidsreg_model.pt", weights_only=True)["training"]
    assert payload["initial"]["steps"] == shipped["steps"] and payload["steps"] == 2
    card = json.loads((out / "models" / "bidsreg_model.json").read_text())
    assert card["Training"]["InitialWeights"]["Steps"] == shipped["steps"]
    assert main(common) == exit_codes.BAD_INPUT  # a resume from random weights is another training
    assert "other initial weights" in capsys.readouterr().err


def test_train_refuses_initial_weights_it_cannot_use(bids_dataset, tmp_path, capsys):
    out, text = tmp_path / "out", tmp_path / "weights.pt"
    text.write_text("not a checkpoint")
    common = [str(bids_dataset), str(out), "train", "--skip-bids-validation", "--affine-steps", "1",
              "--deformable-steps", "1"]
    assert main([*common, "--initial-weights", str(text)]) == exit_codes.BAD_INPUT
    assert str(text) in capsys.readouterr().err and not (out / "models").exists()
    assert main([*common, "--initial-weights", "default", "--methods", "voxelmorph"]) == exit_codes.BAD_INPUT
    assert "two-stage network" in capsys.readouterr().err


def test_a_template_file_as_the_fixed_image(app, tmp_path):
    bids, labels = app["bids"], app["bids"] / "derivatives/manual"
    template = tmp_path / "tpl-Phantom_T1w.nii.gz"
    atlas = tmp_path / "tpl-Phantom_desc-phantom_dseg.nii.gz"
    shutil.copyfile(bids / "sub-01/anat/sub-01_T1w.nii.gz", template)
    shutil.copyfile(labels / "sub-01/anat/sub-01_desc-phantom_dseg.nii.gz", atlas)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--skip-bids-validation", "--fixed", str(template),
                 "--fixed-labels", str(atlas), "--labels", str(labels), "--labels-desc", "phantom",
                 "--participant-label", "02", "--methods", "cnn", "--model", str(app["out"] / "models/bidsreg_model.pt")])
    assert code == 0
    anat = out / "sub-02" / "anat"
    sidecar = json.loads((anat / "sub-02_space-Phantom_desc-cnn_T1w.json").read_text())
    assert sidecar["SpatialReference"] == str(template)
    assert (anat / "sub-02_from-Phantom_to-T1w_desc-cnn_mode-image_xfm.h5").is_file()
    table = pd.read_csv(anat / "sub-02_seg-phantom_desc-cnn_overlap.tsv", sep="\t")
    assert table["name"].iloc[0] == "octant-LPI"  # the lookup table of --labels names the template's labels too
    assert json.loads((anat / "sub-02_seg-phantom_desc-cnn_overlap.json").read_text())["Space"] == "Phantom"
