"""Participant workflow graphs (built, not run) for each combination of methods."""
from __future__ import annotations

import itertools

import pytest

from bidsreg.bids.layout import T1wInput
from bidsreg.methods.base import Context
from bidsreg.methods.table import TABLE, deformable, method_configs, method_names, reported_names
from bidsreg.workflows.participant import init_participant_wf, workflow_name

ALL = method_names()
COMBINATIONS = [c for n in (1, 2, len(ALL)) for c in itertools.combinations(ALL, n)]
#: The registration node of each reported method.
SOURCE = {m: f"register_{m}" for m in reported_names() if m != "original"}


@pytest.mark.parametrize("methods", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
@pytest.mark.parametrize("labels", [True, False], ids=["labels", "nolabels"])
def test_one_branch_per_method_feeding_the_same_evaluation(build, methods, labels, tmp_path):
    workflow = build(methods, labels, tmp_path)
    names = set(workflow.list_node_names())
    branches = [stage.name for m in methods for stage in TABLE[m].stages]
    for method in branches:
        evaluate = {f"evaluate_{method}_wf.{n}" for n in ("warp_t1w", "ds_t1w", "ds_forward", "ds_inverse")}
        assert evaluate <= names
        assert (f"evaluate_{method}_wf.jacobian" in names) == deformable(method)
        assert (f"evaluate_{method}_wf.overlap" in names) == labels
    for method in SOURCE:
        assert (SOURCE[method] in names) == (method in branches)
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
        out = (f"{workflow.name}.evaluate_{method}_wf.outputnode", f"{workflow.name}.outputnode")
        assert ("forward_transform", f"xfm_{method}") in edges[out]
    # The CNN's local stage starts from its global one.
    if "cnn" in methods:
        chain = edges[(f"{workflow.name}.register_cnnaffine", f"{workflow.name}.register_cnn")]
        assert {("forward_transform", "start_transform"), ("report", "start_report")} <= set(chain)


def test_parameters_reach_their_method_only(build, files, tmp_path):
    workflow = build(("demons", "antssyn", "cnn"), tmp_path=tmp_path, context=Context(seed=5, threads=2, device="cpu"))
    assert workflow.get_node("register_demons").inputs.parameters["iterations"] == [5, 5, 5]
    # Each node gets the context its method reads: the seed for ANTs, the device for the networks.
    antssyn, cnn = workflow.get_node("register_antssyn").inputs, workflow.get_node("register_cnn").inputs
    assert (antssyn.seed, antssyn.num_threads, antssyn.device) == (5, 2, "auto")
    assert (cnn.seed, cnn.num_threads, cnn.device) == (0, 2, "cpu")
    assert workflow.get_node("register_antssyn").inputs.parameters == {"affine_iterations": None,
                                                                        "syn_iterations": None}
    # A file a configuration names is hashed with the step (a retrained model reruns it).
    assert workflow.get_node("register_cnn").inputs.parameter_files == [str(files["model"])]


@pytest.mark.parametrize("method", ["cnn", "voxelmorph"])
def test_networks_need_a_model_and_methods_are_checked(build, files, method, tmp_path):
    with pytest.raises(ValueError, match="need a model"):
        init_participant_wf(t1w=T1wInput(files["t1w"], {"subject": "02"}), fixed=files["fixed"],
                            methods=method_configs({}, [method]), context=Context(), output_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown method"):
        init_participant_wf(t1w=T1wInput(files["t1w"], {"subject": "02"}), fixed=files["fixed"],
                            methods={"elastic": None}, context=Context(), output_dir=tmp_path)


def test_workflow_names_have_no_dashes():
    assert workflow_name({"subject": "10", "session": "a", "run": 2}) == "sub_10_ses_a_run_2_wf"


def test_a_brain_mask_extracts_the_brain_before_every_method(build, files, tmp_path):
    workflow = build(ALL, tmp_path=tmp_path, mask=files["labels"])
    graph = workflow._create_flat_graph()
    fed = {v.fullname.split(".", 1)[1] for u, v in graph.edges() if u.name == "mask_t1w"}
    assert {*SOURCE.values(), *(f"evaluate_{m}_wf.inputnode" for m in SOURCE)} <= fed
    sources = workflow.get_node("evaluate_cnn_wf.ds_t1w").inputs.metadata["Sources"]
    assert sources == [str(files["t1w"]), str(files["labels"])]
