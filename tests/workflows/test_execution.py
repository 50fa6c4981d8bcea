"""Each SLURM job's own sbatch options from its node's estimates (bidsreg.workflows.execution)."""
from __future__ import annotations

import math
import os

import pytest

from nipype.interfaces.utility import IdentityInterface

from bidsreg.methods.table import TABLE
from bidsreg.workflows.execution import MIN_JOB_GB, node_sbatch_args, prepare_slurm


def test_sbatch_options_come_from_the_estimates_unless_the_run_sets_them():
    assert node_sbatch_args(2.5, 4) == "--mem=2560M --cpus-per-task=4"
    assert node_sbatch_args(0.2, 1) == f"--mem={int(MIN_JOB_GB * 1024)}M --cpus-per-task=1"
    assert node_sbatch_args(3.0, 2, "--time=1:00:00 --mem=16G") == "--cpus-per-task=2"
    assert node_sbatch_args(3.0, 2, "--mem-per-cpu 4G -c 8") == ""
    assert node_sbatch_args(3.0, 2, "--comment=--mem") == "--mem=3072M --cpus-per-task=2"
    with pytest.raises(ValueError, match="at least one CPU"):
        node_sbatch_args(1.0, 0)


@pytest.mark.parametrize("plugin", ["SLURM", "SLURMGraph"])
def test_every_job_asks_for_its_node_memory_and_cpus(build, plugin, tmp_path):
    workflow = build(("cnn", "demons"), tmp_path=tmp_path)
    jobs = prepare_slurm(workflow, plugin, {"sbatch_args": "--time=2:00:00"})
    nodes = {name: workflow.get_node(name) for name in workflow.list_node_names()}
    # Nipype takes the identity nodes (inputnode, outputnode) out of the graph it runs.
    nodes = {name: node for name, node in nodes.items() if not isinstance(node.interface, IdentityInterface)}
    submitted = {name: node for name, node in nodes.items() if not node.run_without_submitting}
    assert jobs == len(submitted) and os.environ["LOGNAME"]
    demons = nodes["register_demons"].plugin_args["sbatch_args"]
    assert f"--mem={math.ceil(max(TABLE['demons'].memory_gb, MIN_JOB_GB) * 1024)}M" in demons and demons.startswith(" ")
    assert all("--cpus-per-task=" in node.plugin_args["sbatch_args"] for node in submitted.values())
    sinks = [name for name in nodes if name.split(".")[-1].startswith("ds_")]
    assert sinks and all(nodes[name].run_without_submitting == (plugin == "SLURM") for name in sinks)
    with pytest.raises(ValueError, match="not a SLURM plugin"):
        prepare_slurm(workflow, "MultiProc", {})
