"""A disk that fills during a participant run: exit 74 with the file and the cause, no result
half-written, earlier outputs untouched, and the rerun (with space again) completes."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from bidsreg import exit_codes
from bidsreg.cli.run import main

pytestmark = pytest.mark.slow

#: Every file of one deformable result (sub-02, antssyn, with labels), by suffix.
RESULT = ("desc-antssyn_T1w.nii.gz", "desc-antssyn_mode-image_xfm.h5", "desc-antssyn_jacobian.nii.gz",
          "desc-antssyn_dseg.nii.gz", "desc-antssyn_overlap.tsv")


@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MB tmpfs (root only: .ci/run runs as root), unmounted at the end."""
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); .ci/run runs as root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _files(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and "logs" not in p.parts and ".staging" not in p.parts}


def test_a_full_disk_mid_run_names_the_file_and_cause_and_leaves_no_half_result(small_disk, bids_dataset, tmp_path,
                                                                              capsys):
    out = small_disk / "out"
    argv = [str(bids_dataset), str(out), "participant", "--fixed", "sub-01", "--skip-bids-validation",
            "--methods", "antsaffine,antssyn", "--ants-affine-iterations", "20", "10", "--ants-syn-iterations", "5",
            "0", "--labels", str(bids_dataset / "derivatives/manual"), "--labels-desc", "phantom",
            "-w", str(tmp_path / "work")]
    assert main(argv[:7] + ["antsaffine"] + argv[8:]) == exit_codes.OK  # earlier outputs: small, they fit
    earlier = _files(out)
    capsys.readouterr()
    code = main(argv)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == exit_codes.IO_ERROR, line
    assert "No space left on device" in line and str(out) in line and "run the same command again" in line
    assert {k: v for k, v in _files(out).items() if k in earlier} == earlier
    for subject in ("02", "03"):
        written = [name for name in RESULT if list((out / f"sub-{subject}" / "anat").glob(f"*{name}"))]
        assert written in ([], list(RESULT)), f"sub-{subject}: half a result: {written}"
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert main(argv) == exit_codes.OK
    for subject in ("02", "03"):
        assert all(list((out / f"sub-{subject}" / "anat").glob(f"*{name}")) for name in RESULT), subject
