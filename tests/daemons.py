"""Tests that need a daemon (a Docker engine, a SLURM cluster) skip where it is absent, saying
why; with ``BIDSREG_REQUIRE_DAEMONS=1`` (set by ``.ci/run``, which starts them) they fail instead,
so that CI never skips them silently."""
from __future__ import annotations

import os

import pytest


def daemon_missing(reason: str) -> None:
    """Skip the calling test (or fixture) for ``reason``; fail under ``BIDSREG_REQUIRE_DAEMONS=1``."""
    if os.environ.get("BIDSREG_REQUIRE_DAEMONS") == "1":
        pytest.fail(f"BIDSREG_REQUIRE_DAEMONS=1 but {reason}", pytrace=False)
    pytest.skip(reason)
