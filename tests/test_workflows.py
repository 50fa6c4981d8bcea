"""Participant workflow graphs (built, not run) for each combination of methods."""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import pytest

from bidsreg.bids.layout import FixedImage
from bidsreg.methods import METHODS, REPORTED, TABLE
from bidsreg.workflows.execution import MIN_JOB_GB, node_sbatch_args, prepare_slurm
from bidsreg.workflows.participant import RunSettings, init_participant_wf, workflow_name

ALL = METHODS
COMBINATIONS = [c for n in (1, 2, len(ALL)) for c in itertools.combinations(ALL, n)]
#: The registration node of each reported method.
SOURCE = {"cnn": "cnn_local", "cnnaffine": "cnn_global", **{m: f"register_{m}" for m in ALL if m != "cnn"}}


@pytest.fixture()
def files(bids_dataset) -> dict:
    labels = bids_dataset / "derivatives/manual"
    return {
        "t1w": bids_dataset / "sub-02/anat/sub-02_T1w.nii.gz",
        "labels": labels / "sub-02/anat/sub-02_desc-phantom_dseg.nii.gz",
        "fixed": FixedImage(bids_dataset / "sub-01/anat/sub-01_T1w.nii.gz", "sub01", "sub-01",
                            labels / "sub-01/anat/sub-01_desc-phantom_dseg.nii.gz", labels / "desc-phantom_dseg.tsv"),
        "model": bids_dataset / "README",  # any existing file: the graph is built, not run
    }


def _build(files, methods, labels=True, tmp_path=Path("/tmp")):
    return init_participant_wf(
        t1w=files["t1w"], entities={"subject": "02", "datatype": "anat"}, fixed=files["fixed"],
        settings=RunSettings(methods=methods, models={m: files["model"] for m in methods if m in TABLE and TABLE[m].model},
                             parameters={"demons": {"iterations": [5, 5, 5]}}, seg="phantom"),
        output_dir=tmp_path,
        labels=files["labels"] if labels else None,
    )


