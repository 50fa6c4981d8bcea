"""Synthetic cohorts: the demo's subjects and the training set of the shipped default weights.

The two are drawn from differently seeded generators, so the demo cohort is never trained on.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..image import Volume
from .atlas import Atlas
from .synth import SynthRanges, sample_subject, synthesise

__all__ = ["DEMO_RANGES", "TRAINING_RANGES", "TRAINING_SEED", "synthetic_cohort"]

#: The demo's subjects: the template's own T1w contrast, moderate movements.
DEMO_RANGES = SynthRanges()
#: The default weights' training subjects: stronger movements, and half of them with random
#: per-region intensities (SynthMorph-style) so that the networks do not learn one contrast.
TRAINING_RANGES = replace(DEMO_RANGES, rotation=15.0, scaling=0.1, translation=10.0, velocity_sd=3.0,
                          bias_sd=0.25, gamma_sd=0.3, noise=(0.0, 0.05), label_contrast=0.5)
#: Seed of the training cohort (the demo uses the seed its user gives, 0 by default).
TRAINING_SEED = 1000


def synthetic_cohort(atlas: Atlas, n: int, seed: int, ranges: SynthRanges, prefix: str = "synth") -> list[tuple[Volume, Volume]]:
    """``n`` synthetic subjects, each an image and its label map.

    Parameters
    ----------
    atlas : Atlas
    n : int
        Number of subjects.
    seed : int
        Seed of the generator that draws all of them (same seed, same subjects).
    ranges : SynthRanges
    prefix : str
        Name stem of the volumes (``<prefix>-<seed>-<i>``; the trainer records these names).

    Returns
    -------
    list of (Volume, Volume)
        (T1w image, label map) pairs, on each subject's own grid.
    """
    if n < 1:
        raise ValueError(f"a cohort needs at least one subject, got n={n}")
    generator = torch.Generator().manual_seed(seed)
    cohort = []
    for index in range(n):
        image, labels, affine = synthesise(atlas, sample_subject(atlas, generator, ranges))
        name = f"{prefix}-{seed}-{index:03d}"
        cohort.append((Volume(image, affine, name), Volume(labels.astype("int32"), affine, name)))
    return cohort
