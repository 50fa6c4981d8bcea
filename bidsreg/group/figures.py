"""Group figures (matplotlib, written as PNG files): Dice boxplots and before/after overlays."""
from __future__ import annotations

import os

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..atomic import atomic_output
from .tables import ordered_methods

__all__ = ["method_boxplot", "overlay", "region_boxplot"]


def _save(figure: Figure, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight", format="png")


def method_boxplot(subjects: pd.DataFrame, path: str | os.PathLike, measure: str = "dice") -> None:
    """One box per method of the subjects' mean ``measure`` over labels, subjects as dots."""
    data = subjects.dropna(subset=[measure])
    methods = ordered_methods(data["method"].unique())
    figure = Figure(figsize=(1.2 * len(methods) + 2, 4))
    axis = figure.subplots()
    values = [data.loc[data["method"] == m, measure].to_numpy(float) for m in methods]
    axis.boxplot(values, showfliers=False)
    axis.set_xticks(range(1, len(methods) + 1), methods)
    for position, points in enumerate(values, start=1):
        axis.plot(np.full(points.size, position) + np.linspace(-0.1, 0.1, points.size), points, "o", alpha=0.6)
    axis.set_ylabel(f"mean {measure} over labels")
    axis.set_title(f"{measure} per method (one dot per subject)")
    axis.grid(axis="y", alpha=0.3)
    _save(figure, path)


def region_boxplot(labels: pd.DataFrame, path: str | os.PathLike, measure: str = "dice") -> None:
    """Boxes of ``measure`` over subjects, per region (rows) and method (colours)."""
    methods = [m for m in ordered_methods(labels["method"].unique()) if m != "original"]
    names = labels[["label", "name"]].drop_duplicates().sort_values("label")
    regions = [n if isinstance(n, str) and n else str(label) for label, n in zip(names["label"], names["name"])]
    figure = Figure(figsize=(8, 0.25 * len(regions) * max(1, len(methods)) ** 0.5 + 2))
    axis = figure.subplots()
    width = 0.8 / max(1, len(methods))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, method in enumerate(methods):
        chosen = labels[labels["method"] == method]
        values = [chosen.loc[chosen["label"] == label, measure].dropna().to_numpy(float) for label in names["label"]]
        positions = np.arange(len(regions)) + (index - (len(methods) - 1) / 2) * width
        boxes = axis.boxplot(values, positions=positions, widths=width * 0.9, orientation="horizontal", patch_artist=True,
                             showfliers=False, manage_ticks=False)
        for box in boxes["boxes"]:
            box.set_facecolor(colours[index % len(colours)])
        axis.plot([], [], "s", color=colours[index % len(colours)], label=method)
    axis.set_yticks(range(len(regions)), regions, fontsize=7)
    axis.set_ylim(len(regions) - 0.5, -0.5)  # the first label on top
    axis.set_xlabel(measure)
    axis.legend(loc="lower left", fontsize=8)
    axis.set_title(f"{measure} per region (boxes over subjects)")
    _save(figure, path)


def overlay(fixed: np.ndarray, before: np.ndarray, after: np.ndarray, path: str | os.PathLike, title: str) -> None:
    """Fixed image (green) and moving image (magenta) before and after registration, in three
    orthogonal mid-slices through the fixed brain; aligned structures look grey."""
    def normalised(volume: np.ndarray) -> np.ndarray:
        high = np.percentile(volume[volume > 0], 99) if np.any(volume > 0) else 1.0
        return np.clip(volume / max(high, 1e-6), 0, 1)

    fixed, before, after = (normalised(np.asarray(v, dtype=np.float32)) for v in (fixed, before, after))
    centre = [int(round(c)) for c in np.argwhere(fixed > 0.1).mean(0)] if np.any(fixed > 0.1) else [s // 2 for s in fixed.shape]
    figure = Figure(figsize=(9, 6))
    axes = figure.subplots(2, 3)
    for row, (moving, label) in enumerate(((before, "before"), (after, "after"))):
        for column in range(3):
            index = [slice(None)] * 3
            index[column] = centre[column]
            green, magenta = fixed[tuple(index)], moving[tuple(index)]
            rgb = np.stack([magenta, green, magenta], -1)
            axes[row, column].imshow(np.rot90(rgb), interpolation="nearest")
            axes[row, column].set_axis_off()
        axes[row, 0].set_title(label, loc="left", fontsize=9)
    figure.suptitle(title, fontsize=10)
    _save(figure, path)
