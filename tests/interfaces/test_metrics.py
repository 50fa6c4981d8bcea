"""The interfaces of the accuracy and regularity measures (bidsreg.interfaces.metrics)."""
from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bidsreg.interfaces.metrics import JacobianStats, LabelOverlap
from bidsreg.metrics import OVERLAP_COLUMNS
from bidsreg.transform import Transform


def test_label_overlap_names_each_label(bids_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    labels = bids_dataset / "derivatives/manual"
    fixed = labels / "sub-01/anat/sub-01_desc-phantom_dseg.nii.gz"
    table = LabelOverlap(warped_labels=str(labels / "sub-02/anat/sub-02_desc-phantom_dseg.nii.gz"),
                         fixed_labels=str(fixed), lut=str(labels / "desc-phantom_dseg.tsv")).run().outputs.out_table
    overlap = pd.read_csv(table, sep="\t", na_values="n/a")
    assert tuple(overlap.columns) == OVERLAP_COLUMNS and list(overlap["label"]) == list(range(1, 11))
    assert overlap["name"].iloc[-1] == "blob-2" and overlap["dice"].between(0, 1).all()
    same = LabelOverlap(warped_labels=str(fixed), fixed_labels=str(fixed)).run().outputs.out_table
    assert (pd.read_csv(same, sep="\t")["dice"] == 1).all()


def test_jacobian_stats_of_a_scaling_field(phantom_files, tmp_path, monkeypatch):
    """x -> x + 0.1 (x - c) scales volumes by 1.1³ everywhere: no folding, SDlogJ 0."""
    monkeypatch.chdir(tmp_path)
    image = nb.load(phantom_files["fixed"])
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), -1)
    world = index @ image.affine[:3, :3].T + image.affine[:3, 3]
    field = (0.1 * world).astype(np.float32)
    Transform(np.eye(4), field, -field / 1.1, image.affine).write(tmp_path / "xfm.h5")
    result = JacobianStats(transform=str(tmp_path / "xfm.h5"), reference=phantom_files["fixed"]).run().outputs
    det = np.asarray(nb.load(result.out_file).dataobj)
    np.testing.assert_allclose(det, 1.1**3, rtol=1e-4)
    stats = json.loads(open(result.out_stats).read())
    assert stats["FoldingPercent"] == 0 and stats["SDlogJ"] == pytest.approx(0, abs=1e-4)
    Transform(np.eye(4)).write(tmp_path / "affine.h5")
    with pytest.raises(ValueError, match="no Jacobian"):
        JacobianStats(transform=str(tmp_path / "affine.h5"), reference=phantom_files["fixed"]).run()
