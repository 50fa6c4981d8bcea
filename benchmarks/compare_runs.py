"""Two runs of the app compared: the group tables of one output folder against another's.

For a change that must not change the results (a refactoring, a library swapped in for bidsreg's
own code), run the same commands before and after it into two output folders, then

    python benchmarks/compare_runs.py BEFORE_OUT AFTER_OUT --tag NAME

prints, per method, the mean Dice over subjects of each run, their difference and the largest
per-subject difference (also for Jaccard, HD95 and % folding), and writes them to
benchmarks/results/compare_<NAME>.{json,md}. It reads ``group/subjects.tsv``, which the group
level writes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_json  # noqa: E402

MEASURES = ("dice", "jaccard", "hd95", "folding_percent")


def _subjects(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "group" / "subjects.tsv", sep="\t", na_values="n/a", dtype={"subject": str})
    return table.set_index(["subject", "method"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="output folder of the first run")
    parser.add_argument("after", type=Path, help="output folder of the second run")
    parser.add_argument("--tag", required=True, help="name of the result files")
    args = parser.parse_args(argv)
    before, after = _subjects(args.before), _subjects(args.after)
    common = before.index.intersection(after.index)
    if common.empty:
        raise SystemExit("the two runs share no subject and method")
    methods = list(dict.fromkeys(method for _, method in common))
    rows, summary = [], {}
    for method in methods:
        chosen = [key for key in common if key[1] == method]
        entry = {}
        for measure in MEASURES:
            a, b = before.loc[chosen, measure].astype(float), after.loc[chosen, measure].astype(float)
            if a.isna().all() and b.isna().all():
                continue
            entry[measure] = {"before": float(a.mean()), "after": float(b.mean()),
                              "max_subject_difference": float((b - a).abs().max())}
        summary[method] = {"subjects": len(chosen), **entry}
        dice = entry["dice"]
        rows.append(f"| {method} | {len(chosen)} | {dice['before']:.4f} | {dice['after']:.4f} | "
                    f"{dice['after'] - dice['before']:+.4f} | {dice['max_subject_difference']:.4f} | "
                    + " | ".join(f"{entry[m]['max_subject_difference']:.4f}" if m in entry else "" for m in MEASURES[1:])
                    + " |")
    lines = [f"`{args.before}` (before) against `{args.after}` (after), `group/subjects.tsv`:", "",
             "| method | subjects | Dice before | Dice after | difference | largest per subject | "
             "largest per subject: Jaccard | HD95 (mm) | % folding |",
             "|---|---|---|---|---|---|---|---|---|", *rows]
    text = "\n".join(lines)
    print(text)
    command = "python benchmarks/compare_runs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = REPO / "benchmarks" / "results" / f"compare_{args.tag}"
    write_json(results.with_suffix(".json"), {"command": command, "before": str(args.before),
                                             "after": str(args.after), "methods": summary})
    results.with_suffix(".md").write_text(f"`{command}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
