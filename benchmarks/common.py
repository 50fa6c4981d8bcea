"""Shared helpers of the benchmark scripts: data location, cached training, result files."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bidsreg.atomic import atomic_output
from bidsreg.image import Volume, load_volume
from bidsreg.itk import read_displacement
from bidsreg.methods.cnn import register_pair
from bidsreg.methods.training import train_model
from bidsreg.metrics import jacobian_stats, overlap_table, summarise, world_jacobian_determinant
from bidsreg.nn.grid import prepare_image, translation
from bidsreg.nn.instance import VelocityOptimisation
from bidsreg.nn.train import TrainConfig
from bidsreg.transform import Transform

REPO = Path(__file__).resolve().parents[1]
TRAIN_SUBJECTS = [f"{i:02d}" for i in range(1, 9)]
TEST_SUBJECTS = [f"{i:02d}" for i in range(9, 13)]
ROWS = ["original", "com", "global", "registered", "antsaffine", "antssyn"]


def oasis_dir(explicit: str | None = None) -> Path:
    """The OASIS-TRT-20 dev dataset: ``explicit``, ``$BIDSREG_OASIS_DIR`` or ``../shared/data``.

    An ``explicit`` folder that is not a BIDS dataset is an error (SystemExit naming it), not
    a reason to look elsewhere.
    """
    if explicit and not (Path(explicit) / "dataset_description.json").is_file():
        raise SystemExit(f"{explicit}: not a BIDS dataset (no dataset_description.json); pass the OASIS-TRT-20 "
                         "folder, e.g. --data ../shared/data/oasis-trt-20-dev")
    candidates = [explicit, os.environ.get("BIDSREG_OASIS_DIR"), REPO.parent / "shared/data/oasis-trt-20-dev"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "dataset_description.json").is_file():
            return Path(candidate)
    raise SystemExit("OASIS-TRT-20 data not found: pass --data or set BIDSREG_OASIS_DIR")


def t1w(data: Path, subject: str) -> Path:
    return data / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz"


def labels(data: Path, subject: str, desc: str = "DKT31aseg", derivative: str = "manual") -> Path:
    return data / "derivatives" / derivative / f"sub-{subject}" / "anat" / f"sub-{subject}_desc-{desc}_dseg.nii.gz"


def training_pairs(text: str) -> list[tuple[str, str]]:
    """``moving:fixed,...`` as (moving, fixed) pairs; SystemExit unless every subject is a
    training subject (settings are chosen on those only, CONVENTIONS.md)."""
    pairs = [tuple(item.split(":")) for item in text.split(",")]
    for moving_id, fixed_id in pairs:
        if {moving_id, fixed_id} - set(TRAIN_SUBJECTS):
            raise SystemExit(f"sub-{moving_id} -> sub-{fixed_id}: settings are chosen on the training subjects "
                             f"{TRAIN_SUBJECTS[0]}..{TRAIN_SUBJECTS[-1]} only")
    return pairs


def cache_dir() -> Path:
    path = Path(os.environ.get("BIDSREG_CACHE", Path.home() / ".cache" / "bidsreg"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def trained_checkpoint(data: Path, config: TrainConfig, device: str, cache: Path | None = None) -> Path:
    """Train on sub-01..08 (no labels) unless a finished checkpoint of this config is cached."""
    key = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    path = (cache or cache_dir()) / f"oasis-train-{key}.pt"
    train_model([t1w(data, s) for s in TRAIN_SUBJECTS], path, config, device=device)
    return path


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=float))


def dice(warped: np.ndarray, fixed_labels: Volume) -> float:
    """Mean Dice over the labels of ``fixed_labels`` of a label map already on its grid."""
    return summarise(overlap_table(warped, fixed_labels.data, spacing=fixed_labels.spacing))["dice"]


def label_dice(moving_labels: Volume, fixed_labels: Volume, transform: Transform) -> float:
    """:func:`dice` after warping ``moving_labels`` (nearest) onto the fixed labels' grid."""
    return dice(transform.apply(moving_labels, fixed_labels.grid, nearest=True), fixed_labels)


