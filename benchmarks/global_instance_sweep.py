"""Global instance optimisation on training pairs, with the fixed image as stored and turned by 15°.

The global stage must reach the same alignment whatever pose the fixed image was scanned in
(issue 16: the same pair with the fixed image turned by 15° gives the same Dice within 0.01).
For each pair of OASIS-TRT-20 training subjects (sub-01..08, CONVENTIONS.md; never the
evaluation subjects) the fixed image and its labels are used as stored and with their world
turned by ``--degrees`` about the left-right axis through the brain's centre (the same voxels:
a head tilted in the scanner). Each variant of :func:`bidsreg.nn.affine_stage.refine_world_map`
(Adam steps, step size, pooling of the network grid) starts from the network's symmetric
affine; the affine alone is measured (DKT31aseg Dice on the fixed 1 mm grid) with the seconds
of the whole global stage.

    python benchmarks/global_instance_sweep.py --model CKPT [--pairs 02:01,04:03] [--threads 2]
        [--variants NAME=STEPS:LR:POOL,...] [--degrees 15] [--tag NAME]

POOL 0 is the pooled grid the network reads. Figures are printed and written to
benchmarks/results/global_instance_sweep_<tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, label_dice, labels, oasis_dir, t1w, training_pairs, write_json  # noqa: E402

from bidsreg.image import Volume, load_volume  # noqa: E402
from bidsreg.nn.affine_stage import symmetric_world_map  # noqa: E402
from bidsreg.nn.grid import prepare_image, translation  # noqa: E402
from bidsreg.nn.model import RegistrationModel  # noqa: E402
from bidsreg.transform import Transform  # noqa: E402

#: name -> (Adam steps, step size, pooling of the network grid; 0: the network's own).
VARIANTS = {
    "network": (0, 0.0, 0),
    "s200_lr0.002": (200, 2e-3, 0),
    "s200_lr0.01": (200, 1e-2, 0),
    "s200_lr0.02": (200, 2e-2, 0),
    "s400_lr0.01": (400, 1e-2, 0),
    "s100_lr0.02_fine": (100, 2e-2, 1),
}


def turned(volume: Volume, degrees: float, centre: np.ndarray) -> Volume:
    """``volume`` with its world turned by ``degrees`` about the left-right axis through ``centre``."""
    rotation = np.eye(4)
    rotation[:3, :3] = Rotation.from_euler("x", degrees, degrees=True).as_matrix()
    return Volume(volume.data, translation(centre) @ rotation @ translation(-centre) @ volume.affine, volume.path)


def _pair(model: RegistrationModel, data: Path, fixed_id: str, moving_id: str, variants: dict, degrees: float) -> dict:
    fixed_vol, moving_vol = load_volume(t1w(data, fixed_id)), load_volume(t1w(data, moving_id))
    fixed_labels, moving_labels = load_volume(labels(data, fixed_id), labels=True), load_volume(labels(data, moving_id), labels=True)
    moving_img = prepare_image(moving_vol, model.preprocess)
    centre = prepare_image(fixed_vol, model.preprocess).centre
    out = {}
    for pose, angle in (("stored", 0.0), ("turned", degrees)):
        fixed, fixed_lab = turned(fixed_vol, angle, centre), turned(fixed_labels, angle, centre)
        fixed_img = prepare_image(fixed, model.preprocess)
        for name, (steps, lr, pool) in variants.items():
            tick = time.perf_counter()
            with torch.no_grad():
                stage = symmetric_world_map(model.affine_net, fixed_img, moving_img, model.preprocess, steps, lr or 2e-3,
                                            pool or None)
            seconds = time.perf_counter() - tick
            dice = label_dice(moving_labels, fixed_lab, Transform(stage.world_map))
            out.setdefault(name, {})[pose] = {"dice": dice, "seconds": seconds}
            print(f"  sub-{moving_id} -> sub-{fixed_id} {pose} {name}: Dice {dice:.4f}, {seconds:.1f} s", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="two-stage checkpoint (never trained on sub-09..12)")
    parser.add_argument("--data", help="OASIS-TRT-20 dev dataset (default: $BIDSREG_OASIS_DIR or ../shared)")
    parser.add_argument("--pairs", default="02:01,04:03,06:05,08:07", help="moving:fixed training subjects")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", help="NAME=STEPS:LR:POOL,... (default: the sweep)")
    parser.add_argument("--degrees", type=float, default=15.0)
    parser.add_argument("--tag", default="training_pairs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = oasis_dir(args.data)
    pairs = training_pairs(args.pairs)
    variants = VARIANTS
    if args.variants:
        variants = {}
        for item in args.variants.split(","):
            name, _, body = item.partition("=")
            steps, lr, pool = body.split(":")
            variants[name] = (int(steps), float(lr), int(pool))
    model = RegistrationModel.from_checkpoint(args.model, "cpu")
    results = {f"{m}->{f}": _pair(model, data, f, m, variants, args.degrees) for m, f in pairs}
    lines = [f"`python benchmarks/global_instance_sweep.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"Affine alone, mean over {len(pairs)} training pairs; turned: the fixed image's world turned by "
             f"{args.degrees:g}° about the left-right axis.", "",
             "| variant | Dice stored | Dice turned | mean abs difference | seconds |", "|---|---|---|---|---|"]
    summary = {}
    for name in variants:
        values = [pair[name] for pair in results.values()]
        row = {pose: float(np.mean([v[pose]["dice"] for v in values])) for pose in ("stored", "turned")}
        row["difference"] = float(np.mean([abs(v["turned"]["dice"] - v["stored"]["dice"]) for v in values]))
        row["seconds"] = float(np.mean([v[pose]["seconds"] for v in values for pose in ("stored", "turned")]))
        summary[name] = row
        lines.append(f"| {name} | {row['stored']:.4f} | {row['turned']:.4f} | {row['difference']:.4f} | "
                     f"{row['seconds']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = REPO / "benchmarks" / "results" / f"global_instance_sweep_{args.tag}"
    write_json(out.with_suffix(".json"), {"model": str(args.model), "degrees": args.degrees, "pairs": results,
                                          "summary": summary, "variants": variants})
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
