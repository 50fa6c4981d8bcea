"""Errors about the user's input, each with its BIDS-Apps exit code (:mod:`bidsreg.exit_codes`).

They are ValueErrors whose message is one line naming the file and the fix; the command line
prints the message and exits with ``exit_code``.
"""
from __future__ import annotations

from . import exit_codes

__all__ = ["BIDSValidationError", "InputError", "MissingInputError", "NoFilesSelectedError", "OutputError"]


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
