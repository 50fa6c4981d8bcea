"""The README's demo, small: bidsreg-demo-data, then participant (cnn with the shipped default
weights, antspyx Affine and SyN with their defaults) and group; the report checked in headless
Chromium as a person sees it. Also the shipped weights themselves and when the app warns
about them."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from bidsreg import exit_codes
from bidsreg.cli.demo import main as demo_main
from bidsreg.cli.inputs import resolve_model
from bidsreg.cli.run import main
from bidsreg.config import Config
from bidsreg.data import DEFAULT_MODEL
from bidsreg.methods.model_card import read_model_card

from tests.browser import open_in_chromium

METHODS = ("cnnaffine", "cnn", "antsaffine", "antssyn")


def test_shipped_weights_are_small_finished_and_described():
    assert DEFAULT_MODEL.stat().st_size < 5 * 2**20
    payload = torch.load(DEFAULT_MODEL, weights_only=True)
    assert payload["training"]["complete"]
    card = read_model_card(DEFAULT_MODEL)
    assert card["SHA256"] == hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    assert card["TrainingData"]["RealSubjects"] == "none" and card["Training"]["Steps"] == payload["training"]["steps"]
    demo = card["Evaluation"]["DemoCohort"]
    assert demo["cnn"] > demo["original"] and {"antsaffine", "antssyn"} <= set(demo)
    real = card["Evaluation"]["RealData"]
    assert real["Dataset"].startswith("not measured") or {"cnn", "cnnio", "antsaffine"} <= set(real)
    assert (DEFAULT_MODEL.parent / card["LossCurve"]).is_file()


def _config(bids: Path, out: Path) -> Config:
    return Config(bids_dir=bids, output_dir=out, analysis_level="participant")


def test_shipped_weights_are_the_default_and_warned_about_on_real_data(bids_dataset, tmp_path, caplog):
    """A method that runs the shipped weights is warned about on real data unless the model card
    shows it above antspyx Affine on real brains."""
    caplog.set_level(logging.INFO, logger="bidsreg")
    real = read_model_card(DEFAULT_MODEL)["Evaluation"]["RealData"]
    for method in ("cnn", "cnnio"):
        caplog.clear()
        assert resolve_model(_config(bids_dataset, tmp_path / "out"), method) == DEFAULT_MODEL
        warned = [r for r in caplog.records if r.levelno == logging.WARNING and "shipped default weights" in r.message]
        beats = method in real and real[method] > real["antsaffine"]
        assert len(warned) == (0 if beats else 1), method
        assert any("using the default weights shipped" in r.message for r in caplog.records)


def test_a_trained_model_wins_over_the_shipped_one(bids_dataset, tmp_path):
    models = tmp_path / "out" / "models"
    models.mkdir(parents=True)
    torch.save(torch.load(DEFAULT_MODEL, weights_only=True), models / "bidsreg_model.pt")
    assert resolve_model(_config(bids_dataset, tmp_path / "out"), "cnn") == models / "bidsreg_model.pt"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """The README's demo commands on its first 3 subjects (the README makes 4)."""
    root = tmp_path_factory.mktemp("demo")
    bids, out = root / "bids", root / "out"
    codes = {"demo": demo_main([str(bids), "--subjects", "3"])}
    codes["participant"] = main([str(bids), str(out), "participant", "--fixed", "sub-01", "--labels",
                                 str(bids / "derivatives" / "labels"), "--labels-desc", "DK",
                                 "--methods", "cnn,antsaffine,antssyn", "--nprocs", "2"])
    codes["group"] = main([str(bids), str(out), "group"])
    return {"bids": bids, "out": out, "codes": codes}


@pytest.mark.slow
def test_demo_runs_end_to_end(demo):
    assert demo["codes"] == {"demo": exit_codes.OK, "participant": exit_codes.OK, "group": exit_codes.OK}


@pytest.mark.slow
def test_demo_registers_better_than_the_start_with_every_method(demo):
    methods = pd.read_csv(demo["out"] / "group" / "methods.tsv", sep="\t").set_index("method")
    assert set(METHODS) <= set(methods.index)
    for method in METHODS:
        assert methods.loc[method, "dice_mean"] > methods.loc["original", "dice_mean"] + 0.1, method
    assert methods.loc["cnn", "dice_mean"] > methods.loc["cnnaffine", "dice_mean"]


@pytest.mark.slow
def test_demo_uses_the_shipped_weights_without_the_real_data_warning(demo):
    sidecar = next((demo["out"] / "sub-02" / "anat").glob("*_from-T1w_to-sub01_desc-cnn_mode-image_xfm.json"))
    assert json.loads(sidecar.read_text())["parameters"]["model"] == DEFAULT_MODEL.name


@pytest.mark.slow
def test_demo_report_shows_figures_and_tables_in_a_browser(demo):
    page = open_in_chromium(demo["out"] / "group" / "report.html")
    assert page.title == "bidsreg group report"
    assert len(page.images) >= 4
    broken = [image for image in page.images if not image["complete"] or image["naturalWidth"] == 0]
    assert not broken
    tables = {table["heading"]: table for table in page.tables}
    comparison = tables["Method comparison (mean ± sd over subjects)"]
    assert comparison["rows"] == 5 and "Dice" in comparison["header"]  # original + the 4 methods
    assert tables["CNN: original / global / registered"]["rows"] == 3
    assert tables["Per region (mean Dice over subjects, the hardest first)"]["rows"] > 50
    assert "Methods" in page.headings and "Before / after" in page.headings
    assert page.screenshot[:4] == b"\x89PNG"
