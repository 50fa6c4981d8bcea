"""What a compact transform file loses: each deformable method's field written on coarser grids.

For one pair of training subjects (CONVENTIONS.md: settings are chosen on those only), every
deformable method registers the moving T1w to the fixed one; its transform is written as the
app writes it, both directions, with the field on the fixed image's 1 mm grid as computed
(``full``), and, rounded to :data:`bidsreg.transform.FIELD_STEP_MM` as ``--output-resolution
compact`` writes it, on that grid (``fixed grid, rounded``; for the classical methods), on
coarser grids of cubic voxels covering it, and for the CNN on the network grid it computes it
on. antspyx ``apply_transforms`` then warps, with each file, the moving T1w and labels onto
the fixed grid and the fixed ones onto the moving grid; the figures are the labelled voxels
(in either map) whose warped label is that of the full field's warp, the correlation of the warped images inside the
brain, the Dice of the warped moving labels with the fixed ones, the size of the two files and
the seconds to write them. A method's compact spacing
(:attr:`bidsreg.methods.table.Method.field_spacing`) is the coarsest grid that keeps 99 % of
the labels identical in both directions.

    python benchmarks/compact_transforms.py [--pair 02:01] [--methods cnn,cnnio,antssyn,...]
        [--spacings 1.5,2,3] [--threads 2] [--tag NAME]

Figures are printed and written to benchmarks/results/compact_transforms[_<tag>].{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import ants
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, dice, labels, oasis_dir, t1w, training_pairs, write_json  # noqa: E402

from bidsreg.data import DEFAULT_MODEL  # noqa: E402
from bidsreg.image import load_grid, load_volume  # noqa: E402
from bidsreg.methods.base import Context, build_config  # noqa: E402
from bidsreg.methods.table import TABLE  # noqa: E402
from bidsreg.transform import FIELD_STEP_MM  # noqa: E402

DEFORMABLE = ("cnn", "cnnio", "antssyn", "antssynquick", "demons", "bspline")


def register(method: str, fixed: Path, moving: Path, threads: int):
    """The method's final transform as it computes it (its stages chained, as the app runs them)."""
    row = TABLE[method]
    parameters = {"model": str(DEFAULT_MODEL)} if row.network else {}
    config = build_config(row.config, parameters)
    context = Context(seed=0, threads=threads)
    result, seconds = None, 0.0
    for stage in row.stages:
        start = {} if result is None else {"start": result}
        result = stage.register(str(fixed), str(moving), config, context, **start)
        seconds = result.seconds
    return result.transform, seconds


def warp(reference: Path, image: Path, transform: Path, nearest: bool) -> np.ndarray:
    return ants.apply_transforms(ants.image_read(str(reference)), ants.image_read(str(image)), [str(transform)],
                                 interpolator="nearestNeighbor" if nearest else "linear").numpy()


def warps(files: dict, paths: dict) -> dict:
    """The four warps of one transform pair: moving T1w and labels onto fixed, fixed ones onto moving."""
    return {
        "image": warp(paths["fixed"], paths["moving"], files["forward"], False),
        "labels": warp(paths["fixed_labels"], paths["moving_labels"], files["forward"], True),
        "inverse_image": warp(paths["moving"], paths["fixed"], files["inverse"], False),
        "inverse_labels": warp(paths["moving_labels"], paths["fixed_labels"], files["inverse"], True),
    }


