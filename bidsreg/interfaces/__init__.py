"""Thin Nipype interfaces over the bidsreg library (the maths lives in the library's modules)."""
