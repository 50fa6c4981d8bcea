"""Filing results into the derivatives dataset (bidsreg.interfaces.derivatives)."""
from __future__ import annotations

import json

from bidsreg.interfaces.derivatives import DerivativesSink


def test_a_file_gets_its_bids_name_and_a_sidecar_merged_from_its_reports(tmp_path):
    source = tmp_path / "warped.nii.gz"
    source.write_bytes(b"image")
    report = tmp_path / "registration.json"
    report.write_text(json.dumps({"method": "cnn", "seconds": 3.5}))
    result = DerivativesSink(base_directory=str(tmp_path / "out"), in_file=str(source),
                             entities={"subject": "10", "session": "a", "space": "sub09", "desc": "cnn"},
                             suffix="T1w", extension=".nii.gz", metadata={"Space": "sub09", "seconds": 0},
                             json_files=[str(report)]).run().outputs
    anat = tmp_path / "out" / "sub-10" / "ses-a" / "anat"
    assert result.out_file == str(anat / "sub-10_ses-a_space-sub09_desc-cnn_T1w.nii.gz")
    assert (anat / "sub-10_ses-a_space-sub09_desc-cnn_T1w.nii.gz").read_bytes() == b"image"
    sidecar = json.loads((anat / "sub-10_ses-a_space-sub09_desc-cnn_T1w.json").read_text())
    assert sidecar == {"Space": "sub09", "method": "cnn", "seconds": 3.5}  # the reports win over the metadata
    assert sorted(p.name for p in anat.iterdir()) == ["sub-10_ses-a_space-sub09_desc-cnn_T1w.json",
                                                      "sub-10_ses-a_space-sub09_desc-cnn_T1w.nii.gz"]
    assert DerivativesSink.always_run  # a file deleted from the outputs comes back on a rerun
