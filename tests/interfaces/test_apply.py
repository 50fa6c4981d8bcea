"""The interfaces that resample (bidsreg.interfaces.apply)."""
from __future__ import annotations

import nibabel as nb
import numpy as np

from bidsreg.interfaces.apply import ApplyTransform, MaskImage
from bidsreg.transform import Transform


def test_mask_image_interface(bids_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    labels = bids_dataset / "derivatives/manual/sub-02/anat/sub-02_desc-phantom_dseg.nii.gz"
    result = MaskImage(in_file=str(bids_dataset / "sub-02/anat/sub-02_T1w.nii.gz"), mask=str(labels)).run()
    brain = np.asarray(nb.load(result.outputs.out_file).dataobj)
    mask = np.asarray(nb.load(labels).dataobj) > 0
    assert np.all(brain[~mask] == 0) and np.all(brain[mask] > 0)




def test_apply_transform_warps_images_and_label_maps(phantom_files, bids_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shift = np.eye(4)
    shift[:3, 3] = [3.0, 0.0, 0.0]  # one voxel
    Transform(shift).write(tmp_path / "shift.h5")
    image = ApplyTransform(in_file=phantom_files["fixed"], reference=phantom_files["fixed"],
                           transform=str(tmp_path / "shift.h5")).run().outputs.out_file
    fixed = np.asarray(nb.load(phantom_files["fixed"]).dataobj)
    warped = np.asarray(nb.load(image).dataobj)
    assert warped.dtype == np.float32
    np.testing.assert_allclose(warped[:-1], fixed[1:], atol=1e-3)
    labels = bids_dataset / "derivatives/manual/sub-01/anat/sub-01_desc-phantom_dseg.nii.gz"
    out = ApplyTransform(in_file=str(labels), reference=str(labels), interpolation="nearest").run().outputs.out_file
    np.testing.assert_array_equal(np.asarray(nb.load(out).dataobj), np.asarray(nb.load(labels).dataobj))
