"""A participant run from a process whose torch thread pool already exists (a notebook that
registered a pair, a library user) must not hang: MultiProc's workers must not be forked from it
(issue 17: workers forked after torch's OpenMP pool started froze in ``grid_sample``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

#: Seconds the run may take here (about 25 s on 2 cores); a hang is cut at this.
TIMEOUT = 150


def test_participant_with_two_processes_after_torch_ran_threads_finishes(bids_dataset, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(2)
        volume = torch.rand(1, 1, 96, 96, 96)
        grid = torch.rand(1, 96, 96, 96, 3) * 2 - 1
        F.grid_sample(volume, grid, align_corners=True)  # starts torch's thread pool in this process
        F.conv3d(volume, torch.rand(8, 1, 3, 3, 3))
        from bidsreg.cli.run import main
        sys.exit(main([{str(bids_dataset)!r}, {str(tmp_path / 'out')!r}, "participant", "--fixed", "sub-01",
                       "--methods", "cnn", "--nprocs", "2", "--omp-nthreads", "2", "--skip-bids-validation",
                       "-w", {str(tmp_path / 'work')!r}]))
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, cwd=tmp_path)
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the run and its workers
        output, _ = process.communicate()
        pytest.fail(f"participant --nprocs 2 --omp-nthreads 2 hung for {TIMEOUT} s after torch ran threads:\n{output[-2000:]}")
    assert process.returncode == 0, output[-2000:]
    written = sorted(p.name for p in (tmp_path / "out").rglob("*desc-cnn_T1w.nii.gz"))
    assert written == ["sub-02_space-sub01_desc-cnn_T1w.nii.gz", "sub-03_space-sub01_desc-cnn_T1w.nii.gz"]