def cnn_pair(model, fixed_path, moving_path, fixed, fixed_labels, moving_labels, global_steps: int = 0,
             local_instance: VelocityOptimisation | None = None) -> dict:
    """Dice of original / com / global / registered (+ folding, SDlogJ, seconds) of one CNN pair
    (with ``global_steps`` and ``local_instance``: the instance optimisations of ``register_pair``)."""
    tick = time.perf_counter()
    result = register_pair(fixed_path, moving_path, model, global_instance_steps=global_steps,
                           local_instance=local_instance)
    seconds = time.perf_counter() - tick
    transform = result.transform
    com = translation(prepare_image(load_volume(moving_path), model.preprocess).centre
                      - prepare_image(fixed, model.preprocess).centre)
    out = {
        "original": {"dice": label_dice(moving_labels, fixed_labels, Transform(np.eye(4)))},
        "com": {"dice": label_dice(moving_labels, fixed_labels, Transform(com))},
        "global": {"dice": label_dice(moving_labels, fixed_labels, Transform(transform.affine)), "seconds": seconds},
    }
    det = world_jacobian_determinant(transform.displacement, transform.field_affine)
    stats = jacobian_stats(det, fixed.data > 0)
    out["registered"] = {
        "dice": label_dice(moving_labels, fixed_labels, transform),
        "seconds": seconds,
        "folding_percent": stats["folding_percent"],
        "sdlogj": stats["sdlogj"],
    }
    return out


def ants_pair(kind: str, fixed_path, moving_path, moving_labels_path, fixed, fixed_labels) -> dict:
    """Dice (+ folding, SDlogJ, seconds) of antspyx ``type_of_transform=kind`` on one pair."""
    import ants

    fixed_img = ants.image_read(str(fixed_path))
    moving_img = ants.image_read(str(moving_path))
    with tempfile.TemporaryDirectory() as tmp:
        tick = time.perf_counter()
        reg = ants.registration(fixed_img, moving_img, type_of_transform=kind, outprefix=f"{tmp}/r_")
        seconds = time.perf_counter() - tick
        warped = ants.apply_transforms(
            fixed_img,
            ants.image_read(str(moving_labels_path)),
            reg["fwdtransforms"],
            interpolator="nearestNeighbor",
        )
        out = {"dice": dice(warped.numpy().astype(np.int32), fixed_labels), "seconds": seconds}
        warps = [t for t in reg["fwdtransforms"] if t.endswith(".nii.gz")]
        if warps:
            field, field_affine = read_displacement(warps[0])
            stats = jacobian_stats(world_jacobian_determinant(field, field_affine), fixed.data > 0)
            out.update(folding_percent=stats["folding_percent"], sdlogj=stats["sdlogj"])
    return out


def summary_table(pairs: dict) -> tuple[str, dict]:
    """Markdown table and summary (mean, sd per row and measure) of per-pair results."""
    summary, lines = {}, ["| | Dice mean ± sd | % folding | SDlogJ | s / pair |", "|---|---|---|---|---|"]
    for row in ROWS:
        values = [p[row] for p in pairs.values() if row in p]
        if not values:
            continue
        stats = {}
        for key in ("dice", "folding_percent", "sdlogj", "seconds"):
            v = np.array([x[key] for x in values if key in x], dtype=float)
            stats[key] = (float(v.mean()), float(v.std())) if len(v) else None
        summary[row] = stats

        def fmt(key, digits):
            s = stats[key]
            return "" if s is None else f"{s[0]:.{digits}f} ± {s[1]:.{digits}f}"

        lines.append(f"| {row} | {fmt('dice', 3)} | {fmt('folding_percent', 3)} | {fmt('sdlogj', 3)} | {fmt('seconds', 1)} |")
    return "\n".join(lines), summary
