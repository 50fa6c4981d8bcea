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

#: What each code means, as ``bidsreg --help`` lists them.
MEANINGS = {
    OK: "done", FAILURE: "a step failed (crash reports in the work folder; rerun to resume)",
    VALIDATION_FAILED: "BIDS validation failed", UNKNOWN_LEVEL: "unknown analysis level",
    NO_FILES: "the selection (labels, filters) matched no files", USAGE: "usage error", BAD_INPUT: "bad input data",
    INPUT_MISSING: "an input is missing", CANNOT_CREATE_OUTPUT: "cannot create the output", IO_ERROR: "I/O error",
}
