"""Atomic file output: write to a temporary name beside the target, then rename; and the
clean-up of the temporary files that killed processes left."""
from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output", "process_running", "remove_stale_temporaries"]

#: ``.<name>.<host>.<pid>.tmp[<suffixes>]``: the host, since a cluster's jobs share the outputs.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)\.(?P<pid>\d+)\.tmp(\..+)?$")


def _host() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; move it onto ``path`` only if the block succeeds.

    The temporary file keeps the target's suffixes (``.nii.gz``, ``.h5``, ``.mat``) so that
    writers choosing a format from the file name still do the right thing. A reader never sees
    a half-written file, and an error leaves any earlier file at ``path`` untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "table.tsv"
    >>> with atomic_output(target) as tmp:
    ...     _ = tmp.write_text("a\\tb\\n")
    >>> target.read_text()
    'a\\tb\\n'
    """
    path = Path(path)
    suffixes = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.{_host()}.{os.getpid()}.tmp{suffixes}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: str | os.PathLike, skip: tuple[Path, ...] = ()) -> list[Path]:
    """Delete the temporary files of :func:`atomic_output` under ``folder`` whose process, on
    this host, no longer runs (a killed run's); those of other hosts and of live processes stay.

    Parameters
    ----------
    folder : path-like
    skip : tuple of Path
        Folders not to search (a work folder of many files).

    Returns
    -------
    list of Path
        The files deleted.
    """
    removed, host = [], _host()
    for root, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if Path(root, f) not in skip]
        for name in files:
            match = _TEMPORARY.match(name)
            if match is None or match["host"] != host or process_running(int(match["pid"])):
                continue
            path = Path(root, name)
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): kill() said it exists
        return True
