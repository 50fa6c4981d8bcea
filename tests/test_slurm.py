"""The participant level through Nipype's SLURM plugins, on a real SLURM cluster.

Needs ``sbatch`` and a controller that answers (``SLURM_CONF``): ``.ci/run`` starts a one-node
cluster on localhost (``.ci/slurm-cluster``); elsewhere these tests skip, saying why. Jobs are
read back with ``scontrol show job`` (the cluster keeps them a day; no accounting daemon).
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time

import pandas as pd
import pytest

from bidsreg import exit_codes
from bidsreg.cli.run import main
from bidsreg.demo.dataset import write_demo_dataset
from bidsreg.methods.table import TABLE
from bidsreg.workflows.execution import MIN_JOB_GB

from tests.daemons import daemon_missing

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
_FIELD = re.compile(r"(\w+)=(\S*)")


def _jobs() -> dict[str, dict[str, str]]:
    """Every job the controller still knows, by id: ``scontrol show job``'s fields."""
    text = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=True).stdout
    jobs = [dict(_FIELD.findall(line)) for line in text.splitlines() if line.startswith("JobId=")]
    return {job["JobId"]: job for job in jobs}


def _megabytes(text: str) -> float:
    """A SLURM memory figure (``1844M``, ``2G``) in MB."""
    return float(text[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[text[-1]]


@pytest.fixture(scope="module")
def cluster() -> None:
    missing = [tool for tool in ("sbatch", "squeue", "scontrol") if shutil.which(tool) is None]
    if missing:
        daemon_missing(f"no SLURM client tools ({', '.join(missing)}; Debian: apt-get install slurm-wlm)")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        daemon_missing("no SLURM controller answers (scontrol ping); start one, e.g. .ci/slurm-cluster start DIR, "
                       "and export the SLURM_CONF it prints")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("slurm") / "bids", n_subjects=3, voxel_size=4.0)


@pytest.mark.parametrize(("plugin", "methods"), [("SLURM", "cnn,antsaffine"), ("SLURMGraph", "antsaffine")])
def test_participant_level_runs_as_completed_slurm_jobs(cluster, dataset, plugin, methods, tmp_path):
    before = set(_jobs())
    out = tmp_path / "out"
    code = main([str(dataset), str(out), "participant", "--fixed", "sub-01", "--participant-label", "02", "03",
                 "--labels", str(dataset / "derivatives" / "labels"), "--labels-desc", "DK", "--methods", methods,
                 "--plugin", plugin, "--plugin-args", json.dumps({"sbatch_args": "--time=30"}),
                 "-w", str(tmp_path / "work")])
    assert code == exit_codes.OK
    deadline = time.monotonic() + 600  # SLURMGraph returns once the graph is submitted
    while True:
        jobs = {key: job for key, job in _jobs().items() if key not in before}
        if all(job["JobState"] not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING") for job in jobs.values()):
            break
        assert time.monotonic() < deadline, f"SLURM jobs still running: {jobs}"
        time.sleep(2)
    assert jobs, "no job was submitted"
    failed = {job["JobName"]: job["JobState"] for job in jobs.values() if job["JobState"] != "COMPLETED"}
    assert not failed, failed
    # each registration job asked for its method's memory estimate
    registrations = [job for job in jobs.values() if "register_antsaffine" in job["JobName"]]
    assert len(registrations) == 2
    memory = math.ceil(max(TABLE["antsaffine"].memory_gb, MIN_JOB_GB) * 1024)
    assert all(_megabytes(job["MinMemoryNode"]) == memory and job["TimeLimit"] == "00:30:00" for job in registrations)
    for subject in ("02", "03"):
        anat = out / f"sub-{subject}" / "anat"
        for method in methods.split(","):
            assert (anat / f"sub-{subject}_space-sub01_desc-{method}_T1w.nii.gz").stat().st_size > 0
            overlap = pd.read_csv(anat / f"sub-{subject}_seg-DK_desc-{method}_overlap.tsv", sep="\t", na_values="n/a")
            assert overlap["dice"].mean() > 0.3
