"""Command line of the BIDS-App: ``bidsreg bids_dir output_dir {train,participant,group}``."""
