"""Run the official BIDS validator (PyPI ``bids-validator-deno``, offline) on a dataset."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BIDSValidationError

__all__ = ["CONFIG_NAME", "ValidationReport", "validate_dataset"]

VALIDATOR = "bids-validator-deno"
#: A dataset's own validator configuration (issues to ignore, ``bids-validator --config``), read
#: from its root where it has one (a dotfile: BIDS and pybids pass over it).
CONFIG_NAME = ".bids-validator-config.json"


@dataclass
class ValidationReport:
    """Issues found by the validator: each a dict with ``code``, ``severity``, ``location``."""

    errors: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    def summary(self, issues: list[dict]) -> str:
        """``CODE (n), ...`` by decreasing count."""
        counts = Counter(issue["code"] for issue in issues)
        return ", ".join(f"{code} ({n})" for code, n in counts.most_common())


def _executable() -> str:
    found = shutil.which(VALIDATOR) or shutil.which(VALIDATOR, path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(
            f"{VALIDATOR} not found: install it (pip install bids-validator-deno) or pass --skip-bids-validation"
        )
    return found


def validate_dataset(bids_dir: str | os.PathLike, timeout: float = 600.0) -> ValidationReport:
    """Validate ``bids_dir``; raise :class:`BIDSValidationError` if it has errors.

    The dataset's own :data:`CONFIG_NAME`, if it has one, is the validator's configuration: the
    issues it ignores are neither errors nor warnings here.

    Parameters
    ----------
    bids_dir : path-like
        The dataset's root folder.
    timeout : float
        Seconds before the validator is stopped.

    Returns
    -------
    ValidationReport
        With the warnings (and no errors).
    """
    bids_dir = Path(bids_dir)
    if not (bids_dir / "dataset_description.json").is_file():
        raise BIDSValidationError(
            f"{bids_dir}: not a BIDS dataset (no dataset_description.json); point bids_dir at the dataset's root"
        )
    config = bids_dir / CONFIG_NAME
    command = [_executable(), "--format", "json", *(["--config", str(config)] if config.is_file() else []), str(bids_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    try:
        issues = json.loads(done.stdout)["issues"]["issues"]
    except (json.JSONDecodeError, KeyError, TypeError):
        message = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(
            f"{VALIDATOR} failed on {bids_dir} (exit {done.returncode}): {message[-1] if message else 'no output'}"
        ) from None
    report = ValidationReport(
        errors=[issue for issue in issues if issue.get("severity") == "error"],
        warnings=[issue for issue in issues if issue.get("severity") == "warning"],
    )
    if report.errors:
        first = report.errors[0]
        raise BIDSValidationError(
            f"{bids_dir}: not valid BIDS: {report.summary(report.errors)}, e.g. {first['code']} at "
            f"{first.get('location', '?')}; fix the dataset (run {VALIDATOR} {bids_dir} for details) "
            "or pass --skip-bids-validation"
        )
    return report
