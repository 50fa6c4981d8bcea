"""Time and peak memory of a step (bidsreg.profiling)."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from bidsreg.profiling import measure


def test_measure_sees_a_short_lived_allocation():
    with measure() as small:
        time.sleep(0.1)
    with measure(interval=0.01) as large:
        block = np.ones(300 * 2**20 // 8)  # 300 MB, freed before the block ends
        time.sleep(0.1)
        del block
    assert small.seconds >= 0.1 and large.seconds >= 0.1
    assert large.peak_memory_mb > small.peak_memory_mb + 250


def test_measure_counts_child_processes():
    """elastix and transformix run as child processes: their memory is the step's too."""
    allocate = "import time; block = bytearray(300 * 2**20); time.sleep(0.5)"
    with measure(interval=0.01) as usage:
        subprocess.run([sys.executable, "-c", allocate], check=True)
    assert usage.peak_memory_mb > 300
