"""The run's configuration (bidsreg.config): frozen, what it hands down, stored as JSON."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bidsreg.config import Config, write_config
from bidsreg.methods.base import Context
from bidsreg.methods.table import method_configs


def test_a_config_is_frozen_and_hands_down_its_parts(tmp_path):
    config = Config(tmp_path / "bids", tmp_path / "out", "participant", methods=("demons",),
                    method_configs=method_configs({"--demons-iterations": (3, 2, 1)}, ["demons"]), omp_nthreads=3,
                    seed=7, device="cpu", labels_desc="DKT31aseg")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1
    assert config.context == Context(seed=7, threads=3, device="cpu")
    assert config.work == tmp_path / "out" / "work" and config.replace(work_dir=tmp_path / "w").work == tmp_path / "w"
    assert config.seg == "DKT31aseg" and config.replace(labels_desc=None).seg == "labels"


def test_the_stored_config_is_json_with_each_method_configuration(tmp_path):
    config = Config(tmp_path / "bids", tmp_path / "out", "participant", participant_label=("02",),
                    methods=("cnn", "demons"), method_configs=method_configs({"--model": tmp_path / "m.pt"},
                                                                             ["cnn", "demons"]))
    path = write_config(config)
    assert path.parent == tmp_path / "out" / "logs" and path.name.startswith("config_participant_")
    stored = json.loads(path.read_text())
    assert stored["bids_dir"] == str(tmp_path / "bids") and stored["participant_label"] == ["02"]
    assert stored["method_configs"]["cnn"] == {"model": str(tmp_path / "m.pt")}
    assert stored["method_configs"]["demons"]["iterations"] == [50, 30, 15]
    assert set(stored) == {field.name for field in dataclasses.fields(Config)}
    assert Path(stored["output_dir"]) == config.output_dir
