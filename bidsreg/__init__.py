"""bidsreg: two-stage unsupervised CNN registration of brain MRI, benchmarked against ANTs."""
__version__ = "0.1.0"
