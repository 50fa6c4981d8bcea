"""Speed and memory of registering one 1 mm pair, and of a training step, on the CPU.

The registration is timed from loading the two NIfTI files to the derivatives written: the
forward and inverse composite transforms (.h5, compact: the field on the network grid), the
moving T1w and its label map warped onto the fixed grid (interpreter start-up and model
loading excluded), as the median of ``--repeats`` runs, with the seconds of each step. Peak
memory is the process's maximum resident set size. The pair is OASIS-TRT-20 sub-10 -> sub-09
(with sub-10's DKT31aseg labels) when that data is found, else a synthetic 256x256x160 pair
(its labels: intensity bands); weights do not change the speed, so an untrained model of the
default architecture is used unless ``--model`` is given.

    python benchmarks/speed_benchmark.py [--threads 2] [--repeats 3] [--model CKPT]
        [--global-instance-steps N]

Figures are printed and written to benchmarks/results/speed.{json,md}.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, labels, oasis_dir, t1w, write_json  # noqa: E402

from bidsreg.image import load_grid, load_volume, save_volume  # noqa: E402
from bidsreg.methods.cnn import register_pair  # noqa: E402
from bidsreg.methods.training import train_model  # noqa: E402
from bidsreg.nn.checkpoint import load_checkpoint  # noqa: E402
from bidsreg.nn.model import RegistrationModel  # noqa: E402
from bidsreg.nn.train import TrainConfig  # noqa: E402


def _pair(tmp: Path) -> tuple[Path, Path, Path, str]:
    """Fixed and moving T1w, the moving one's labels, and what they are."""
    try:
        data = oasis_dir()
        return t1w(data, "09"), t1w(data, "10"), labels(data, "10"), "OASIS-TRT-20 sub-10 -> sub-09"
    except SystemExit:
        rng = np.random.default_rng(0)
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (256, 256, 160)], indexing="ij"))
        paths = []
        for name, shift in (("fixed", 0.0), ("moving", 0.06)):
            r = np.sqrt(((grid[0] - shift) / 0.55) ** 2 + (grid[1] / 0.7) ** 2 + (grid[2] / 0.8) ** 2)
            brain = (r < 1) * (100 + 50 * np.cos(6 * r) + rng.normal(0, 5, r.shape))
            path = tmp / f"{name}.nii.gz"
            save_volume(path, brain.astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
            paths.append(path)
        save_volume(tmp / "labels.nii.gz", (brain // 40).astype(np.int16), np.eye(4))
        return paths[0], paths[1], tmp / "labels.nii.gz", "synthetic 256x256x160 pair"


def _time_registration(model, fixed: Path, moving: Path, moving_labels: Path, out: Path, global_steps: int) -> dict:
    steps = {}
    tick = time.perf_counter()
    result = register_pair(fixed, moving, model, inverse=True, global_instance_steps=global_steps)
    steps.update(result.steps)
    tock = time.perf_counter()
    result.transform.write(out / "fwd.h5", out / "inv.h5")
    steps["write transforms"] = time.perf_counter() - tock
    grid = load_grid(fixed)
    for name, path, nearest in (("T1w", moving, False), ("labels", moving_labels, True)):
        tock = time.perf_counter()
        warped = result.transform.apply(load_volume(path, labels=nearest), grid, nearest=nearest)
        steps[f"warp {name}"] = time.perf_counter() - tock
        tock = time.perf_counter()
        save_volume(out / f"warped_{name}.nii.gz", warped, grid.affine)
        steps[f"write {name}"] = time.perf_counter() - tock
    return {"total": time.perf_counter() - tick, **steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="checkpoint (default: an untrained model of the default architecture)")
    parser.add_argument("--global-instance-steps", type=int, default=0, help="instance optimisation of the affine")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fixed, moving, moving_labels, what = _pair(tmp)
        checkpoint = Path(args.model) if args.model else tmp / "untrained.pt"
        if not args.model:
            train_model([fixed, moving], checkpoint, TrainConfig(affine_steps=0, deformable_steps=0), device="cpu", progress=False)
        model = RegistrationModel.from_checkpoint(checkpoint, "cpu")
        runs = [_time_registration(model, fixed, moving, moving_labels, tmp, args.global_instance_steps)
                for _ in range(args.repeats)]
        peak_register = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

        step_times = {}
        for stage, steps in (("affine", (3, 0)), ("deformable", (0, 3))):
            path = tmp / f"{stage}.pt"
            tick = time.perf_counter()
            train_model([fixed, moving], path, TrainConfig(affine_steps=steps[0], deformable_steps=steps[1]), device="cpu", progress=False)
            # subtract loading the cohort, timed by a 0-step run
            zero = tmp / f"{stage}0.pt"
            tock = time.perf_counter()
            train_model([fixed, moving], zero, TrainConfig(affine_steps=0, deformable_steps=0), device="cpu", progress=False)
            load = time.perf_counter() - tock
            step_times[stage] = (tock - tick - load) / 3
        grid = load_checkpoint(checkpoint)["preprocess"]["spacing"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    lines = [
        f"pair: {what}; {args.threads} CPU threads; network grid {grid} mm; "
        f"global instance steps {args.global_instance_steps}; median of {args.repeats}",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {key} | {value:.2f} |" for key, value in median.items()],
        "",
        f"peak memory while registering: {peak_register:.2f} GB (max RSS)",
        f"training step: affine {step_times['affine']:.2f} s, deformable {step_times['deformable']:.2f} s; "
        f"peak memory with training: {peak:.2f} GB",
    ]
    text = "\n".join(lines)
    print(text)
    name = "speed" + (f"_g{args.global_instance_steps}" if args.global_instance_steps else "")
    command = "python benchmarks/speed_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(REPO / "benchmarks" / "results" / f"{name}.json", {
        "command": command.strip(), "global_instance_steps": args.global_instance_steps,
        "pair": what, "threads": args.threads, "median_seconds": median, "runs": runs,
        "peak_register_gb": peak_register, "peak_gb": peak, "train_step_seconds": step_times,
    })
    (REPO / "benchmarks" / "results" / f"{name}.md").write_text(f"`{command.strip()}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
