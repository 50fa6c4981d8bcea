"""A participant run killed (SIGKILL) or stopped (SIGTERM, a cluster's time limit) leaves no
process behind, says how to resume when it can, and the rerun completes, removing the partial
files of the killed run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bidsreg.atomic import _host

pytestmark = pytest.mark.slow

#: Seconds to wait for a step to start, for the processes to end, for a run to finish.
START, END, RUN = 120, 20, 300


def _command(bids: Path, out: Path) -> list[str]:
    code = "import sys; from bidsreg.cli.run import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, str(bids), str(out), "participant", "--fixed", "sub-01",
            "--participant-label", "02", "--methods", "antssyn", "--nprocs", "2", "--skip-bids-validation",
            "--labels", str(bids / "derivatives/manual"), "--labels-desc", "phantom"]


def _group_members(group: int) -> list[int]:
    """The live processes of a process group (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _start_and_interrupt(bids: Path, out: Path, number: int) -> tuple[int, str, int]:
    process = subprocess.Popen(_command(bids, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    node = out / "work" / "bidsreg_wf" / "sub_02_wf" / "register_antssyn"
    deadline = time.monotonic() + START
    while not list(node.glob("_0x*_unfinished.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before the registration started"
    os.kill(process.pid, number)
    output, _ = process.communicate(timeout=RUN)
    deadline = time.monotonic() + END
    while _group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _group_members(process.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind by {signal.Signals(number).name}: {left}\n{output[-2000:]}"
    return process.returncode, output, process.pid


def _rerun_completes(bids: Path, out: Path, killed: int) -> None:
    """The rerun completes, and removes what a kill during an output copy would have left."""
    stale = out / "sub-02" / "anat" / f".sub-02_space-sub01_desc-antssyn_T1w.nii.gz.{_host()}.{killed}.tmp.nii.gz"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"partial")
    done = subprocess.run(_command(bids, out), capture_output=True, text=True, timeout=RUN)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(1 of 1 registrations)" in done.stderr  # the workers log at the run's levels: no line per step
    assert "[Node]" not in done.stderr and "nipype.workflow INFO" not in done.stderr, done.stderr[-2000:]
    names = {p.name for p in (out / "sub-02" / "anat").iterdir()}
    assert {"sub-02_space-sub01_desc-antssyn_T1w.nii.gz", "sub-02_from-T1w_to-sub01_desc-antssyn_mode-image_xfm.h5",
            "sub-02_from-sub01_to-T1w_desc-antssyn_mode-image_xfm.h5",
            "sub-02_seg-phantom_desc-antssyn_overlap.tsv"} <= names
    assert not [p for p in out.rglob(".*.tmp*")], "temporary files left in the outputs"


def test_sigkill_of_the_run_leaves_no_worker_and_the_rerun_completes(bids_dataset, tmp_path):
    code, _, killed = _start_and_interrupt(bids_dataset, tmp_path / "out", signal.SIGKILL)
    assert code == -signal.SIGKILL
    _rerun_completes(bids_dataset, tmp_path / "out", killed)


def test_sigterm_stops_the_workers_and_says_how_to_resume(bids_dataset, tmp_path):
    code, output, killed = _start_and_interrupt(bids_dataset, tmp_path / "out", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, output[-2000:]
    assert "stopped by SIGTERM" in output and "run the same command again to resume" in output
    _rerun_completes(bids_dataset, tmp_path / "out", killed)
