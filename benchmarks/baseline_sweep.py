"""Default parameters of the demons and bspline baselines, from a small sweep on training subjects.

Only pairs among sub-01..sub-08 of OASIS-TRT-20 are used (the evaluation subjects sub-09..12
never choose a parameter; CONVENTIONS.md). antspyx Affine runs once per pair and every variant
refines that same start, so the variants differ only in their own parameters. Mean Dice on the
DKT31aseg labels, % folding, SDlogJ and seconds of the refinement per variant.

    python benchmarks/baseline_sweep.py [--data DIR] [--pairs 02:01 04:03] [--threads 2]

Figures are printed and written to benchmarks/results/baseline_sweep.{json,md}; per-pair results
are cached (``$BIDSREG_CACHE``), so an interrupted sweep resumes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, TRAIN_SUBJECTS, cache_dir, label_dice, labels, oasis_dir, t1w, write_json  # noqa: E402

from bidsreg.image import load_volume  # noqa: E402
from bidsreg.methods.ants import register_affine  # noqa: E402
from bidsreg.methods.base import Context, config_parameters  # noqa: E402
from bidsreg.methods.bspline import BSplineConfig, bspline_field  # noqa: E402
from bidsreg.methods.demons import DemonsConfig, demons_field  # noqa: E402
from bidsreg.methods.refine import refine_affine  # noqa: E402
from bidsreg.metrics import jacobian_stats, world_jacobian_determinant  # noqa: E402

#: The variants: each changes one parameter of the default. The defaults are the variant with the
#: highest Dice among those folding less than 0.1 % of the brain (2026-11-30: demons field_sigma
#: 1.0, bspline grid_spacing 10 mm; README).
VARIANTS = {
    "demons": [DemonsConfig(), *(replace(DemonsConfig(), field_sigma=s) for s in (1.5, 3.0))],
    "bspline": [BSplineConfig(), *(replace(BSplineConfig(), grid_spacing=g) for g in (5.0, 20.0))],
}


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="OASIS-TRT-20 BIDS folder (default: $BIDSREG_OASIS_DIR or ../shared)")
    parser.add_argument("--pairs", nargs="+", default=["02:01"], help="moving:fixed among sub-01..08")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    data = oasis_dir(args.data)
    pairs = [tuple(pair.split(":")) for pair in args.pairs]
    if any(subject not in TRAIN_SUBJECTS for pair in pairs for subject in pair):
        raise SystemExit(f"the sweep uses training subjects only ({', '.join(TRAIN_SUBJECTS)})")
    cache = cache_dir() / "baseline-sweep"
    results: dict = {}
    for moving, fixed in pairs:
        fixed_path, moving_path = t1w(data, fixed), t1w(data, moving)
        fixed_volume = load_volume(fixed_path)
        fixed_labels = load_volume(labels(data, fixed), labels=True)
        moving_labels = load_volume(labels(data, moving), labels=True)
        context = Context(threads=args.threads)
        start = register_affine(fixed_path, moving_path, context=context)
        pair = f"{moving}to{fixed}"
        results.setdefault("antsaffine", {})[pair] = {"dice": label_dice(moving_labels, fixed_labels, start.transform),
                                                      "seconds": start.seconds}
        for method in args.methods:
            field = {"demons": demons_field, "bspline": bspline_field}[method]
            for config in VARIANTS[method]:
                name = f"{method} " + json.dumps(config_parameters(config), separators=(",", ":"))
                path = cache / f"{method}_{_key(config_parameters(config), pair)}.json"
                if path.is_file():
                    results.setdefault(name, {})[pair] = json.loads(path.read_text())
                    continue
                extra = {"seed": 0, "threads": args.threads} if method == "bspline" else {}
                tick = time.perf_counter()
                transform = refine_affine(fixed_path, moving_path, partial(field, config=config, **extra),
                                          context=context, start=start).transform
                stats = jacobian_stats(world_jacobian_determinant(transform.displacement, transform.field_affine),
                                       fixed_volume.data > 0)
                row = {"dice": label_dice(moving_labels, fixed_labels, transform),
                       "seconds": time.perf_counter() - tick, "folding_percent": stats["folding_percent"],
                       "sdlogj": stats["sdlogj"]}
                write_json(path, row)
                results.setdefault(name, {})[pair] = row
                print(f"{pair} {name}: Dice {row['dice']:.3f}, {row['seconds']:.0f} s", flush=True)
    lines = ["| variant | Dice (mean over pairs) | % folding | SDlogJ | s / pair (refinement) |", "|---|---|---|---|---|"]
    summary = {}
    for name, per_pair in results.items():
        mean = {key: float(np.mean([row[key] for row in per_pair.values() if key in row]))
                for key in ("dice", "folding_percent", "sdlogj", "seconds") if any(key in r for r in per_pair.values())}
        summary[name] = mean
        cells = [f"{mean[k]:.3f}" if k in mean else "" for k in ("dice", "folding_percent", "sdlogj")]
        lines.append(f"| `{name}` | {' | '.join(cells)} | {mean['seconds']:.0f} |")
    table = "\n".join(lines)
    print(table)
    out = REPO / "benchmarks" / "results" / "baseline_sweep"
    write_json(out.with_suffix(".json"), {"pairs": args.pairs, "results": results, "summary": summary})
    out.with_suffix(".md").write_text(f"`python benchmarks/baseline_sweep.py --pairs {' '.join(args.pairs)}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
