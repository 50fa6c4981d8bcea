"""The networks and their training, a leaf of the package: nothing here imports bidsreg outside ``nn/``.

``layers`` (spatial transformers, affine composition, scaling and squaring), ``networks``
(``AffineNet``, ``DeformableNet``), ``losses``, ``grid`` (the network grid and intensity
normalisation), ``affine_stage`` (the global stage in both directions), ``augment``, ``train``
(in memory), ``checkpoint`` and ``model`` (a trained model loaded from a checkpoint).
"""
