"""The Registration interface (bidsreg.interfaces.registration): one stage of a method of the table,
its transform pair and report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bidsreg.data import DEFAULT_MODEL
from bidsreg.interfaces.registration import Registration
from bidsreg.transform import Transform


def test_a_network_node_run_in_process_keeps_the_callers_thread_count(phantom_files, tmp_path, monkeypatch):
    """A network stage runs torch on its num_threads and gives the caller its own back
    (Nipype's Linear plugin and library use run nodes in the calling process)."""
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    caller = 2 if before != 2 else 1
    torch.set_num_threads(caller)
    try:
        result = Registration(fixed=phantom_files["fixed"], moving=phantom_files["moving"], method="cnn",
                              stage="cnnaffine", parameters={"model": str(DEFAULT_MODEL)}, num_threads=3 - caller).run()
        assert torch.get_num_threads() == caller
    finally:
        torch.set_num_threads(before)
    report = json.loads(Path(result.outputs.report).read_text())
    assert report["method"] == "cnnaffine" and report["parameters"] == {"model": DEFAULT_MODEL.name, "device": "auto"}
    assert not Transform.read(result.outputs.forward_transform, result.outputs.inverse_transform).deformable


def test_a_stage_starts_from_the_one_before_and_counts_its_seconds(phantom_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = tmp_path / "start.h5"
    matrix = np.eye(4)
    matrix[:3, 3] = [2.0, -1.0, 0.5]
    Transform(matrix).write(start)
    report = tmp_path / "start.json"
    report.write_text(json.dumps({"method": "cnnaffine", "seconds": 100.0, "parameters": {}}))
    result = Registration(fixed=phantom_files["fixed"], moving=phantom_files["deformed"], method="cnn",
                          parameters={"model": str(DEFAULT_MODEL)}, start_transform=str(start),
                          start_report=str(report)).run()
    transform = Transform.read(result.outputs.forward_transform, result.outputs.inverse_transform)
    np.testing.assert_allclose(transform.affine, matrix)
    assert transform.deformable and transform.inverse_displacement is not None
    assert json.loads(Path(result.outputs.report).read_text())["seconds"] > 100.0


def test_unknown_parameters_are_refused(phantom_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="no parameter"):
        Registration(fixed=phantom_files["fixed"], moving=phantom_files["moving"], method="antsaffine",
                     parameters={"iterations": [3]}).run()
