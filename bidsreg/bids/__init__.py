"""BIDS input: validation and queries (pybids)."""
