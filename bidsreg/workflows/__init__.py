"""Nipype workflow factories (``init_*_wf``) of the participant level."""
