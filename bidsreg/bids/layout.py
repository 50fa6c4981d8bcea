"""Find the inputs of a run in a BIDS dataset with pybids: subjects, T1w images, label maps, masks.

Every query failure is an :class:`~bidsreg.errors.InputError` whose message names the dataset
or file and the fix, and whose ``exit_code`` is the BIDS-Apps one.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from bids import BIDSLayout

from ..errors import BIDSValidationError, InputError, MissingInputError, NoFilesSelectedError

__all__ = ["FixedImage", "T1wInput", "collect_t1w", "find_lut", "fixed_image", "label_descriptions", "load_layout",
           "read_filters", "select_subjects"]

NIFTI = [".nii", ".nii.gz"]
#: Entities that tie a label map or a mask to its T1w image.
_MATCHED = ("subject", "session", "acquisition", "ceagent", "reconstruction", "run")


@dataclass(frozen=True)
class T1wInput:
    """One T1w image to register, with what goes with it.

    Attributes
    ----------
    path : Path
    entities : dict
        Its BIDS entities (subject, session, run, ...; no suffix or extension).
    skull_stripped : bool or None
        The sidecar's ``SkullStripped`` (None when absent).
    labels : Path or None
        Its label map (``_dseg``) in the labels derivatives, if asked for and found.
    mask : Path or None
        Its brain mask (``desc-brain_mask``) in the masks derivatives, if asked for and found.
    """

    path: Path
    entities: dict
    skull_stripped: bool | None = None
    labels: Path | None = None
    mask: Path | None = None


@dataclass(frozen=True)
class FixedImage:
    """The image every subject is registered to.

    Attributes
    ----------
    path : Path
    space : str
        ``space-`` label of the outputs (``sub09``, a template name).
    source : str
        What the user named: ``sub-09`` or the file path.
    labels : Path or None
        Its label map, when overlaps are measured.
    lut : Path or None
        Lookup table of label names (a BIDS ``dseg.tsv``).
    """

    path: Path
    space: str
    source: str
    labels: Path | None = None
    lut: Path | None = None


def load_layout(root: str | os.PathLike, derivative: bool = False) -> BIDSLayout:
    """Index a BIDS (or, with ``derivative``, a BIDS derivatives) dataset; validation is separate."""
    root = Path(root)
    kind = "BIDS derivatives dataset" if derivative else "BIDS dataset"
    if not (root / "dataset_description.json").is_file():
        error = MissingInputError if derivative else BIDSValidationError
        raise error(f"{root}: not a {kind} (no dataset_description.json); point at the dataset's root folder")
    try:
        return BIDSLayout(root, validate=False, is_derivative=derivative)
    except (ValueError, json.JSONDecodeError) as failure:
        raise InputError(f"{root}: pybids cannot read this {kind} ({failure}); fix its dataset_description.json") from None


def read_filters(path: str | os.PathLike | None, layout: BIDSLayout | None = None) -> dict:
    """The ``t1w`` query of a PyBIDS filter file (fMRIPrep's format), or ``{}`` without one;
    with ``layout``, every entity of it must be one pybids knows there (a misspelt one is bad
    input, not a traceback)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        filters = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingInputError(f"{path}: filter file not found; give an existing JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as failure:
        raise InputError(f"{path}: not valid JSON ({failure}); fix the filter file") from None
    if not isinstance(filters, dict) or not isinstance(filters.get("t1w", {}), dict):
        raise InputError(f'{path}: expected {{"t1w": {{entity: value, ...}}}}; fix the filter file')
    query = dict(filters.get("t1w", {}))
    if layout is not None:
        try:
            layout.get(return_type="id", target="subject", **query)
        except ValueError as failure:  # pybids: "'acqusition' is not a recognized entity. Did you mean [...]? ..."
            reason = str(failure).split(" If you're sure")[0]
            raise InputError(f"{path}: {reason} Fix the filter file") from None
    return query


def select_subjects(layout: BIDSLayout, labels: list[str] | None) -> list[str]:
    """The subjects to process: all of the dataset's, or those of ``labels`` (all must exist)."""
    available = layout.get_subjects()
    if not labels:
        if not available:
            raise NoFilesSelectedError(f"{layout.root}: no sub-* folders; is this the dataset's root?")
        return sorted(available)
    missing = [label for label in labels if label not in available]
    if missing:
        raise NoFilesSelectedError(
            f"{layout.root}: no subject {', '.join('sub-' + m for m in missing)}; "
            f"the dataset has {', '.join('sub-' + a for a in sorted(available)) or 'none'}"
        )
    return list(dict.fromkeys(labels))


def _companion(layout: BIDSLayout | None, entities: dict, **query) -> Path | None:
    if layout is None:
        return None
    matched = {key: entities.get(key) for key in _MATCHED if key in layout.get_entities()}
    found = layout.get(return_type="file", extension=NIFTI, **matched, **query)
    if len(found) > 1:
        raise InputError(
            f"{layout.root}: {len(found)} files match sub-{entities['subject']} {query}: "
            f"{', '.join(Path(f).name for f in found)}; narrow the selection (--labels-desc)"
        )
    return Path(found[0]) if found else None


def collect_t1w(
    layout: BIDSLayout,
    subject: str,
    *,
    sessions: list[str] | None = None,
    filters: dict | None = None,
    labels: BIDSLayout | None = None,
    labels_desc: str | None = None,
    masks: BIDSLayout | None = None,
) -> list[T1wInput]:
    """The T1w images of ``subject`` (each session and run), with their label maps and masks.

    Parameters
    ----------
    layout : BIDSLayout
        The input dataset.
    subject : str
        Label without ``sub-``.
    sessions : list of str, optional
        Only these sessions.
    filters : dict, optional
        Extra PyBIDS entities for the T1w query (from :func:`read_filters`).
    labels, masks : BIDSLayout, optional
        Derivatives with ``_dseg`` label maps (``desc-<labels_desc>``) and ``desc-brain_mask``
        masks; a T1w without one gets ``None``.
    labels_desc : str, optional
        ``desc`` entity of the label maps.
    """
    query = {"datatype": "anat", "suffix": "T1w", "extension": NIFTI, **(filters or {})}
    if sessions:
        query["session"] = sessions
    files = layout.get(subject=subject, **query)
    if not files:
        where = f" in session(s) {', '.join(sessions)}" if sessions else ""
        if filters:
            raise NoFilesSelectedError(
                f"{layout.root}/sub-{subject}: no T1w image{where} matches the filters {filters}; change the filter "
                "file (--bids-filter-file) or leave the subject out (--participant-label)"
            )
        raise MissingInputError(
            f"{layout.root}/sub-{subject}: no T1w image{where}; add "
            f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz or leave the subject out (--participant-label)"
        )
    out = []
    for image in sorted(files, key=lambda f: f.path):
        entities = {k: v for k, v in image.get_entities().items() if k not in ("suffix", "extension", "datatype")}
        stripped = image.get_metadata().get("SkullStripped")
        out.append(
            T1wInput(
                path=Path(image.path),
                entities=entities,
                skull_stripped=None if stripped is None else bool(stripped),
                labels=_companion(labels, entities, suffix="dseg", **({"desc": labels_desc} if labels_desc else {})),
                mask=_companion(masks, entities, suffix="mask", desc="brain"),
            )
        )
    return out


def label_descriptions(labels: BIDSLayout | None) -> list[str]:
    """The ``desc`` values of the ``_dseg`` label maps in ``labels`` (for a message), sorted."""
    if labels is None:
        return []
    return sorted(labels.get(return_type="id", target="desc", suffix="dseg", extension=NIFTI))


def find_lut(labels: BIDSLayout | None, labels_desc: str | None) -> Path | None:
    """The lookup table ``[desc-<labels_desc>_]dseg.tsv`` at the root of the labels derivatives."""
    if labels is None:
        return None
    root = Path(labels.root)
    names = ([f"desc-{labels_desc}_dseg.tsv"] if labels_desc else []) + ["dseg.tsv"]
    return next((root / name for name in names if (root / name).is_file()), None)


def fixed_image(
    fixed: str,
    layout: BIDSLayout,
    *,
    fixed_labels: Path | None = None,
    labels: BIDSLayout | None = None,
    labels_desc: str | None = None,
    need_labels: bool = False,
) -> FixedImage:
    """The fixed image named by ``--fixed``: a subject of the dataset (``sub-09``, its first
    T1w) or a NIfTI path (with ``--fixed-labels``).

    Raises
    ------
    MissingInputError
        When the file or the subject's T1w is missing, or ``need_labels`` and it has no labels.
    """
    from .derivatives import space_label

    if fixed.startswith("sub-") and "/" not in fixed:
        subject = fixed[4:]
        if subject not in layout.get_subjects():
            raise MissingInputError(f"{layout.root}: --fixed {fixed} is not a subject of the dataset; choose one of "
                                    f"{', '.join('sub-' + s for s in sorted(layout.get_subjects()))} or give a NIfTI path")
        image = collect_t1w(layout, subject, labels=labels, labels_desc=labels_desc)[0]
        path, label_map = image.path, image.labels
    else:
        path, label_map = Path(fixed).expanduser().resolve(), fixed_labels
        if not path.is_file():
            raise MissingInputError(f"{path}: --fixed file not found; give an existing NIfTI image or a subject (sub-01)")
        if label_map is not None and not Path(label_map).is_file():
            raise MissingInputError(f"{label_map}: --fixed-labels file not found; give the fixed image's label map")
    if need_labels and label_map is None:
        where = f"in {labels.root}" if labels is not None else "(no --labels or --fixed-labels given)"
        desc = f" with desc-{labels_desc}" if labels_desc else ""
        existing = label_descriptions(labels)
        there = f" (the label maps there have --labels-desc {', '.join(existing)})" if existing else ""
        raise MissingInputError(
            f"{path}: the fixed image has no label map{desc} {where}{there}, so overlaps cannot be measured; "
            "add its _dseg.nii.gz, choose another --fixed or --labels-desc, or leave out --labels"
        )
    try:
        space = space_label(fixed)
    except ValueError as error:
        raise InputError(str(error)) from None
    return FixedImage(path=path, space=space, source=fixed, labels=label_map, lut=find_lut(labels, labels_desc))
