"""Where bidsreg's outputs come from: the ``GeneratedBy`` entry of derivatives and model cards,
and the versions of the software that ran."""
from __future__ import annotations

import os
from importlib import metadata

from . import __version__

__all__ = ["PACKAGES", "generated_by", "versions"]

#: The packages whose versions a report names.
PACKAGES = ("bidsreg", "torch", "antspyx", "nipype", "pybids", "nibabel", "SimpleITK")
#: Environment variables that say a process runs under Apptainer/Singularity.
_SINGULARITY = ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER", "APPTAINER_NAME", "SINGULARITY_NAME")


def generated_by() -> dict:
    """The ``GeneratedBy`` entry of bidsreg's outputs: name, version and, inside bidsreg's
    container, ``Container`` (``Type`` singularity under Apptainer/Singularity, else docker;
    ``Tag`` from ``BIDSREG_CONTAINER``, which the Dockerfile sets)."""
    entry: dict = {"Name": "bidsreg", "Version": __version__}
    tag = os.environ.get("BIDSREG_CONTAINER")
    if tag:
        singularity = any(os.environ.get(key) for key in _SINGULARITY)
        entry["Container"] = {"Type": "singularity" if singularity else "docker", "Tag": tag}
    return entry


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """The installed version of each of ``packages`` (those installed)."""
    out = {}
    for package in packages:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out
