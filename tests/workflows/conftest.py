"""Fixtures of the workflow tests: a phantom subject's files and a participant workflow builder."""
from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import pytest

from bidsreg.bids.layout import FixedImage, T1wInput
from bidsreg.methods.base import Context
from bidsreg.methods.table import TABLE, method_configs
from bidsreg.workflows.participant import init_participant_wf


@pytest.fixture()
def files(bids_dataset) -> dict:
    labels = bids_dataset / "derivatives/manual"
    return {
        "t1w": bids_dataset / "sub-02/anat/sub-02_T1w.nii.gz",
        "labels": labels / "sub-02/anat/sub-02_desc-phantom_dseg.nii.gz",
        "fixed": FixedImage(bids_dataset / "sub-01/anat/sub-01_T1w.nii.gz", "sub01", "sub-01",
                            labels / "sub-01/anat/sub-01_desc-phantom_dseg.nii.gz", labels / "desc-phantom_dseg.tsv"),
        "model": bids_dataset / "README",  # any existing file: the graph is built, not run
    }


def configs(files, methods) -> dict:
    """Each method's configuration, the networks' model filled in, demons with 5 iterations per level."""
    out = method_configs({"--demons-iterations": (5, 5, 5)}, methods)
    return {m: dataclasses.replace(c, model=files["model"]) if TABLE[m].network else c for m, c in out.items()}


def _build(files, methods, labels=True, tmp_path=Path("/tmp"), mask=None, context=Context()):
    """The participant workflow of sub-02 of the phantom dataset with ``methods``."""
    t1w = T1wInput(files["t1w"], {"subject": "02", "datatype": "anat"}, labels=files["labels"] if labels else None,
                   mask=mask)
    return init_participant_wf(t1w=t1w, fixed=files["fixed"], methods=configs(files, methods), context=context,
                               output_dir=tmp_path, seg="phantom")


@pytest.fixture()
def build(files):
    """:func:`_build` for the phantom subject."""
    return partial(_build, files)
