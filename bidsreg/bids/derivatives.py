"""Names of bidsreg's BIDS derivatives (CONVENTIONS.md), built and read with pybids.

Per subject, under ``sub-<label>/[ses-<label>/]anat/``, one set per method (``desc-<method>``),
e.g. for sub-10 registered to the fixed subject sub-09 with the CNN::

    sub-10_space-sub09_desc-cnn_T1w.nii.gz                      warped image
    sub-10_from-T1w_to-sub09_desc-cnn_mode-image_xfm.h5         transform (and its inverse,
    sub-10_from-sub09_to-T1w_desc-cnn_mode-image_xfm.h5          to bring atlas labels back)
    sub-10_space-sub09_seg-DKT31aseg_desc-cnn_dseg.nii.gz       warped label map
    sub-10_space-sub09_desc-cnn_jacobian.nii.gz                 Jacobian determinant
    sub-10_seg-DKT31aseg_desc-cnn_overlap.tsv                   overlap table

each with its JSON sidecar. The path patterns are ``bidsreg/data/derivatives.json`` (the way
niworkflows' ``DerivativesDataSink`` names fMRIPrep's outputs); entities have pybids' names
(``subject``, ``session``, ``segmentation``, ``from``, ...). The BIDS validator does not know
``_xfm.h5`` and ``_overlap.tsv`` files yet (NOT_INCLUDED).
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

from bids.layout import parse_file_entities
from bids.layout.writing import build_path

from ..data import DERIVATIVES_PATTERNS

#: Folder of output_dir where a result's files are written before they are moved in together.
STAGING = ".staging"

__all__ = ["derivative_path", "parse_name", "sidecar_path", "space_label"]

_VALUE = re.compile(r"^[A-Za-z0-9]+$")


@lru_cache(maxsize=1)
def _patterns() -> tuple[str, ...]:
    return tuple(json.loads(DERIVATIVES_PATTERNS.read_text())["default_path_patterns"])


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
        pybids entity names (``subject``, ``session``, ``space``, ``segmentation``, ``desc``,
        ``from``, ``to``, ``mode``, ...); ``None`` values are left out.
    suffix : str
        ``T1w``, ``xfm``, ``dseg``, ``jacobian`` or ``overlap``.
    extension : str
        With its dot: ``.nii.gz``, ``.h5``, ``.tsv``, or ``.json`` for a sidecar.

    Raises
    ------
    ValueError
        For a value that is not letters and digits, or entities no bidsreg name takes.
    """
    given = {key: str(value) for key, value in entities.items() if value is not None}
    for key, value in given.items():
        if not _VALUE.match(value):
            raise ValueError(f"entity {key}-{value}: BIDS values are letters and digits only")
    if "subject" not in given:
        raise ValueError("a derivative needs the 'subject' entity")
    name = build_path({**given, "suffix": suffix, "extension": extension}, list(_patterns()), strict=True)
    if name is None:
        raise ValueError(f"no bidsreg derivative name takes the entities {sorted(given)} with _{suffix}{extension}")
    return Path(output_dir) / name


def parse_name(path: str | os.PathLike) -> dict:
    """The pybids entities of a derivative's file name (``suffix`` and ``extension`` included;
    values as strings): ``sub-10_desc-cnn_overlap.tsv`` -> ``{"subject": "10", "desc": "cnn", ...}``."""
    # pybids' patterns find an entity after a path separator or an underscore: the name alone,
    # after a separator (the folders above could hold anything).
    return {key: str(value) for key, value in parse_file_entities("/" + Path(path).name).items()}


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a derivative: the same entities with ``.json``."""
    path = Path(path)
    entities = parse_name(path)
    suffix, _ = entities.pop("suffix"), entities.pop("extension")
    return path.with_name(derivative_path("", entities, suffix, ".json").name)
