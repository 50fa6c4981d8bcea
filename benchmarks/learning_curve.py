"""Learning curve of a fine-tuning on the cohort: the fast mode's Dice against training CPU-minutes.

Fine-tunes the two-stage network from the shipped weights on sub-01..08 (T1w, no labels), with
the configuration of ``bidsreg ... train --initial-weights default --affine-steps A
--deformable-steps D``: A global steps, then D local ones. The training stops every ``--every``
local steps (it resumes from its checkpoint, so the stops do not change it) and the fast mode,
``cnn`` (the two networks alone), is measured there on pairs of training subjects (where a
schedule is chosen, CONVENTIONS.md) and on the 12 evaluation pairs of sub-09..12 (reported,
never chosen on). Each stop's checkpoint is kept (``--out``, outside the work tree).

    python benchmarks/learning_curve.py [--affine-steps 1000] [--deformable-steps 800]
        [--every 100] [--pairs 02:01,04:03,06:05,08:07] [--out DIR] [--threads 2] [--tag NAME]

Figures are printed and written to benchmarks/results/learning_curve_<tag>.{json,md,png}.
"""
from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    TEST_SUBJECTS,
    TRAIN_SUBJECTS,
    cache_dir,
    label_dice,
    labels,
    oasis_dir,
    t1w,
    training_pairs,
    write_json,
)

from bidsreg.data import DEFAULT_MODEL  # noqa: E402
from bidsreg.image import load_volume  # noqa: E402
from bidsreg.methods.cnn import register_pair  # noqa: E402
from bidsreg.methods.training import train_model  # noqa: E402
from bidsreg.nn.checkpoint import load_checkpoint  # noqa: E402
from bidsreg.nn.model import RegistrationModel  # noqa: E402
from bidsreg.nn.train import TrainConfig  # noqa: E402


def mean_dice(model: RegistrationModel, data: Path, pairs: list[tuple[str, str]]) -> tuple[float, list[float]]:
    """Mean DKT31aseg Dice of the fast mode over ``(moving, fixed)`` pairs, and each pair's."""
    values = []
    for moving_id, fixed_id in pairs:
        transform = register_pair(t1w(data, fixed_id), t1w(data, moving_id), model).transform
        values.append(label_dice(load_volume(labels(data, moving_id), labels=True),
                                 load_volume(labels(data, fixed_id), labels=True), transform))
    return float(np.mean(values)), values


def plot(rows: list[dict], path: Path) -> None:
    """Dice of both pair sets against training CPU-minutes."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    minutes = [row["minutes"] for row in rows]
    for key, label in (("training_pairs", "training pairs (choice)"), ("evaluation_pairs", "evaluation pairs")):
        axis.plot(minutes, [row[key] for row in rows], "o-", label=label)
    for row in rows:
        axis.annotate(f"{row['local_steps']}", (row["minutes"], row["evaluation_pairs"]), fontsize=7,
                      textcoords="offset points", xytext=(0, 5), ha="center")
    axis.set_xlabel("training minutes (2 CPU threads), from the shipped weights")
    axis.set_ylabel("fast mode (cnn) mean Dice, DKT31aseg")
    axis.set_title("fine-tuning on sub-01..08: local steps annotated")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=100, bbox_inches="tight")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="OASIS-TRT-20 dev dataset (default: $BIDSREG_OASIS_DIR or ../shared)")
    parser.add_argument("--affine-steps", type=int, default=1000)
    parser.add_argument("--deformable-steps", type=int, default=800)
    parser.add_argument("--every", type=int, default=100, help="local steps between two measurements")
    parser.add_argument("--pairs", default="02:01,04:03,06:05,08:07", help="moving:fixed training subjects")
    parser.add_argument("--out", type=Path, help="checkpoints (default: ~/.cache/bidsreg/learning_curve)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="finetune")
    args = parser.parse_args(argv)
    if args.every < 1 or args.deformable_steps % args.every:
        parser.error("--every must divide --deformable-steps")
    torch.set_num_threads(args.threads)
    data = oasis_dir(args.data)
    out = args.out or cache_dir() / "learning_curve"
    out.mkdir(parents=True, exist_ok=True)
    images = [t1w(data, subject) for subject in TRAIN_SUBJECTS]
    config = TrainConfig(affine_steps=args.affine_steps, deformable_steps=args.deformable_steps)
    initial = load_checkpoint(DEFAULT_MODEL)
    checkpoint = out / "training.pt"
    choice, evaluation = training_pairs(args.pairs), [(m, f) for f, m in itertools.permutations(TEST_SUBJECTS, 2)]
    stops = [(0, DEFAULT_MODEL)] + [(args.affine_steps + k, None) for k in range(0, args.deformable_steps + 1, args.every)]
    rows = []
    for steps, path in stops:
        if path is None:
            payload = train_model(images, checkpoint, config, initial=initial, until=steps, progress=False)
            path = out / f"steps_{steps}.pt"
            shutil.copyfile(checkpoint, path)
            seconds = float(payload["training"].get("seconds") or 0.0)
        else:
            seconds = 0.0
        model = RegistrationModel.from_checkpoint(path, "cpu")
        tick = time.perf_counter()
        train_dice, _ = mean_dice(model, data, choice)
        eval_dice, per_pair = mean_dice(model, data, evaluation)
        row = {"steps": steps, "local_steps": max(steps - args.affine_steps, 0), "minutes": seconds / 60,
               "training_pairs": train_dice, "evaluation_pairs": eval_dice, "evaluation_per_pair": per_pair,
               "seconds_per_pair": (time.perf_counter() - tick) / (len(choice) + len(evaluation))}
        rows.append(row)
        print(f"{steps} steps ({row['minutes']:.1f} min): training pairs {train_dice:.4f}, "
              f"evaluation pairs {eval_dice:.4f}", flush=True)
    command = "python benchmarks/learning_curve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"`{command.strip()}`", "",
             f"Fast mode (cnn, the networks alone), mean DKT31aseg Dice; fine-tuning from the shipped weights on "
             f"sub-01..08, {args.affine_steps} global steps then local ones; {args.threads} CPU threads.", "",
             "| global + local steps | training minutes | training pairs (choice) | evaluation pairs (12) |",
             "|---|---|---|---|"]
    for row in rows:
        name = "shipped weights" if row["steps"] == 0 else f"{args.affine_steps} + {row['local_steps']}"
        lines.append(f"| {name} | {row['minutes']:.1f} | {row['training_pairs']:.4f} | {row['evaluation_pairs']:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    results = REPO / "benchmarks" / "results" / f"learning_curve_{args.tag}"
    write_json(results.with_suffix(".json"), {"command": command.strip(), "pairs": args.pairs,
                                              "train_config": config.to_dict(), "rows": rows})
    results.with_suffix(".md").write_text(text)
    plot(rows, results.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
