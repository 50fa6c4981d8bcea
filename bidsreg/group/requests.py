"""What the participant level was asked for, recorded in the outputs, and what of it is missing.

Each participant run writes ``output_dir/logs/requests_<date>T<time>_<pid>_<random>.tsv``: one row per
image (subject, session, run) and reported method (every stage: ``cnnaffine`` and ``cnn``;
``original`` where overlaps are measured), with ``measured`` telling whether label overlaps
were asked for. The group level takes the union of every run's records as what should be
there, so that a deleted, failed or never-finished result is named instead of silently
leaving a method compared over fewer subjects.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ..atomic import atomic_output

__all__ = ["REQUEST_COLUMNS", "describe", "read_requests", "reconcile", "write_requests"]

REQUEST_COLUMNS = ("subject", "session", "run", "method", "measured")
_IDENTITY = ["subject", "session", "run", "method"]


def write_requests(output_dir: str | os.PathLike, images: Iterable[dict], methods: Sequence[str],
                   measured: Iterable[bool]) -> Path:
    """Record one participant run's requests.

    Parameters
    ----------
    output_dir : path-like
        The derivatives dataset.
    images : iterable of dict
        Each image's BIDS entities (``subject``, and ``session``, ``run`` where it has them).
    methods : sequence of str
        The reported names the run will write for every image (stages included).
    measured : iterable of bool
        Per image, whether its label overlaps are measured (it and the fixed image have labels).
    """
    rows = []
    for entities, overlaps in zip(images, measured):
        names = (["original"] if overlaps else []) + list(methods)
        rows += [{"subject": entities["subject"], "session": entities.get("session"), "run": entities.get("run"),
                  "method": name, "measured": bool(overlaps)} for name in names]
    folder = Path(output_dir) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"requests_{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}_{uuid.uuid4().hex[:8]}.tsv"
    with atomic_output(path) as tmp:
        pd.DataFrame(rows, columns=list(REQUEST_COLUMNS)).to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    return path


def read_requests(output_dir: str | os.PathLike) -> pd.DataFrame | None:
    """The union of every participant run's requests (``measured`` if any run asked for
    overlaps), or None where no run recorded any (outputs of an older bidsreg)."""
    paths = sorted((Path(output_dir) / "logs").glob("requests_*.tsv"))
    if not paths:
        return None
    tables = [pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False, dtype=str) for path in paths]
    table = pd.concat(tables, ignore_index=True)
    table["measured"] = table["measured"].str.lower() == "true"
    for column in ("session", "run"):
        table[column] = table[column].where(table[column].notna(), None)
    return table.groupby(_IDENTITY, dropna=False, sort=True)["measured"].any().reset_index()


def reconcile(subjects: pd.DataFrame, requests: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match the results to the requests.

    Parameters
    ----------
    subjects : pandas.DataFrame
        :func:`bidsreg.group.collect.collect`'s table: overlap rows (with a label set) and
        rows of registrations without overlaps.
    requests : pandas.DataFrame
        :func:`read_requests`.

    Returns
    -------
    subjects : pandas.DataFrame
        Without the rows of registrations whose overlaps were asked for but are missing (they
        are missing results, not registrations without labels).
    missing : pandas.DataFrame
        The requests without their result: an overlap row where overlaps were asked for, else
        a row at all.
    """
    measured = {_key(row) for row in requests[requests["measured"]].itertuples(index=False)}
    keys = [_key(row) for row in subjects.itertuples(index=False)]
    kept = subjects[[pd.notna(seg) or key not in measured for seg, key in zip(subjects["seg"], keys)]]
    present = {(_key(row), pd.notna(row.seg)) for row in kept.itertuples(index=False)}
    lacking = [(_key(row), True) not in present and (row.measured or (_key(row), False) not in present)
               for row in requests.itertuples(index=False)]
    return kept.reset_index(drop=True), requests[lacking].reset_index(drop=True)


def describe(missing: pd.DataFrame, limit: int = 5) -> str:
    """The missing results in words, the first ``limit`` named: ``sub-02 cnn, sub-03_ses-a antssyn``."""
    names = [" ".join(["_".join(f"{prefix}-{value}" for prefix, value in
                                (("sub", row.subject), ("ses", row.session), ("run", row.run)) if pd.notna(value)),
                       row.method + (" (overlaps)" if row.measured else "")])
             for row in missing.itertuples(index=False)]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _key(row) -> tuple:
    return tuple(None if pd.isna(value) else str(value) for value in (row.subject, row.session, row.run, row.method))
