"""Shared helpers of the benchmark scripts: data location, cached training, result files."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from bidsreg.atomic import atomic_output
from bidsreg.image import Volume
from bidsreg.metrics import overlap_table, summarise
from bidsreg.nn.train import TrainConfig, train
from bidsreg.transforms import apply_transform

REPO = Path(__file__).resolve().parents[1]
TRAIN_SUBJECTS = [f"{i:02d}" for i in range(1, 9)]
TEST_SUBJECTS = [f"{i:02d}" for i in range(9, 13)]


def oasis_dir(explicit: str | None = None) -> Path:
    """The OASIS-TRT-20 dev dataset: ``explicit``, ``$BIDSREG_OASIS_DIR`` or ``../shared/data``."""
    candidates = [explicit, os.environ.get("BIDSREG_OASIS_DIR"), REPO.parent / "shared/data/oasis-trt-20-dev"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "dataset_description.json").is_file():
            return Path(candidate)
    raise SystemExit("OASIS-TRT-20 data not found: pass --data or set BIDSREG_OASIS_DIR")


def t1w(data: Path, subject: str) -> Path:
    return data / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz"


def labels(data: Path, subject: str, desc: str = "DKT31aseg") -> Path:
    return data / "derivatives" / "manual" / f"sub-{subject}" / "anat" / f"sub-{subject}_desc-{desc}_dseg.nii.gz"


def cache_dir() -> Path:
    path = Path(os.environ.get("BIDSREG_CACHE", Path.home() / ".cache" / "bidsreg"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def trained_checkpoint(data: Path, config: TrainConfig, device: str, cache: Path | None = None) -> Path:
    """Train on sub-01..08 (no labels) unless a finished checkpoint of this config is cached."""
    key = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    path = (cache or cache_dir()) / f"oasis-train-{key}.pt"
    train([t1w(data, s) for s in TRAIN_SUBJECTS], path, config, device=device)
    return path


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=float))


def dice(warped: np.ndarray, fixed_labels: Volume) -> float:
    """Mean Dice over the labels of ``fixed_labels`` of a label map already on its grid."""
    return summarise(overlap_table(warped, fixed_labels.data, spacing=fixed_labels.spacing))["dice"]


def label_dice(moving_labels: Volume, fixed_labels: Volume, affine: np.ndarray, displacement=None) -> float:
    """:func:`dice` after warping ``moving_labels`` (nearest) onto the fixed labels' grid."""
    warped = apply_transform(
        moving_labels, fixed_labels.shape, fixed_labels.affine, affine, displacement, interpolation="nearest"
    )
    return dice(warped, fixed_labels)
