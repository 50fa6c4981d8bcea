"""Names of bidsreg's BIDS derivatives (CONVENTIONS.md).

Per subject, under ``sub-<label>/[ses-<label>/]anat/``, one set per method (``desc-<method>``),
e.g. for sub-10 registered to the fixed subject sub-09 with the CNN::

    sub-10_space-sub09_desc-cnn_T1w.nii.gz                      warped image
    sub-10_from-T1w_to-sub09_desc-cnn_mode-image_xfm.h5         transform (and its inverse,
    sub-10_from-sub09_to-T1w_desc-cnn_mode-image_xfm.h5          to bring atlas labels back)
    sub-10_space-sub09_seg-DKT31aseg_desc-cnn_dseg.nii.gz       warped label map
    sub-10_space-sub09_desc-cnn_jacobian.nii.gz                 Jacobian determinant
    sub-10_seg-DKT31aseg_desc-cnn_overlap.tsv                   overlap table

The BIDS validator does not know ``_xfm.h5`` and ``_overlap.tsv`` files yet (NOT_INCLUDED).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["ENTITY_ORDER", "derivative_path", "generated_by", "sidecar_path", "space_label"]

#: BIDS entity keys in filename order (those bidsreg writes).
#: ``mode`` follows ``desc`` as CONVENTIONS.md writes transform names.
ENTITY_ORDER = ("sub", "ses", "acq", "ce", "rec", "run", "from", "to", "space", "seg", "desc", "mode")
_LONG = {"subject": "sub", "session": "ses", "acquisition": "acq", "ceagent": "ce", "reconstruction": "rec"}
_VALUE = re.compile(r"^[A-Za-z0-9]+$")


def generated_by() -> dict:
    """The ``GeneratedBy`` entry of bidsreg's outputs: name, version and, inside bidsreg's
    container, ``Container`` (``Type`` singularity under Apptainer/Singularity, else docker;
    ``Tag`` from ``BIDSREG_CONTAINER``, which the Dockerfile sets)."""
    from .. import __version__

    entry: dict = {"Name": "bidsreg", "Version": __version__}
    tag = os.environ.get("BIDSREG_CONTAINER")
    if tag:
        singularity = any(os.environ.get(key) for key in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER",
                                                          "APPTAINER_NAME", "SINGULARITY_NAME"))
        entry["Container"] = {"Type": "singularity" if singularity else "docker", "Tag": tag}
    return entry


def space_label(fixed: str | os.PathLike) -> str:
    """The ``space-`` value of a fixed image: ``sub-09`` -> ``sub09``; a template file's name
    (``MNI152NLin2009cAsym_T1w.nii.gz`` -> ``MNI152NLin2009cAsym``) up to the first ``_`` or ``.``."""
    text = str(fixed)
    if text.startswith("sub-") and "/" not in text:
        return text.replace("-", "")
    name = Path(text).name
    label = re.split(r"[_.]", name[4:] if name.startswith("tpl-") else name)[0].replace("-", "")
    if not _VALUE.match(label):
        raise ValueError(f"{fixed}: cannot make a space label from this file name; rename it to e.g. MyTemplate_T1w.nii.gz")
    return label


def derivative_path(output_dir: str | os.PathLike, entities: dict, suffix: str, extension: str) -> Path:
    """``output_dir/sub-X/[ses-Y/]anat/<entities>_<suffix><extension>``.

    Parameters
    ----------
    output_dir : path-like
    entities : dict
        Short (``sub``, ``ses``, ``desc``...) or pybids long (``subject``, ``session``...) keys;
        ``None`` values are left out. Keys outside :data:`ENTITY_ORDER` are refused.
    suffix : str
        e.g. ``T1w``, ``xfm``, ``dseg``, ``jacobian``, ``overlap``.
    extension : str
        With its dot: ``.nii.gz``, ``.h5``, ``.tsv``, ``.json``.
    """
    short = {_LONG.get(key, key): value for key, value in entities.items() if value is not None}
    unknown = sorted(set(short) - set(ENTITY_ORDER))
    if unknown:
        raise ValueError(f"entities {unknown} are not among {ENTITY_ORDER}")
    if "sub" not in short:
        raise ValueError("a derivative needs the 'sub' entity")
    for key, value in short.items():
        if not _VALUE.match(str(value)):
            raise ValueError(f"entity {key}-{value}: BIDS values are letters and digits only")
    name = "_".join(f"{key}-{short[key]}" for key in ENTITY_ORDER if key in short)
    folder = Path(output_dir) / f"sub-{short['sub']}"
    if "ses" in short:
        folder = folder / f"ses-{short['ses']}"
    return folder / "anat" / f"{name}_{suffix}{extension}"


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a BIDS file: its name up to the first ``.``, then ``.json``
    (``..._T1w.nii.gz`` -> ``..._T1w.json``)."""
    path = Path(path)
    return path.with_name(path.name.split(".", 1)[0] + ".json")
