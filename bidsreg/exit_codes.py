"""Exit codes of the BIDS-Apps execution specification (see CONVENTIONS.md)."""
from __future__ import annotations

OK = 0
FAILURE = 1
VALIDATION_FAILED = 16
UNKNOWN_LEVEL = 17
NO_FILES = 18
USAGE = 64
BAD_INPUT = 65
INPUT_MISSING = 66
CANNOT_CREATE_OUTPUT = 73
IO_ERROR = 74
