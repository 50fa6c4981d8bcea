"""Errors about the user's input, each with its BIDS-Apps exit code (:mod:`bidsreg.exit_codes`).

They are ValueErrors whose message is one line naming the file and the fix; the command line
prints the message and exits with ``exit_code``.
"""
from __future__ import annotations

import errno
import os
import re

from . import exit_codes

__all__ = ["BIDSValidationError", "InputError", "MissingInputError", "NoFilesSelectedError", "OutputError",
           "OutputWriteError", "write_failure"]


class InputError(ValueError):
    """Bad input data (65)."""

    exit_code = exit_codes.BAD_INPUT


class MissingInputError(InputError):
    """A required input is missing (66)."""

    exit_code = exit_codes.INPUT_MISSING


class NoFilesSelectedError(InputError):
    """The selection (labels, filters) matched nothing (18)."""

    exit_code = exit_codes.NO_FILES


class BIDSValidationError(InputError):
    """The dataset is not valid BIDS (16)."""

    exit_code = exit_codes.VALIDATION_FAILED


class OutputError(OSError):
    """The output folder cannot be created or written (73)."""

    exit_code = exit_codes.CANNOT_CREATE_OUTPUT


class OutputWriteError(OutputError):
    """An output could not be written during a run: ``[Errno N] <file>: cannot write (<cause>);
    <what to do>``; exit 73 where the folder refuses it (permissions, read-only), 74 otherwise
    (a full disk or quota, a file-size limit, an I/O error)."""

    _REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)

    def __init__(self, path: str | os.PathLike, error: OSError) -> None:
        cause = error.strerror or str(error)
        fix = ("make the output folder writable" if error.errno in self._REFUSED
               else "free space (or raise the limit) or choose another output_dir")
        super().__init__(error.errno, f"{path}: cannot write ({cause}); {fix}, then run the same command again "
                                      "(it resumes)")

    @property
    def exit_code(self) -> int:
        return self.code_of(self.errno)

    @classmethod
    def code_of(cls, number: int) -> int:
        """The exit code of a write that failed with ``errno`` ``number``."""
        return exit_codes.CANNOT_CREATE_OUTPUT if number in cls._REFUSED else exit_codes.IO_ERROR


_WRITE_FAILURE = re.compile(r"OutputWriteError: \[Errno (\d+)\] (.+)")


def write_failure(text: str) -> tuple[int, str] | None:
    """The exit code and message of the first :class:`OutputWriteError` in a failed step's
    traceback text (how a Nipype worker's exception reaches the run), or None."""
    match = _WRITE_FAILURE.search(text)
    if match is None:
        return None
    return OutputWriteError.code_of(int(match[1])), match[2].strip()