@pytest.mark.parametrize("methods", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
@pytest.mark.parametrize("labels", [True, False], ids=["labels", "nolabels"])
def test_one_branch_per_method_feeding_the_same_evaluation(files, methods, labels, tmp_path):
    workflow = _build(files, methods, labels, tmp_path)
    names = set(workflow.list_node_names())
    branches = [m for m in REPORTED if m in methods or (m == "cnnaffine" and "cnn" in methods)]
    for method in branches:
        evaluate = {f"evaluate_{method}_wf.{n}" for n in ("warp_t1w", "ds_t1w", "ds_forward", "ds_inverse")}
        assert evaluate <= names
        assert (f"evaluate_{method}_wf.jacobian" in names) == (method not in ("cnnaffine", "antsaffine"))
        assert (f"evaluate_{method}_wf.overlap" in names) == labels
    for method in ALL:
        assert (SOURCE[method] in names) == (method in methods)
    assert ("evaluate_original_wf.overlap" in names) == labels
    assert not any(n.startswith("evaluate_") and n.split(".")[0][9:-3] not in [*branches, "original"] for n in names)
    # Each branch's transforms go to its own evaluation, through ITK files.
    graph = workflow._create_flat_graph()
    edges = {(u.fullname, v.fullname): d["connect"] for u, v, d in graph.edges(data=True)}
    for method in branches:
        key = (f"{workflow.name}.{SOURCE[method]}", f"{workflow.name}.evaluate_{method}_wf.inputnode")
        assert ("forward_transform", "forward_transform") in edges[key]
        inner = (f"{workflow.name}.evaluate_{method}_wf.inputnode", f"{workflow.name}.evaluate_{method}_wf.warp_t1w")
        assert ("forward_transform", "transform") in edges[inner]


def test_parameters_reach_their_method_only(files, tmp_path):
    workflow = _build(files, ("demons", "antssyn"), tmp_path=tmp_path)
    assert workflow.get_node("register_demons").inputs.parameters == {"iterations": [5, 5, 5]}
    assert workflow.get_node("register_antssyn").inputs.parameters == {}


@pytest.mark.parametrize("method", ["cnn", "voxelmorph"])
def test_networks_need_a_model_and_methods_are_checked(files, method, tmp_path):
    with pytest.raises(ValueError, match="need a model"):
        init_participant_wf(t1w=files["t1w"], entities={"subject": "02"}, fixed=files["fixed"],
                            settings=RunSettings(methods=(method,)), output_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown method"):
        _build(files, ("elastic",), tmp_path=tmp_path)


def test_workflow_names_have_no_dashes():
    assert workflow_name({"subject": "10", "session": "a", "run": 2}) == "sub_10_ses_a_run_2_wf"


def test_a_brain_mask_extracts_the_brain_before_every_method(files, bids_dataset, tmp_path):
    workflow = init_participant_wf(
        t1w=files["t1w"], entities={"subject": "02"}, fixed=files["fixed"],
        settings=RunSettings(methods=ALL, models={"cnn": files["model"], "voxelmorph": files["model"]}),
        output_dir=tmp_path, mask=files["labels"], skull_stripped=False,
    )
    graph = workflow._create_flat_graph()
    fed = {v.name for u, v in graph.edges() if u.name == "mask_t1w"}
    assert {*SOURCE.values(), "inputnode"} <= fed


def test_mask_image_interface(bids_dataset, tmp_path, monkeypatch):
    import nibabel as nb
    import numpy as np

    from bidsreg.interfaces.apply import MaskImage

    monkeypatch.chdir(tmp_path)
    labels = bids_dataset / "derivatives/manual/sub-02/anat/sub-02_desc-phantom_dseg.nii.gz"
    result = MaskImage(in_file=str(bids_dataset / "sub-02/anat/sub-02_T1w.nii.gz"), mask=str(labels)).run()
    brain = np.asarray(nb.load(result.outputs.out_file).dataobj)
    mask = np.asarray(nb.load(labels).dataobj) > 0
    assert np.all(brain[~mask] == 0) and np.all(brain[mask] > 0)


# ---------------------------------------------------------------- SLURM: each job's own sbatch options


def test_sbatch_options_come_from_the_estimates_unless_the_run_sets_them():
    assert node_sbatch_args(2.5, 4) == "--mem=2560M --cpus-per-task=4"
    assert node_sbatch_args(0.2, 1) == f"--mem={int(MIN_JOB_GB * 1024)}M --cpus-per-task=1"
    assert node_sbatch_args(3.0, 2, "--time=1:00:00 --mem=16G") == "--cpus-per-task=2"
    assert node_sbatch_args(3.0, 2, "--mem-per-cpu 4G -c 8") == ""
    assert node_sbatch_args(3.0, 2, "--comment=--mem") == "--mem=3072M --cpus-per-task=2"
    with pytest.raises(ValueError, match="at least one CPU"):
        node_sbatch_args(1.0, 0)


@pytest.mark.parametrize("plugin", ["SLURM", "SLURMGraph"])
def test_every_job_asks_for_its_node_memory_and_cpus(files, plugin, tmp_path):
    workflow = _build(files, ("cnn", "demons"), tmp_path=tmp_path)
    jobs = prepare_slurm(workflow, plugin, {"sbatch_args": "--time=2:00:00"})
    nodes = {name: workflow.get_node(name) for name in workflow.list_node_names()}
    submitted = {name: node for name, node in nodes.items() if not node.run_without_submitting}
    assert jobs == len(submitted) and os.environ["LOGNAME"]
    demons = nodes["register_demons"].plugin_args["sbatch_args"]
    assert f"--mem={math.ceil(max(TABLE['demons'].memory_gb, MIN_JOB_GB) * 1024)}M" in demons and demons.startswith(" ")
    assert all("--cpus-per-task=" in node.plugin_args["sbatch_args"] for node in submitted.values())
    sinks = [name for name in nodes if name.split(".")[-1].startswith("ds_")]
    assert sinks and all(nodes[name].run_without_submitting == (plugin == "SLURM") for name in sinks)
    with pytest.raises(ValueError, match="not a SLURM plugin"):
        prepare_slurm(workflow, "MultiProc", {})
