"""The group level at a cohort's scale: seconds, peak memory and report size.

Writes the participant outputs that ``group`` reads for ``--subjects`` subjects, ``--methods``
methods and ``--labels`` regions (overlap tables with their sidecars, the transforms'
sidecars with seconds, memory and folding, the participant runs' request records; no
registration runs and the transform files are empty), then times ``bidsreg ... group`` on
them in a process of its own (peak memory of that process).

    python benchmarks/group_scale.py [--subjects 1000] [--methods 8] [--labels 100] [--out DIR]

Figures are printed and written to benchmarks/results/group_scale.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, cache_dir, write_json  # noqa: E402

from bidsreg.group.requests import write_requests  # noqa: E402
from bidsreg.methods.table import reported_names  # noqa: E402
from bidsreg.metrics import OVERLAP_COLUMNS  # noqa: E402


def write_outputs(out: Path, subjects: int, methods: list[str], labels: int, seed: int = 0) -> None:
    """Synthetic participant outputs: each method's Dice per region drawn around a level of its
    own, per subject and region effects shared by the methods."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "bidsreg group-scale benchmark", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    names = [f"region-{index:03d}" for index in range(1, labels + 1)]
    levels = {"original": 0.1, **{method: 0.35 + 0.3 * i / max(len(methods) - 1, 1) for i, method in enumerate(methods)}}
    region_effect = rng.normal(0, 0.08, labels)
    ids = [f"{index:04d}" for index in range(2, subjects + 2)]
    for subject in ids:
        anat = out / f"sub-{subject}" / "anat"
        anat.mkdir(parents=True)
        subject_effect = rng.normal(0, 0.03)
        for method, level in levels.items():
            dice = np.clip(level + subject_effect + region_effect + rng.normal(0, 0.05, labels), 0.01, 0.99)
            table = pd.DataFrame({"label": np.arange(1, labels + 1), "name": names, "target_overlap": dice,
                                  "dice": dice, "jaccard": dice / (2 - dice), "false_negative": 1 - dice,
                                  "false_positive": 1 - dice, "hd95": 2 + 10 * (1 - dice),
                                  "fixed_voxels": 1000, "warped_voxels": 1000})[list(OVERLAP_COLUMNS)]
            stem = f"sub-{subject}_seg-DK_desc-{method}_overlap"
            table.to_csv(anat / f"{stem}.tsv", sep="\t", index=False, float_format="%.6g")
            sidecar = {"Space": "sub0001", "SpatialReference": "sub-0001", "SkullStripped": True, "Method": method}
            if method != "original":
                sidecar.update(seconds=float(rng.uniform(5, 200)), peak_memory_mb=float(rng.uniform(900, 2000)),
                               FoldingPercent=float(rng.uniform(0, 0.01)), SDlogJ=float(rng.uniform(0.2, 0.5)))
                xfm = anat / f"sub-{subject}_from-T1w_to-sub0001_desc-{method}_mode-image_xfm"
                xfm.with_suffix(".h5").write_bytes(b"")
                xfm.with_suffix(".json").write_text(json.dumps({**sidecar, "method": method, "parameters": {}}))
            (anat / f"{stem}.json").write_text(json.dumps(sidecar))
    write_requests(out, [{"subject": s} for s in ids], methods, [True] * len(ids))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--methods", type=int, default=8, help="how many of bidsreg's reported method names")
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--out", type=Path, help="the outputs (default: ~/.cache/bidsreg/group_scale; replaced)")
    args = parser.parse_args(argv)
    methods = [name for name in reported_names() if name != "original"][:args.methods]
    out = args.out or cache_dir() / "group_scale"
    shutil.rmtree(out, ignore_errors=True)
    tick = time.perf_counter()
    write_outputs(out, args.subjects, methods, args.labels)
    written = time.perf_counter() - tick
    print(f"{args.subjects} subjects x {len(methods)} methods x {args.labels} regions written in {written:.0f} s")
    code = "import sys; from bidsreg.cli.run import main; sys.exit(main(sys.argv[1:]))"
    tick = time.perf_counter()
    bids = out.with_name(out.name + "_bids")  # the group level reads no input dataset; it only names one
    run = subprocess.run([sys.executable, "-c", code, str(bids), str(out), "group"], capture_output=True, text=True)
    seconds = time.perf_counter() - tick
    if run.returncode != 0:
        raise SystemExit(f"group failed ({run.returncode}):\n{run.stderr[-3000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = out / "group" / "report.html"
    figures = {path.name: path.stat().st_size for path in sorted((out / "group" / "figures").glob("*.png"))}
    result = {"subjects": args.subjects, "methods": methods, "labels": args.labels, "seconds": seconds,
              "peak_memory_mb": peak_mb, "report_mb": report.stat().st_size / 1e6, "figures": len(figures),
              "figures_mb": sum(figures.values()) / 1e6}
    command = "python benchmarks/group_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        f"`{command.strip()}`", "",
        "| subjects | methods | regions | group seconds | peak MB | report.html MB | figures |",
        "|---|---|---|---|---|---|---|",
        f"| {args.subjects} | {len(methods)} | {args.labels} | {seconds:.1f} | {peak_mb:.0f} | "
        f"{result['report_mb']:.2f} | {len(figures)} ({result['figures_mb']:.1f} MB) |", ""])
    print(text)
    results = REPO / "benchmarks" / "results" / "group_scale"
    write_json(results.with_suffix(".json"), {"command": command.strip(), **result})
    results.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
