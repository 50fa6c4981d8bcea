"""The run's configuration (bidsreg.config): frozen, what it hands down, stored as JSON."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from bidsreg.config import MAX_DEFAULT_THREADS, Config, usable_cpus, write_config
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
    with pytest.raises(ValueError, match="compact, full"):
        config.replace(output_resolution="1mm")


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


def test_the_defaults_use_the_cpus_the_process_may_use(tmp_path):
    cpus = len(os.sched_getaffinity(0))
    assert usable_cpus({}) == cpus
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "1"}) == 1  # a SLURM job's share of the node
    assert usable_cpus({"SLURM_CPUS_PER_TASK": str(cpus + 4)}) == cpus  # never more than the affinity
    assert usable_cpus({"SLURM_CPUS_PER_TASK": ""}) == cpus
    config = Config(tmp_path / "bids", tmp_path / "out", "train")
    assert config.nprocs == usable_cpus() and config.omp_nthreads == min(config.nprocs, MAX_DEFAULT_THREADS)
    assert Config(tmp_path / "bids", tmp_path / "out", "train", nprocs=32).omp_nthreads == MAX_DEFAULT_THREADS
    assert Config(tmp_path / "bids", tmp_path / "out", "train", nprocs=4, omp_nthreads=1).context.threads == 1
