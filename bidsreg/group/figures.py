"""Group figures (matplotlib, written as PNG files): Dice per method and per region, and
before/after overlays of every method."""
from __future__ import annotations

import os

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..atomic import atomic_output
from .tables import ordered_methods

__all__ = ["MAX_DOTS", "method_boxplot", "overlay", "region_profile"]


def _save(figure: Figure, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight", format="png")


#: The colour of the label outlines in the overlays (RGB).
_OUTLINE = (1.0, 0.85, 0.0)
#: How the figures name a measure.
_WORDS = {"dice": "Dice", "hd95": "HD95 (mm)"}
#: Above this many subjects a method's box shows no dot per subject (a cohort's would hide it).
MAX_DOTS = 30


def method_boxplot(subjects: pd.DataFrame, path: str | os.PathLike, measure: str = "dice") -> None:
    """One box per method of the subjects' mean ``measure`` over labels, with a dot per
    subject up to :data:`MAX_DOTS` subjects."""
    data = subjects.dropna(subset=[measure])
    methods = ordered_methods(data["method"].unique())
    figure = Figure(figsize=(1.2 * len(methods) + 2, 4))
    axis = figure.subplots()
    values = [data.loc[data["method"] == m, measure].to_numpy(float) for m in methods]
    axis.boxplot(values, showfliers=False)
    axis.set_xticks(range(1, len(methods) + 1), methods)
    dots = max((v.size for v in values), default=0) <= MAX_DOTS
    if dots:
        for position, points in enumerate(values, start=1):
            axis.plot(np.full(points.size, position) + np.linspace(-0.1, 0.1, points.size), points, "o", alpha=0.6)
    word = _WORDS.get(measure, measure)
    axis.set_ylabel(f"mean {word} over labels")
    axis.set_title(f"{word} per method ({'one dot per subject' if dots else 'boxes over the subjects'})")
    axis.grid(axis="y", alpha=0.3)
    _save(figure, path)


def region_profile(labels: pd.DataFrame, path: str | os.PathLike, measure: str = "dice") -> None:
    """Mean ``measure`` over subjects of every region, a line per method, the regions sorted by
    their mean over the methods (the hardest on the left): one size whatever the number of
    regions (their names are in the per-region table, in the same order)."""
    methods = [m for m in ordered_methods(labels["method"].unique()) if m != "original"]
    means = labels[labels["method"].isin(methods)].groupby(["label", "method"])[measure].mean().unstack("method")
    means = means[methods]
    means = means.loc[means.mean(axis=1).sort_values().index]
    figure = Figure(figsize=(9, 4))
    axis = figure.subplots()
    for method in methods:
        axis.plot(np.arange(len(means)), means[method].to_numpy(float), ".-", linewidth=1, markersize=4, label=method)
    word = _WORDS.get(measure, measure)
    axis.set_xlabel(f"the {len(means)} regions, sorted by their mean {word} over the methods")
    axis.set_ylabel(f"mean {word} over subjects")
    axis.set_title(f"{word} per region")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize=8, ncol=min(4, max(1, len(methods))))
    _save(figure, path)


def _normalised(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume, dtype=np.float32)
    high = np.percentile(volume[volume > 0], 99) if np.any(volume > 0) else 1.0
    return np.clip(volume / max(high, 1e-6), 0, 1)


def _outline(labels: np.ndarray) -> np.ndarray:
    """Where a 2D label map changes from one pixel to the next (inside the labelled region)."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    return edge & (labels > 0)


def overlay(fixed: np.ndarray, moving: dict[str, np.ndarray], path: str | os.PathLike, title: str,
            fixed_labels: np.ndarray | None = None) -> None:
    """The fixed image (green) and the moving one (magenta) on the same three orthogonal slices
    through the fixed brain, a column for each entry of ``moving`` (before registration, then
    after each method, all on the fixed grid), with the fixed image's label outlines (yellow)
    where given; aligned structures look grey."""
    fixed = _normalised(fixed)
    centre = [int(round(c)) for c in np.argwhere(fixed > 0.1).mean(0)] if np.any(fixed > 0.1) else [s // 2 for s in fixed.shape]
    figure = Figure(figsize=(2.2 * len(moving), 6.6))
    axes = figure.subplots(3, len(moving), squeeze=False)
    for column, (name, image) in enumerate(moving.items()):
        image = _normalised(image)
        for row in range(3):
            index = [slice(None)] * 3
            index[row] = centre[row]
            green, magenta = fixed[tuple(index)], image[tuple(index)]
            rgb = np.stack([magenta, green, magenta], -1)
            if fixed_labels is not None:
                rgb[_outline(fixed_labels[tuple(index)])] = _OUTLINE
            axes[row, column].imshow(np.rot90(rgb), interpolation="nearest")
            axes[row, column].set_axis_off()
        axes[0, column].set_title(name, fontsize=9)
    figure.suptitle(title, fontsize=10)
    _save(figure, path)