def identical(labels: np.ndarray, reference: np.ndarray) -> float:
    """Percentage of the voxels labelled in either map (not the background) that carry the same label."""
    labelled = (labels != 0) | (reference != 0)
    return round(100 * float((labels == reference)[labelled].mean()), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="02:01", help="moving:fixed, training subjects only (default 02:01)")
    parser.add_argument("--methods", default=",".join(DEFORMABLE))
    parser.add_argument("--spacings", default="1.5,2,3", help="coarser grids to try (mm)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", help="OASIS-TRT-20 BIDS folder (default: $BIDSREG_OASIS_DIR or ../shared)")
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    data = oasis_dir(args.data)
    [(moving_id, fixed_id)] = training_pairs(args.pair)
    paths = {"fixed": t1w(data, fixed_id), "moving": t1w(data, moving_id),
             "fixed_labels": labels(data, fixed_id), "moving_labels": labels(data, moving_id)}
    fixed_labels = load_volume(paths["fixed_labels"], labels=True)
    moving_brain = load_volume(paths["moving"]).data > 0
    fixed_brain = load_volume(paths["fixed"]).data > 0
    fixed_grid = load_grid(paths["fixed"])
    spacings = [float(s) for s in args.spacings.split(",")]
    methods = args.methods.split(",")
    for method in methods:  # a missing tool stops the run before it starts, not half-way
        if TABLE[method].check is not None:
            TABLE[method].check()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for method in methods:
            transform, seconds = register(method, paths["fixed"], paths["moving"], args.threads)
            native = transform.field_grid
            print(f"{method}: registered in {seconds:.1f} s, field on {native.shape} at "
                  f"{np.round(np.sqrt((native.affine[:3, :3] ** 2).sum(0)), 2).tolist()} mm", flush=True)
            grids = {"full": fixed_grid}
            if method in ("cnn", "cnnio"):
                grids["network grid"] = native
            else:
                grids["fixed grid, rounded"] = fixed_grid
            grids.update({f"{s:g} mm": fixed_grid.at_spacing(s) for s in spacings})
            reference = None
            for name, grid in grids.items():
                files = {d: Path(scratch) / f"{method}_{name.replace(' ', '_')}_{d}.h5" for d in ("forward", "inverse")}
                compact = transform.on_grid(grid) if name == "full" else transform.on_grid(grid).rounded(FIELD_STEP_MM)
                tick = time.perf_counter()
                compact.write(files["forward"], files["inverse"])
                write_seconds = time.perf_counter() - tick
                warped = warps(files, paths)
                if reference is None:
                    reference = warped
                score = dice(warped["labels"].astype(np.int32), fixed_labels)
                row = {
                    "method": method, "grid": name, "shape": list(grid.shape),
                    "MB (both directions)": round(sum(f.stat().st_size for f in files.values()) / 1e6, 1),
                    "write s": round(write_seconds, 2),
                    "labels identical %": identical(warped["labels"], reference["labels"]),
                    "inverse labels identical %": identical(warped["inverse_labels"], reference["inverse_labels"]),
                    "image r": round(float(np.corrcoef(warped["image"][fixed_brain],
                                                       reference["image"][fixed_brain])[0, 1]), 6),
                    "inverse image r": round(float(np.corrcoef(warped["inverse_image"][moving_brain],
                                                               reference["inverse_image"][moving_brain])[0, 1]), 6),
                    "Dice": round(score, 4),
                }
                rows.append(row)
                print("  " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "method"), flush=True)
                for f in files.values():
                    f.unlink()
    keep = {}
    for method in methods:
        coarse = [r for r in rows if r["method"] == method and r["grid"].endswith(" mm")
                  and min(r["labels identical %"], r["inverse labels identical %"]) >= 99.0]
        keep[method] = max((float(r["grid"].split()[0]) for r in coarse), default=None)
    tag = f"_{args.tag}" if args.tag else ""
    out = REPO / "benchmarks" / "results" / f"compact_transforms{tag}"
    command = "python benchmarks/compact_transforms.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(out.with_suffix(".json"), {"command": command, "pair": args.pair, "rows": rows,
                                          "coarsest spacing keeping 99 % of the labels": keep})
    columns = list(rows[0])
    lines = [f"`{command.strip()}`", "",
             f"Pair {args.pair} (moving:fixed, training subjects), DKT31aseg; every figure against the full field's "
             "warps (antspyx apply_transforms); image r inside the brain.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    lines += ["", "Coarsest grid keeping 99 % of the labels identical both ways: "
              + ", ".join(f"{m} {'none' if s is None else f'{s:g} mm'}" for m, s in keep.items())]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(keep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
