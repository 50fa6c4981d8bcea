"""Wall-clock time and peak memory of one step, for the sidecars and benchmarks."""
from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Usage", "measure"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Usage:
    """Filled in when the :func:`measure` block ends.

    Attributes
    ----------
    seconds : float
        Wall-clock time of the block.
    peak_memory_mb : float
        Largest resident set size of the process and its child processes together during the
        block (MB; elastix and transformix run as children), sampled every ``interval`` s;
        where /proc is missing, the process's lifetime maximum instead.
    """

    seconds: float = 0.0
    peak_memory_mb: float = 0.0


def _rss_bytes(pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):  # no /proc, or the process just ended
        return None


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (those of each of its threads)."""
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children.extend(int(child) for child in handle.read().split())
    except OSError:
        pass
    return children


def _tree_rss_bytes() -> int | None:
    """Resident set size of this process and all its descendants (None without /proc)."""
    total = _rss_bytes()
    if total is None:
        return None
    pending = _children(os.getpid())
    while pending:
        pid = pending.pop()
        total += _rss_bytes(pid) or 0
        pending.extend(_children(pid))
    return total


@contextmanager
def measure(interval: float = 0.05) -> Iterator[Usage]:
    """Time a block and sample its peak memory (the RSS of the process and its children, so
    one step per process).

    Examples
    --------
    >>> with measure() as usage:
    ...     _ = bytearray(10_000_000)
    >>> usage.seconds > 0 and usage.peak_memory_mb > 0
    True
    """
    usage, stop = Usage(), threading.Event()
    peak = [_tree_rss_bytes() or 0]

    def sample() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], _tree_rss_bytes() or 0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tick = time.perf_counter()
    try:
        yield usage
    finally:
        usage.seconds = time.perf_counter() - tick
        stop.set()
        sampler.join()
        last = _tree_rss_bytes()
        if last is None:  # no /proc: the lifetime maximum (kB on Linux, bytes on macOS)
            usage.peak_memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        else:
            usage.peak_memory_mb = max(peak[0], last) / 2**20
