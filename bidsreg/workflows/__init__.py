"""Nipype workflow factories (``init_*_wf``) of the participant level, and the method names."""

#: Registration methods of ``--methods`` (the CNN's global stage is also reported as ``cnnaffine``).
METHODS = ("cnn", "antsaffine", "antssyn")
#: Methods whose transform has a displacement field (a Jacobian to measure).
DEFORMABLE = frozenset({"cnn", "antssyn"})
