"""Read the participant outputs of a derivatives dataset into pandas tables."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd

from ..bids.derivatives import sidecar_path
from ..metrics import summarise

__all__ = ["SUBJECT_COLUMNS", "collect", "parse_name"]

#: Columns of the per-subject table, in order.
SUBJECT_COLUMNS = (
    "subject", "session", "run", "method", "seg", "space", "dice", "jaccard", "target_overlap", "hd95", "dsc30",
    "seconds", "peak_memory_mb", "folding_percent", "sdlogj", "skull_stripped",
)
_PAIR = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9]+)$")


def parse_name(name: str) -> tuple[dict, str]:
    """BIDS entities and suffix of a file name: ``sub-10_desc-cnn_overlap.tsv`` ->
    ``({"sub": "10", "desc": "cnn"}, "overlap")``."""
    stem = name.split(".", 1)[0]
    *pairs, suffix = stem.split("_")
    entities = {}
    for pair in pairs:
        match = _PAIR.match(pair)
        if match is None:
            raise ValueError(f"{name}: not a BIDS file name (bad entity {pair!r})")
        entities[match.group(1)] = match.group(2)
    return entities, suffix


def _sidecar(path: Path) -> dict:
    sidecar = sidecar_path(path)
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


def _key(entities: dict) -> tuple:
    return entities.get("sub"), entities.get("ses"), entities.get("run"), entities.get("desc")


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
        entities, _ = parse_name(path.name)
        transforms[_key(entities)] = (entities, _sidecar(path))
    rows, label_tables, seen = [], [], set()
    for path in sorted(root.glob("sub-*/**/anat/*_overlap.tsv")):
        entities, _ = parse_name(path.name)
        table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
        sidecar = _sidecar(path)
        rows.append(_row(entities, sidecar, sidecar.get("Space"), summarise(table)))
        seen.add(_key(entities))
        table.insert(0, "seg", entities.get("seg"))
        table.insert(0, "method", entities.get("desc"))
        for column, key in (("run", "run"), ("session", "ses"), ("subject", "sub")):
            table.insert(0, column, entities.get(key))
        label_tables.append(table)
    for key, (entities, sidecar) in transforms.items():
        if key not in seen:  # registered without labels: time and regularity only
            rows.append(_row(entities, sidecar, sidecar.get("Space", entities.get("to")), {}))
    subjects = pd.DataFrame(rows, columns=list(SUBJECT_COLUMNS))
    labels = pd.concat(label_tables, ignore_index=True) if label_tables else pd.DataFrame()
    return subjects.sort_values(["subject", "session", "run", "method"], na_position="first", ignore_index=True), labels


def _row(entities: dict, sidecar: dict, space: str | None, overlap: dict) -> dict:
    return {
        "subject": entities.get("sub"),
        "session": entities.get("ses"),
        "run": entities.get("run"),
        "method": entities.get("desc"),
        "seg": entities.get("seg"),
        "space": space,
        **{key: overlap.get(key) for key in ("dice", "jaccard", "target_overlap", "hd95", "dsc30")},
        "seconds": sidecar.get("seconds"),
        "peak_memory_mb": sidecar.get("peak_memory_mb"),
        "folding_percent": sidecar.get("FoldingPercent"),
        "sdlogj": sidecar.get("SDlogJ"),
        "skull_stripped": sidecar.get("SkullStripped"),
    }
