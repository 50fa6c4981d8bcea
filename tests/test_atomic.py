"""Atomic outputs and the clean-up of the partial files killed processes left (bidsreg.atomic)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bidsreg.atomic import _host, atomic_output, process_running, remove_stale_temporaries


def test_a_failed_write_leaves_the_earlier_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub-02_T1w.nii.gz"
    target.write_text("earlier")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".sub-02_T1w.nii.gz.")
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == [target.name]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_stale_temporaries_of_dead_processes_on_this_host_are_removed(tmp_path):
    dead, host = _dead_pid(), _host()
    assert not process_running(dead) and process_running(os.getpid())
    anat = tmp_path / "sub-02" / "anat"
    anat.mkdir(parents=True)
    stale = anat / f".sub-02_desc-cnn_T1w.nii.gz.{host}.{dead}.tmp.nii.gz"
    live = anat / f".sub-02_desc-cnn_xfm.h5.{host}.{os.getpid()}.tmp.h5"
    elsewhere = anat / f".sub-02_desc-cnn_overlap.tsv.node17.{dead}.tmp.tsv"  # a cluster job's, still writing
    work = tmp_path / "work"
    work.mkdir()
    in_work = work / f".x.tsv.{host}.{dead}.tmp.tsv"
    for path in (stale, live, elsewhere, in_work):
        path.write_text("partial")
    assert remove_stale_temporaries(tmp_path, skip=(work,)) == [stale]
    assert not stale.exists() and live.exists() and elsewhere.exists() and in_work.exists()
