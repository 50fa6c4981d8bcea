"""A model card for a trained checkpoint: what it was trained on and how (JSON), and its loss curves (PNG)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from ..nn.checkpoint import has_global_stage
from ..provenance import generated_by

__all__ = ["read_model_card", "write_model_card"]


def read_model_card(checkpoint: str | os.PathLike) -> dict:
    """The model card beside a checkpoint (``<stem>.json``); empty when there is none."""
    card = Path(checkpoint).with_suffix(".json")
    return json.loads(card.read_text()) if card.is_file() else {}


def _smoothed(values: list[float], window: int = 50) -> np.ndarray:
    data = np.asarray(values, dtype=float)
    if data.size < window:
        return data
    return np.convolve(data, np.ones(window) / window, mode="valid")


def write_model_card(
    checkpoint: str | os.PathLike,
    payload: dict,
    dataset: str | os.PathLike,
    subjects: list[str],
    *,
    extra: dict | None = None,
) -> Path:
    """Write ``<checkpoint stem>.json`` and ``<checkpoint stem>_loss.png`` beside the checkpoint.

    Parameters
    ----------
    checkpoint : path-like
        The checkpoint file (hashed into the card).
    payload : dict
        Its content (as :func:`bidsreg.methods.training.train_model` returns it).
    dataset : path-like
        The BIDS dataset it was trained on.
    subjects : list of str
        The training subjects' labels.
    extra : dict, optional
        Entries added to the card (or replacing its own), e.g. ``Evaluation``.

    Returns
    -------
    Path
        The JSON card.
    """
    from matplotlib.figure import Figure

    checkpoint = Path(checkpoint)
    training = payload["training"]
    history = training["history"]
    tail = {stage: float(np.mean(values[-50:])) if values else None for stage, values in history.items()}
    card = {
        "Name": checkpoint.stem,
        "Checkpoint": checkpoint.name,
        "SHA256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "GeneratedBy": generated_by(),
        "Method": _method_text(payload),
        "TrainingData": {"Dataset": str(dataset), "Subjects": [f"sub-{s}" for s in subjects],
                         "Images": training["data"]["n_images"], "Labels": "none (unsupervised)"},
        "Training": {"Steps": training["steps"], "Seconds": round(float(training["seconds"]), 1),
                     "Device": training["device"], "Seed": training["seed"], "Complete": training["complete"],
                     "FinalLoss(mean of last 50 steps)": tail, **_initial_entry(training)},
        "Config": training["config"],
        "Preprocessing": payload["preprocess"],
        "IntendedUse": "skull-stripped T1w brain MRI like the training images; check the group report's "
                       "overlaps against the ANTs baselines before relying on it",
        **(extra or {}),
    }
    stem = checkpoint.with_suffix("")
    figure = Figure(figsize=(5 * len(history), 3.5))
    axes = figure.subplots(1, len(history), squeeze=False)
    for axis, (stage, values) in zip(axes[0], history.items()):
        axis.plot(np.asarray(values, dtype=float), alpha=0.3, label="per step")
        smooth = _smoothed(values)
        axis.plot(np.arange(smooth.size) + (len(values) - smooth.size), smooth, label="moving mean (50)")
        axis.set_title(f"{stage} stage")
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.legend(fontsize=8)
    figure.tight_layout()
    png = Path(f"{stem}_loss.png")
    with atomic_output(png) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    card["LossCurve"] = png.name
    path = Path(f"{stem}.json")
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    return path


def _initial_entry(training: dict) -> dict:
    """The card's ``InitialWeights`` entry of a training started from other weights (empty: from scratch)."""
    initial = training.get("initial")
    if initial is None:
        return {}
    field = "velocity" if initial["config"].get("diffeomorphic") else "displacement"
    return {"InitialWeights": {"Steps": initial["steps"], "Seconds": round(float(initial["seconds"]), 1),
                               "Device": initial["device"], "Images": initial["data"]["n_images"],
                               "Field": field}}


def _method_text(payload: dict) -> str:
    """The card's one-line description of the networks of a checkpoint."""
    field = ("U-Net stationary velocity field, integrated by scaling and squaring"
             if payload["networks"]["deformable"].get("diffeomorphic") else "U-Net displacement field")
    loss = "(local NCC over 9^3 windows + gradient smoothness)"
    if has_global_stage(payload):
        return f"two-stage unsupervised registration CNN: global affine network (squared global NCC), then {field} {loss}"
    return (f"one-stage unsupervised registration CNN (voxelmorph): {field} {loss} on centre-of-mass aligned pairs, "
            "no affine network")
