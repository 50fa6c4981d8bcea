"""The method table (bidsreg.methods.table): options derived from the configurations, and a new
method added as one module plus one row, run through the whole app."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from bidsreg.cli.parser import build_parser
from bidsreg.cli.run import main
from bidsreg.image import load_volume
from bidsreg.methods.base import Context, RegistrationResult, build_config, config_parameters, option
from bidsreg.methods.table import TABLE, Method, deformable, method_configs, options, reported_names, stage_names
from bidsreg.transform import Transform


def test_every_option_comes_from_a_configuration_field():
    found = {o.flag: o for o in options()}
    assert found["--ants-affine-iterations"].methods == ("antsaffine", "bspline", "demons", "antssyn")
    assert found["--demons-field-sigma"].type is float and not found["--demons-field-sigma"].many
    assert found["--demons-iterations"].default == (50, 30, 15) and found["--demons-iterations"].many
    assert found["--model"].methods == ("cnn", "cnnio") and found["--voxelmorph-model"].methods == ("voxelmorph",)
    assert found["--cnnio-iterations"].many and found["--cnnio-regularisation"].type is float
    assert reported_names() == ("original", "cnnaffine", "cnn", "cnnio", "antsaffine", "bspline", "demons", "antssyn",
                                "antssynquick", "antssynfull", "voxelmorph")
    assert [m for m in reported_names() if deformable(m)] == ["cnn", "cnnio", "bspline", "demons", "antssyn",
                                                              "antssynquick", "antssynfull", "voxelmorph"]
    with pytest.raises(ValueError, match="unknown method"):
        method_configs({}, ["elastic"])


@pytest.mark.parametrize("name", list(TABLE))
def test_every_configuration_round_trips_through_its_parameters(name, tmp_path):
    """What a workflow node carries (JSON-ready parameters) rebuilds the same configuration."""
    method = TABLE[name]
    config = method.config()
    if method.network is not None:
        config = dataclasses.replace(config, model=tmp_path / "model.pt")
    parameters = config_parameters(config)
    assert json.loads(json.dumps(parameters)) == parameters
    assert build_config(method.config, parameters) == config
    with pytest.raises(ValueError, match="no parameter"):
        build_config(method.config, {"no_such_field": 1})


# ---------------------------------------------------------------- a throw-away method: one module, one row


@dataclass(frozen=True)
class CentreConfig:
    """Parameters of the throw-away ``centre`` method."""

    threshold: float = option("--centre-threshold", "intensity fraction that counts as the brain", 0.1)


def _centre(path, threshold: float) -> np.ndarray:
    volume = load_volume(path)
    brain = np.argwhere(volume.data > threshold * volume.data.max())
    return volume.affine[:3, :3] @ brain.mean(0) + volume.affine[:3, 3]


def register_centres(fixed, moving, config: CentreConfig, context: Context) -> RegistrationResult:
    """Translate the fixed brain's centre onto the moving one's, with an (all-zero) field on the
    fixed grid, so that it is deformable and its Jacobian is measured."""
    matrix = np.eye(4)
    matrix[:3, 3] = _centre(moving, config.threshold) - _centre(fixed, config.threshold)
    grid = load_volume(fixed).grid
    zero = np.zeros((*grid.shape, 3), np.float32)
    return RegistrationResult(Transform(matrix, zero, zero, grid.affine), 0.01,
                              {"threshold": config.threshold, "threads": context.threads})


def test_a_new_method_is_one_function_one_configuration_and_one_row(bids_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(TABLE, "centre", Method(
        "centre", "translation between the brains' centres", register_centres, CentreConfig, True, 0.5,
        text="The centre method translates the brains' centres onto each other ({parameters})."))
    out = tmp_path / "out"
    code = main([str(bids_dataset), str(out), "participant", "--skip-bids-validation", "--fixed", "sub-01",
                 "--labels", str(bids_dataset / "derivatives/manual"), "--labels-desc", "phantom",
                 "--methods", "centre", "--centre-threshold", "0.2", "--omp-nthreads", "2", "--plugin", "Linear"])
    assert code == 0, capsys.readouterr().err
    anat = out / "sub-02" / "anat"
    sidecar = json.loads((anat / "sub-02_from-T1w_to-sub01_desc-centre_mode-image_xfm.json").read_text())
    assert sidecar["parameters"] == {"threshold": 0.2, "threads": 2} and sidecar["FoldingPercent"] == 0
    assert (anat / "sub-02_space-sub01_desc-centre_jacobian.nii.gz").is_file()
    assert main([str(bids_dataset), str(out), "group"]) == 0
    methods = pd.read_csv(out / "group" / "methods.tsv", sep="\t", na_values="n/a")
    assert list(methods["method"]) == ["original", "centre"]
    dice = methods.set_index("method")["dice_mean"]
    assert dice["centre"] > dice["original"]
    assert "The centre method translates" in (out / "group" / "report.html").read_text()
    assert "--centre-threshold" in build_parser().format_help()


def test_stage_names_lists_each_reported_name_once_in_order():
    assert stage_names(["cnn", "cnnio", "antssyn"]) == ["cnnaffine", "cnn", "cnnio", "antssyn"]
