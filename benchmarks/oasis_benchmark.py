"""Accuracy benchmark on OASIS-TRT-20 (evaluation protocol of CONVENTIONS.md).

Trains both stages on sub-01..sub-08 (T1w only, no labels; cached under ~/.cache/bidsreg),
registers the 12 ordered pairs among sub-09..sub-12 and reports mean ± sd Dice on the
DKT31aseg labels (on the fixed image's 1 mm grid) for original / com / global / registered,
with % folding, SDlogJ and seconds per pair, next to antspyx Affine and SyN on the same pairs.

    python benchmarks/oasis_benchmark.py [--data DIR] [--device auto] [--skip-ants]
        [--global-instance-steps N] [--local-instance-steps N]

Figures are printed and written to benchmarks/results/oasis_<tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    TEST_SUBJECTS,
    cache_dir,
    dice,
    label_dice,
    labels,
    oasis_dir,
    t1w,
    trained_checkpoint,
    write_json,
)

from bidsreg.image import load_volume  # noqa: E402
from bidsreg.itk import read_displacement  # noqa: E402
from bidsreg.metrics import jacobian_stats, world_jacobian_determinant  # noqa: E402
from bidsreg.nn.train import TrainConfig  # noqa: E402
from bidsreg.registration import RegistrationModel, register  # noqa: E402

ROWS = ["original", "com", "global", "registered", "antsaffine", "antssyn"]


def _cnn_pair(model, fixed_id, moving_id, data, fixed, fixed_labels, moving_labels, steps=(0, 0)) -> dict:
    tick = time.perf_counter()
    result = register(
        t1w(data, fixed_id), t1w(data, moving_id), model, global_instance_steps=steps[0], local_instance_steps=steps[1]
    )
    seconds = time.perf_counter() - tick
    out = {
        "original": {"dice": label_dice(moving_labels, fixed_labels, np.eye(4))},
        "com": {"dice": label_dice(moving_labels, fixed_labels, result.com_affine)},
        "global": {"dice": label_dice(moving_labels, fixed_labels, result.affine), "seconds": seconds},
    }
    det = world_jacobian_determinant(result.displacement, fixed.affine)
    stats = jacobian_stats(det, fixed.data > 0)
    out["registered"] = {
        "dice": label_dice(moving_labels, fixed_labels, result.affine, result.displacement),
        "seconds": seconds,
        "folding_percent": stats["folding_percent"],
        "sdlogj": stats["sdlogj"],
    }
    return out


def _ants_pair(kind: str, fixed_id, moving_id, data, fixed, fixed_labels) -> dict:
    import ants

    fixed_img = ants.image_read(str(t1w(data, fixed_id)))
    moving_img = ants.image_read(str(t1w(data, moving_id)))
    with tempfile.TemporaryDirectory() as tmp:
        tick = time.perf_counter()
        reg = ants.registration(fixed_img, moving_img, type_of_transform=kind, outprefix=f"{tmp}/r_")
        seconds = time.perf_counter() - tick
        warped = ants.apply_transforms(
            fixed_img,
            ants.image_read(str(labels(data, moving_id))),
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


def _cached(path: Path, compute) -> dict:
    """Per-pair results are cached so that an interrupted benchmark resumes where it stopped."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    write_json(path, result)
    return result


def _table(pairs: dict) -> tuple[str, dict]:
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="OASIS-TRT-20 BIDS folder (default: $BIDSREG_OASIS_DIR or ../shared)")
    parser.add_argument("--device", default="auto", help="training/inference device: auto, cpu, cuda")
    parser.add_argument("--affine-steps", type=int, default=TrainConfig.affine_steps)
    parser.add_argument("--deformable-steps", type=int, default=TrainConfig.deformable_steps)
    parser.add_argument("--skip-ants", action="store_true", help="CNN only (no antspyx baselines)")
    parser.add_argument("--global-instance-steps", type=int, default=0, help="instance optimisation of the affine")
    parser.add_argument("--local-instance-steps", type=int, default=0, help="instance optimisation of the field")
    parser.add_argument("--tag", default=None, help="name of the result files (default: from the steps)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    data = oasis_dir(args.data)
    config = TrainConfig(affine_steps=args.affine_steps, deformable_steps=args.deformable_steps)
    tick = time.perf_counter()
    checkpoint = trained_checkpoint(data, config, args.device)
    print(f"checkpoint {checkpoint} ready in {time.perf_counter() - tick:.0f} s")
    model = RegistrationModel.from_checkpoint(checkpoint, args.device)
    steps = (args.global_instance_steps, args.local_instance_steps)
    variant = (f"g{steps[0]}_" if steps[0] else "") + f"i{steps[1]}"
    tag = args.tag or f"a{args.affine_steps}_d{args.deformable_steps}_{variant}"
    results = REPO / "benchmarks" / "results" / f"oasis_{tag}"
    pairs, cache = {}, cache_dir() / "oasis-results"
    # CNN results depend on the library's code as well as on the checkpoint.
    code = hashlib.sha1(b"".join(path.read_bytes() for path in sorted((REPO / "bidsreg").rglob("*.py")))).hexdigest()[:8]
    for fixed_id, moving_id in itertools.permutations(TEST_SUBJECTS, 2):
        fixed = load_volume(t1w(data, fixed_id))
        fixed_labels = load_volume(labels(data, fixed_id), labels=True)
        moving_labels = load_volume(labels(data, moving_id), labels=True)
        name = f"{moving_id}to{fixed_id}"
        pair = _cached(cache / f"{checkpoint.stem}_{code}_{variant}_{name}.json", lambda: _cnn_pair(
            model, fixed_id, moving_id, data, fixed, fixed_labels, moving_labels, steps
        ))
        if not args.skip_ants:
            for row, kind in (("antsaffine", "Affine"), ("antssyn", "SyN")):
                pair[row] = _cached(cache / f"ants_{kind}_{name}.json", lambda: _ants_pair(
                    kind, fixed_id, moving_id, data, fixed, fixed_labels
                ))
        pairs[f"sub-{moving_id}->sub-{fixed_id}"] = pair
        print(f"sub-{moving_id} -> sub-{fixed_id}: " + ", ".join(f"{k} {v['dice']:.3f}" for k, v in pair.items()), flush=True)
    training = torch.load(checkpoint, weights_only=True)["training"]
    table, summary = _table(pairs)
    print(table)
    command = "python benchmarks/oasis_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(results.with_suffix(".json"), {
        "command": command.strip(),
        "checkpoint": checkpoint.name,
        "train_config": config.to_dict(),
        "training_device": training["device"],
        "training_seconds": training.get("seconds"),
        "threads": torch.get_num_threads(),
        "summary": summary,
        "pairs": pairs,
    })
    results.with_suffix(".md").write_text(f"`{command.strip()}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
