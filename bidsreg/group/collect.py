"""Read the participant outputs of a derivatives dataset into pandas tables."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..bids.derivatives import parse_name, sidecar_path
from ..metrics import summarise

__all__ = ["SUBJECT_COLUMNS", "collect"]

#: Columns of the per-subject table, in order.
SUBJECT_COLUMNS = (
    "subject", "session", "run", "method", "seg", "space", "dice", "jaccard", "target_overlap", "hd95", "dsc30",
    "seconds", "peak_memory_mb", "folding_percent", "sdlogj", "skull_stripped",
)


def _sidecar(path: Path) -> dict:
    sidecar = sidecar_path(path)
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


def _key(entities: dict) -> tuple:
    return entities.get("subject"), entities.get("session"), entities.get("run"), entities.get("desc")


def collect(output_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather every subject's results.

    Parameters
    ----------
    output_dir : path-like
        A bidsreg derivatives dataset.

    Returns
    -------
    subjects : pandas.DataFrame
        One row per subject (session, run), method and label set, columns
        :data:`SUBJECT_COLUMNS`: mean overlap measures over labels and DSC30 (NaN without
        labels), the registration's seconds and peak memory, folding and SDlogJ
        (deformable methods). ``method`` ``original`` is the label overlap before registration.
    labels : pandas.DataFrame
        The overlap tables of every subject and method, stacked (one row per label).
    """
    root = Path(output_dir)
    transforms = {}
    for path in sorted(root.glob("sub-*/**/anat/*_from-T1w_*_xfm.h5")):
        entities = parse_name(path.name)
        transforms[_key(entities)] = (entities, _sidecar(path))
    rows, label_tables, seen = [], [], set()
    for path in sorted(root.glob("sub-*/**/anat/*_overlap.tsv")):
        entities = parse_name(path.name)
        table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
        sidecar = _sidecar(path)
        rows.append(_row(entities, sidecar, sidecar.get("Space"), summarise(table)))
        seen.add(_key(entities))
        table.insert(0, "seg", entities.get("segmentation"))
        table.insert(0, "method", entities.get("desc"))
        for column in ("run", "session", "subject"):
            table.insert(0, column, entities.get(column))
        label_tables.append(table)
    for key, (entities, sidecar) in transforms.items():
        if key not in seen:  # registered without labels: time and regularity only
            rows.append(_row(entities, sidecar, sidecar.get("Space", entities.get("to")), {}))
    subjects = pd.DataFrame(rows, columns=list(SUBJECT_COLUMNS))
    labels = pd.concat(label_tables, ignore_index=True) if label_tables else pd.DataFrame()
    return subjects.sort_values(["subject", "session", "run", "method"], na_position="first", ignore_index=True), labels


def _row(entities: dict, sidecar: dict, space: str | None, overlap: dict) -> dict:
    return {
        "subject": entities.get("subject"),
        "session": entities.get("session"),
        "run": entities.get("run"),
        "method": entities.get("desc"),
        "seg": entities.get("segmentation"),
        "space": space,
        **{key: overlap.get(key) for key in ("dice", "jaccard", "target_overlap", "hd95", "dsc30")},
        "seconds": sidecar.get("seconds"),
        "peak_memory_mb": sidecar.get("peak_memory_mb"),
        "folding_percent": sidecar.get("FoldingPercent"),
        "sdlogj": sidecar.get("SDlogJ"),
        "skull_stripped": sidecar.get("SkullStripped"),
    }
