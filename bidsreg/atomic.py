"""Atomic file output: write to a temporary name beside the target, then rename."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output"]


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffixes}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
