"""Accuracy benchmark on OASIS-TRT-20 (evaluation protocol of CONVENTIONS.md).

Trains both stages on sub-01..sub-08 (T1w only, no labels; cached under ~/.cache/bidsreg),
registers the 12 ordered pairs among sub-09..sub-12 and reports mean ± sd Dice on the
DKT31aseg labels (on the fixed image's 1 mm grid) for original / com / global / registered,
with % folding, SDlogJ and seconds per pair, next to antspyx Affine and SyN on the same pairs.

    python benchmarks/oasis_benchmark.py [--data DIR] [--device auto] [--skip-ants]
        [--global-instance-steps N] [--cnnio]

Figures are printed and written to benchmarks/results/oasis_<tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    TEST_SUBJECTS,
    ants_pair,
    cache_dir,
    cnn_pair,
    labels,
    oasis_dir,
    summary_table,
    t1w,
    trained_checkpoint,
    write_json,
)

from bidsreg.image import load_volume  # noqa: E402
from bidsreg.methods.cnn import CNNIOConfig  # noqa: E402
from bidsreg.nn.model import RegistrationModel  # noqa: E402
from bidsreg.nn.train import TrainConfig  # noqa: E402


def _cached(path: Path, compute) -> dict:
    """Per-pair results are cached so that an interrupted benchmark resumes where it stopped."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    write_json(path, result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="OASIS-TRT-20 BIDS folder (default: $BIDSREG_OASIS_DIR or ../shared)")
    parser.add_argument("--device", default="auto", help="training/inference device: auto, cpu, cuda")
    parser.add_argument("--affine-steps", type=int, default=TrainConfig.affine_steps)
    parser.add_argument("--deformable-steps", type=int, default=TrainConfig.deformable_steps)
    parser.add_argument("--model", type=Path, help="evaluate this finished checkpoint instead of training one")
    parser.add_argument("--skip-ants", action="store_true", help="CNN only (no antspyx baselines)")
    parser.add_argument("--global-instance-steps", type=int, default=None,
                        help="instance optimisation of the affine (default: cnnio's with --cnnio, else 0)")
    parser.add_argument("--cnnio", action="store_true", help="the local stage optimised for each pair, as cnnio does")
    parser.add_argument("--tag", default=None, help="name of the result files (default: from the steps)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    data = oasis_dir(args.data)
    config = TrainConfig(affine_steps=args.affine_steps, deformable_steps=args.deformable_steps)
    tick = time.perf_counter()
    checkpoint = args.model or trained_checkpoint(data, config, args.device)
    print(f"checkpoint {checkpoint} ready in {time.perf_counter() - tick:.0f} s")
    model = RegistrationModel.from_checkpoint(checkpoint, args.device)
    cnnio = CNNIOConfig()
    local_instance = cnnio.optimisation() if args.cnnio else None
    if args.global_instance_steps is None:
        args.global_instance_steps = cnnio.affine_steps if args.cnnio else 0
    variant = (f"g{args.global_instance_steps}_" if args.global_instance_steps else "") + ("io" if args.cnnio else "i0")
    tag = args.tag or f"a{args.affine_steps}_d{args.deformable_steps}_{variant}"
    results = REPO / "benchmarks" / "results" / f"oasis_{tag}"
    pairs, cache = {}, cache_dir() / "oasis-results"
    # CNN results depend on the checkpoint's bytes and on the library's code.
    library = b"".join(path.read_bytes() for path in sorted((REPO / "bidsreg").rglob("*.py")))
    code = hashlib.sha1(checkpoint.read_bytes() + library).hexdigest()[:8]
    for fixed_id, moving_id in itertools.permutations(TEST_SUBJECTS, 2):
        fixed = load_volume(t1w(data, fixed_id))
        fixed_labels = load_volume(labels(data, fixed_id), labels=True)
        moving_labels = load_volume(labels(data, moving_id), labels=True)
        name = f"{moving_id}to{fixed_id}"
        pair = _cached(cache / f"{checkpoint.stem}_{code}_{variant}_{name}.json", lambda: cnn_pair(
            model, t1w(data, fixed_id), t1w(data, moving_id), fixed, fixed_labels, moving_labels,
            args.global_instance_steps, local_instance
        ))
        if not args.skip_ants:
            for row, kind in (("antsaffine", "Affine"), ("antssyn", "SyN")):
                pair[row] = _cached(cache / f"ants_{kind}_{name}.json", lambda: ants_pair(
                    kind, t1w(data, fixed_id), t1w(data, moving_id), labels(data, moving_id), fixed, fixed_labels
                ))
        pairs[f"sub-{moving_id}->sub-{fixed_id}"] = pair
        print(f"sub-{moving_id} -> sub-{fixed_id}: " + ", ".join(f"{k} {v['dice']:.3f}" for k, v in pair.items()), flush=True)
    training = torch.load(checkpoint, weights_only=True)["training"]
    table, summary = summary_table(pairs)
    print(table)
    command = "python benchmarks/oasis_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(results.with_suffix(".json"), {
        "command": command.strip(),
        "checkpoint": checkpoint.name,
        "train_config": training["config"],
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
