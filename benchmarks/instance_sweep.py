"""Instance optimisation of the local stage on training pairs: Dice, folding and seconds per setting.

Every setting of :class:`bidsreg.nn.instance.VelocityOptimisation` is chosen here, on pairs of
OASIS-TRT-20 training subjects (sub-01..08, CONVENTIONS.md), never on the evaluation subjects.
For each pair the global stage and the network run once; each variant then fits its velocity
field from the network's output, and the result is measured on the fixed 1 mm grid (DKT31aseg
Dice, % folding of the brain, SDlogJ) with the seconds of the optimisation alone.

    python benchmarks/instance_sweep.py --model CKPT [--pairs 02:01,04:03] [--threads 2]
        [--variants NAME=FIELD:VALUE;FIELD:VALUE,...] [--affine-steps N] [--tag NAME]

Figures are printed and written to benchmarks/results/instance_sweep_<tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, label_dice, labels, oasis_dir, t1w, training_pairs, write_json  # noqa: E402

from bidsreg.image import load_volume  # noqa: E402
from bidsreg.itk import resample_field  # noqa: E402
from bidsreg.methods.cnn import register_pair  # noqa: E402
from bidsreg.metrics import jacobian_stats, world_jacobian_determinant  # noqa: E402
from bidsreg.nn.affine_stage import symmetric_world_map  # noqa: E402
from bidsreg.nn.grid import prepare_image  # noqa: E402
from bidsreg.nn.instance import VelocityOptimisation, integrate_velocity, optimise_velocity  # noqa: E402
from bidsreg.nn.model import RegistrationModel  # noqa: E402
from bidsreg.transform import Transform  # noqa: E402

#: The settings compared by default: the network alone, then the optimisation's defaults and one
#: change of each of its parameters.
VARIANTS = {
    "default": {},
    "coarse_only": {"factors": (2,), "iterations": (80,)},
    "fine_more": {"iterations": (60, 40)},
    "lr_0.1": {"lr": 0.1},
    "lr_0.5": {"lr": 0.5},
    "reg_0.3": {"regularisation": 0.3},
    "reg_3": {"regularisation": 3.0},
    "smoothing_0": {"smoothing": 0},
    "smoothing_2": {"smoothing": 2},
}


def _parse_variants(text: str) -> dict:
    out = {}
    for item in text.split(","):
        name, _, body = item.partition("=")
        changes = {}
        for assignment in filter(None, body.split(";")):
            key, _, value = assignment.partition(":")
            numbers = tuple(float(v) if "." in v else int(v) for v in value.split("/"))
            changes[key] = numbers if len(numbers) > 1 or key in ("factors", "iterations") else numbers[0]
        out[name] = changes
    return out


def _measure(transform: Transform, moving_labels, fixed_labels, brain) -> dict:
    stats = jacobian_stats(world_jacobian_determinant(transform.displacement, transform.field_affine), brain)
    return {"dice": label_dice(moving_labels, fixed_labels, transform), "folding_percent": stats["folding_percent"],
            "sdlogj": stats["sdlogj"]}


def _pair(model: RegistrationModel, data: Path, fixed_id: str, moving_id: str, variants: dict, affine_steps: int) -> dict:
    fixed_vol, moving_vol = load_volume(t1w(data, fixed_id)), load_volume(t1w(data, moving_id))
    fixed_labels, moving_labels = load_volume(labels(data, fixed_id)), load_volume(labels(data, moving_id))
    brain = fixed_vol.data > 0
    with torch.no_grad():
        fixed_img, moving_img = (prepare_image(v, model.preprocess) for v in (fixed_vol, moving_vol))
        stage = symmetric_world_map(model.affine_net, fixed_img, moving_img, model.preprocess, affine_steps)
        moving_grid = stage.grid.resample(moving_img, stage.world_map)
        tick = time.perf_counter()
        start = model.deformable_net.velocity(stage.fixed, moving_grid)
        network_seconds = time.perf_counter() - tick
    network = register_pair(fixed_vol, moving_vol, model, affine=stage.world_map).transform
    out = {"affine": {"dice": label_dice(moving_labels, fixed_labels, Transform(stage.world_map))},
           "network": {**_measure(network, moving_labels, fixed_labels, brain), "seconds": network_seconds}}
    for name, changes in variants.items():
        changes = dict(changes)
        from_zero = bool(changes.pop("from_zero", 0))  # ignore the network: optimisation alone
        config = dataclasses.replace(VelocityOptimisation(), **changes)
        tick = time.perf_counter()
        with torch.no_grad():
            velocity, trace = optimise_velocity(stage.fixed, moving_grid, None if from_zero else start, config)
            field = stage.grid.displacement_to_world(integrate_velocity(velocity, config.squarings))
        seconds = time.perf_counter() - tick
        displacement = resample_field(field[0].permute(1, 2, 3, 0).numpy(), stage.grid.affine, fixed_vol.shape,
                                      fixed_vol.affine)
        transform = Transform(stage.world_map, displacement, None, fixed_vol.affine)
        out[name] = {**_measure(transform, moving_labels, fixed_labels, brain), "seconds": seconds,
                     "config": dataclasses.asdict(config), "from_zero": from_zero,
                     "levels": [dataclasses.asdict(level) for level in trace]}
        print(f"  sub-{moving_id} -> sub-{fixed_id} {name}: Dice {out[name]['dice']:.4f}, folding "
              f"{out[name]['folding_percent']:.3f} %, {seconds:.1f} s "
              + ", ".join(f"x{t.factor}: {t.first_loss:.4f} -> {t.last_loss:.4f} in {t.seconds:.1f} s" for t in trace),
              flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="two-stage checkpoint trained on sub-01..08")
    parser.add_argument("--data", help="OASIS-TRT-20 dev dataset (default: $BIDSREG_OASIS_DIR or ../shared)")
    parser.add_argument("--pairs", default="02:01,04:03", help="moving:fixed training subjects, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", help="NAME=FIELD:VALUE;FIELD:VALUE,... (tuples as 2/1); default: the sweep")
    parser.add_argument("--affine-steps", type=int, default=200, help="global instance optimisation (cnnio's)")
    parser.add_argument("--tag", default="training_pairs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = oasis_dir(args.data)
    pairs = training_pairs(args.pairs)
    variants = _parse_variants(args.variants) if args.variants else VARIANTS
    model = RegistrationModel.from_checkpoint(args.model, "cpu")
    results = {f"{m}->{f}": _pair(model, data, f, m, variants, args.affine_steps) for m, f in pairs}
    rows = list(next(iter(results.values())))
    lines = [f"`python benchmarks/instance_sweep.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             "| variant | Dice | % folding | SDlogJ | seconds |", "|---|---|---|---|---|"]
    summary = {}
    for row in rows:
        values = [pair[row] for pair in results.values()]
        mean = {key: float(np.mean([v[key] for v in values])) for key in ("dice", "folding_percent", "sdlogj", "seconds")
                if key in values[0]}
        summary[row] = mean
        lines.append(f"| {row} | {mean['dice']:.4f} | {mean.get('folding_percent', float('nan')):.3f} | "
                     f"{mean.get('sdlogj', float('nan')):.3f} | {mean.get('seconds', float('nan')):.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = REPO / "benchmarks" / "results" / f"instance_sweep_{args.tag}"
    write_json(out.with_suffix(".json"), {"command": lines[0].strip("`"), "pairs": results, "mean": summary,
                                          "threads": args.threads})
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
