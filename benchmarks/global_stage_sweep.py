"""Sweep of the global stage's training length on training subjects only (CONVENTIONS.md).

Trains stage 1 alone on OASIS-TRT-20 sub-01..sub-06 (T1w, no labels) and, after each of the
given step counts, measures the DKT31aseg Dice of the centre-of-mass start and of the global
stage on 14 pairs that involve the held-out training subjects sub-07 and sub-08 (sub-07 <->
sub-08, and each of them with three of sub-01..06 in each direction), both for the network in
one direction and for the symmetric global stage that registration uses. The evaluation
subjects sub-09..sub-12 are never read.

    python benchmarks/global_stage_sweep.py [--data DIR] [--steps 4000,8000,12000]
        [--fixed-augmentation ROTATION,SCALING,TRANSLATION] [--tag TAG]

``--fixed-augmentation`` overrides the fixed image's augmentation bounds (degrees, relative
scaling, mm; TrainConfig's fixed_max_*), e.g. ``15,0.1,10`` to augment it like the moving one.
Figures are printed and written to benchmarks/results/global_sweep[_TAG].{json,md}. The training
checkpoint and a snapshot at each step count are cached under ~/.cache/bidsreg, so an
interrupted sweep resumes.
"""
from __future__ import annotations

import argparse
import itertools
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, cache_dir, label_dice, labels, oasis_dir, t1w, write_json  # noqa: E402

from bidsreg.image import load_volume  # noqa: E402
from bidsreg.methods.training import train_model  # noqa: E402
from bidsreg.nn.affine_stage import global_world_map, symmetric_world_map  # noqa: E402
from bidsreg.nn.checkpoint import build_networks, load_checkpoint  # noqa: E402
from bidsreg.nn.grid import prepare_image  # noqa: E402
from bidsreg.nn.train import TrainConfig  # noqa: E402
from bidsreg.transform import Transform  # noqa: E402

SWEEP_TRAIN = ["01", "02", "03", "04", "05", "06"]
PAIRS = (
    [("07", "08"), ("08", "07")]
    + [(held, seen) for held in ("07", "08") for seen in ("01", "03", "05")]
    + [(seen, held) for held in ("07", "08") for seen in ("02", "04", "06")]
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="OASIS-TRT-20 BIDS folder (default: $BIDSREG_OASIS_DIR or ../shared)")
    parser.add_argument("--steps", default="4000,8000,12000", help="comma-separated step counts")
    parser.add_argument("--fixed-augmentation", help="fixed image's bounds: degrees,scaling,mm (default: TrainConfig's)")
    parser.add_argument("--tag", help="suffix of the results files")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    data = oasis_dir(args.data)
    steps = sorted(int(s) for s in args.steps.split(","))
    config = TrainConfig(affine_steps=steps[-1], deformable_steps=0, checkpoint_every=500)
    if args.fixed_augmentation:
        rotation, scaling, shift = (float(v) for v in args.fixed_augmentation.split(","))
        config = replace(config, fixed_max_rotation=rotation, fixed_max_scaling=scaling, fixed_max_translation=shift)
    bounds = f"{config.fixed_max_rotation:g}-{config.fixed_max_scaling:g}-{config.fixed_max_translation:g}"
    checkpoint = cache_dir() / f"global-sweep-{steps[-1]}-fixed-{bounds}.pt"
    subjects = sorted(set(itertools.chain(*PAIRS)))
    label_maps = {s: load_volume(labels(data, s), labels=True) for s in subjects}
    prepared = {s: prepare_image(load_volume(t1w(data, s)), config.preprocess) for s in subjects}

    rows, com_dice = [], {}
    for until in steps:
        snapshot = checkpoint.with_name(f"{checkpoint.stem}-at-{until}.pt")
        if not snapshot.is_file():
            payload = train_model([t1w(data, s) for s in SWEEP_TRAIN], checkpoint, config, device="cpu", until=until, progress=False)
            if payload["training"]["steps"] != until:
                raise SystemExit(f"{checkpoint} is past {until} steps without a snapshot; delete it to sweep again")
            shutil.copyfile(checkpoint, snapshot)
        affine_net, _ = build_networks(load_checkpoint(snapshot))
        pairs = {}
        for fixed, moving in PAIRS:
            f, m = prepared[fixed], prepared[moving]
            with torch.no_grad():
                stage = symmetric_world_map(affine_net, f, m, config.preprocess)
                forward = global_world_map(affine_net, stage.grid, stage.fixed, m, stage.com)
            if (fixed, moving) not in com_dice:
                com_dice[fixed, moving] = label_dice(label_maps[moving], label_maps[fixed], Transform(stage.com))
            pairs[f"sub-{moving}->sub-{fixed}"] = {
                "com": com_dice[fixed, moving],
                "forward": label_dice(label_maps[moving], label_maps[fixed], Transform(forward)),
                "global": label_dice(label_maps[moving], label_maps[fixed], Transform(stage.world_map)),
            }
        means = {key: float(np.mean([p[key] for p in pairs.values()])) for key in ("com", "forward", "global")}
        better = sum(p["global"] > p["com"] for p in pairs.values())
        rows.append({"steps": until, **means, "better": better, "pairs": pairs})
        print(
            f"{until} steps: com {means['com']:.3f}, one direction {means['forward']:.3f}, "
            f"global (symmetric) {means['global']:.3f}, better than com on {better}/{len(pairs)}",
            flush=True,
        )
    lines = [
        "| global steps | com Dice | one direction Dice | global (symmetric) Dice | pairs improved |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['steps']} | {r['com']:.3f} | {r['forward']:.3f} | {r['global']:.3f} | {r['better']}/{len(PAIRS)} |"
        for r in rows
    ]
    command = "python benchmarks/global_stage_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = REPO / "benchmarks" / "results" / ("global_sweep" + (f"_{args.tag}" if args.tag else ""))
    summary = {"command": command.strip(), "train": SWEEP_TRAIN, "config": config.to_dict(), "rows": rows}
    write_json(results.with_suffix(".json"), summary)
    results.with_suffix(".md").write_text(f"`{command.strip()}`\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
