"""The registration methods: the two-stage CNN and the baselines of the original comparison.

:mod:`~bidsreg.methods.table` lists them; each has a module (``cnn``, ``voxelmorph``, ``ants``,
``demons``, ``bspline``) whose ``register`` functions follow :mod:`~bidsreg.methods.base`;
``refine`` is the affine start that demons and bspline share, ``training`` and ``model_card``
train and describe the networks' checkpoints.
"""
