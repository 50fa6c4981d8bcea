"""Where outputs come from (bidsreg.provenance): GeneratedBy, package versions."""
from __future__ import annotations

import pytest

from bidsreg import __version__
from bidsreg.provenance import generated_by, versions


@pytest.mark.parametrize(
    "environment, container",
    [({}, None),
     ({"BIDSREG_CONTAINER": "bidsreg:0.1.0"}, {"Type": "docker", "Tag": "bidsreg:0.1.0"}),
     ({"BIDSREG_CONTAINER": "bidsreg:0.1.0", "APPTAINER_CONTAINER": "/x/bidsreg.sif"},
      {"Type": "singularity", "Tag": "bidsreg:0.1.0"}),
     ({"BIDSREG_CONTAINER": "bidsreg:0.1.0", "SINGULARITY_NAME": "bidsreg.sif"}, {"Type": "singularity", "Tag": "bidsreg:0.1.0"})],
    ids=["host", "docker", "apptainer", "singularity"],
)
def test_generated_by_names_the_container_inside_one(monkeypatch, environment, container):
    for key in ("BIDSREG_CONTAINER", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER", "APPTAINER_NAME", "SINGULARITY_NAME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    entry = generated_by()
    assert entry["Name"] == "bidsreg" and entry["Version"] == __version__
    assert entry.get("Container") == container


def test_versions_of_the_installed_packages():
    found = versions()
    assert found["bidsreg"] == __version__ and {"torch", "nipype", "SimpleITK"} <= set(found)
    assert versions(("no-such-package-here",)) == {}
