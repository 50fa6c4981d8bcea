"""Group tables: method comparison, CNN stages, per label, paired Wilcoxon tests, QC flags."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from ..methods.table import reported_names

__all__ = ["STAGES", "cnn_stages", "ordered_methods", "label_table", "method_table", "qc_flags", "shared_images",
           "wilcoxon_table"]

#: The CNN's stages as the original work reports them, then the instance-optimised mode (cnnio).
STAGES = {"original": "original", "cnnaffine": "global", "cnn": "registered", "cnnio": "optimised"}
_MEASURES = ("dice", "jaccard", "target_overlap", "hd95", "dsc30", "folding_percent", "sdlogj", "seconds", "peak_memory_mb")
_IDENTITY = ["subject", "session", "run"]


def ordered_methods(methods) -> list[str]:
    """``methods`` in the order of the tables (:func:`~bidsreg.methods.table.reported_names`), others last."""
    order = reported_names()
    known = [m for m in order if m in set(methods)]
    return known + sorted(set(methods) - set(order))


def shared_images(subjects: pd.DataFrame) -> pd.DataFrame:
    """The rows of the images (subject, session, run) that have a result of every method of
    their label set: what the methods are compared on, paired."""
    table = _filled(subjects)
    methods = table.groupby("seg")["method"].transform("nunique")
    per_image = table.groupby(_IDENTITY + ["seg"])["method"].transform("nunique")
    return subjects[(per_image == methods).to_numpy()].reset_index(drop=True)


def method_table(subjects: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over subjects of each measure, per label set and method (``<measure>_mean``,
    ``<measure>_sd``; ``n`` subjects)."""
    rows = []
    for (seg, method), group in subjects.groupby([subjects["seg"].fillna(""), "method"], sort=False):
        row = {"seg": seg or None, "method": method, "n": len(group)}
        for measure in _MEASURES:
            values = pd.to_numeric(group[measure], errors="coerce").dropna()
            row[f"{measure}_mean"] = values.mean() if len(values) else np.nan
            row[f"{measure}_sd"] = values.std(ddof=1) if len(values) > 1 else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {m: i for i, m in enumerate(ordered_methods(table["method"]))}
    return table.sort_values(["seg", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                             ignore_index=True)


def cnn_stages(methods: pd.DataFrame) -> pd.DataFrame:
    """The "original / global / registered (/ optimised)" rows of :func:`method_table` for the CNN."""
    if methods.empty:
        return methods
    table = methods[methods["method"].isin(STAGES)].copy()
    table.insert(1, "stage", table["method"].map(STAGES))
    return table[["seg", "stage", "method", "n", "dice_mean", "dice_sd", "jaccard_mean", "jaccard_sd"]].reset_index(drop=True)


def label_table(labels: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice over subjects per label (rows) and method (columns), per label set."""
    if labels.empty:
        return labels
    frame = labels.assign(seg=labels["seg"].fillna(""))
    table = frame.groupby(["seg", "label", "name", "method"])["dice"].mean().unstack("method")
    table = table[ordered_methods(table.columns)]
    table.columns.name = None
    return table.reset_index()


def wilcoxon_table(subjects: pd.DataFrame, measure: str = "dice") -> pd.DataFrame:
    """Paired two-sided Wilcoxon signed-rank tests of ``measure`` between every two methods,
    on the subjects both have (``p`` is NaN with fewer than two pairs or no difference).

    ``smallest_p`` is the lowest p the exact test can give with ``n`` pairs, 2 / 2ⁿ (n = 3:
    0.25; n = 6: 0.031): with few subjects no difference can be significant, however large."""
    rows = []
    for seg, group in subjects.dropna(subset=[measure]).groupby(subjects["seg"].fillna("")):
        wide = _filled(group).pivot_table(index=_IDENTITY, columns="method", values=measure)
        for first, second in itertools.combinations(ordered_methods(wide.columns), 2):
            pair = wide[[first, second]].dropna()
            difference = pair[second] - pair[first]
            statistic = p = np.nan
            if len(pair) >= 2 and np.any(difference != 0):
                result = wilcoxon(pair[second], pair[first])
                statistic, p = float(result.statistic), float(result.pvalue)
            rows.append({
                "seg": seg or None, "measure": measure, "method_a": first, "method_b": second, "n": len(pair),
                "median_b_minus_a": float(difference.median()) if len(pair) else np.nan,
                "statistic": statistic, "p": p, "smallest_p": 2.0 ** (1 - len(pair)) if len(pair) >= 2 else np.nan,
            })
    return pd.DataFrame(rows, columns=["seg", "measure", "method_a", "method_b", "n", "median_b_minus_a", "statistic", "p",
                                       "smallest_p"])


def _filled(table: pd.DataFrame) -> pd.DataFrame:
    """Missing session/run/seg as "" so that they group and index like values."""
    return table.assign(**{c: table[c].fillna("") for c in _IDENTITY + ["seg"]})


def qc_flags(subjects: pd.DataFrame, folding_limit: float = 1.0) -> pd.DataFrame:
    """A QC verdict per subject and method: ``ok``, or why to look at it.

    Flags: Dice below Q1 − 1.5 IQR of its method (an outlier), Dice not above the subject's
    "original" Dice (registration did not help), more than ``folding_limit`` % folded voxels,
    a T1w that is not known to be skull-stripped, and an image left out of the comparison
    because another method has no result for it (:func:`shared_images`).
    """
    table = _filled(subjects).reset_index(drop=True)
    reasons = [[] for _ in range(len(table))]
    with_dice = table.dropna(subset=["dice"])
    for _, group in with_dice.groupby(["seg", "method"], dropna=False):
        q1, q3 = group["dice"].quantile([0.25, 0.75])
        for index in group.index[group["dice"] < q1 - 1.5 * (q3 - q1)]:
            reasons[index].append("Dice outlier for its method")
    original = with_dice[with_dice["method"] == "original"].set_index(_IDENTITY + ["seg"])["dice"]
    for index, row in with_dice.iterrows():
        key = tuple(row[c] for c in _IDENTITY + ["seg"])
        if row["method"] != "original" and key in original.index and row["dice"] <= original.loc[key]:
            reasons[index].append("Dice not above the original")
    for position, (folding, stripped, method) in enumerate(zip(table["folding_percent"], table["skull_stripped"], table["method"])):
        if pd.notna(folding) and folding > folding_limit:
            reasons[position].append(f"{folding:.2f} % folded voxels")
        if method != "original" and stripped is not True:
            reasons[position].append("T1w not known to be skull-stripped")
    shared = {tuple(row) for row in _filled(shared_images(subjects))[_IDENTITY + ["seg", "method"]].itertuples(index=False)}
    for position, row in enumerate(table[_IDENTITY + ["seg", "method"]].itertuples(index=False)):
        if tuple(row) not in shared:
            reasons[position].append("left out of the comparison: another method has no result for this image")
    table["qc"] = ["; ".join(r) if r else "ok" for r in reasons]
    return table[_IDENTITY + ["method", "seg", "dice", "qc"]]
