"""The official BIDS validator on tiny datasets (bidsreg.bids.validation)."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bidsreg import exit_codes
from bidsreg.bids.validation import CONFIG_NAME, validate_dataset
from bidsreg.errors import BIDSValidationError


@pytest.fixture()
def tiny_bids(tmp_path):
    root = tmp_path / "bids"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0"}))
    image = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    nib.save(image, root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    return root


def test_a_valid_dataset_passes_with_warnings(tiny_bids):
    report = validate_dataset(tiny_bids)
    assert report.errors == [] and report.warnings
    assert "README_FILE_MISSING" in report.summary(report.warnings)


def test_the_datasets_own_validator_configuration_is_used(tiny_bids):
    """Warnings its .bids-validator-config.json ignores are not reported; the others are."""
    (tiny_bids / CONFIG_NAME).write_text(json.dumps({"ignore": [{"code": "README_FILE_MISSING"}]}))
    report = validate_dataset(tiny_bids)
    assert report.warnings and "README_FILE_MISSING" not in report.summary(report.warnings)


def test_a_misnamed_file_is_an_error_naming_it(tiny_bids):
    (tiny_bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz").rename(tiny_bids / "sub-01" / "anat" / "sub-01_T1.nii.gz")
    with pytest.raises(BIDSValidationError, match="sub-01_T1.nii.gz.*--skip-bids-validation") as info:
        validate_dataset(tiny_bids)
    assert info.value.exit_code == exit_codes.VALIDATION_FAILED


def test_a_folder_without_dataset_description_is_not_bids(tmp_path):
    with pytest.raises(BIDSValidationError, match="not a BIDS dataset.*dataset_description.json"):
        validate_dataset(tmp_path)
