"""The affine start of the classical deformable methods, and the deformable refinement after it.

As in the original comparison, Demons and the B-spline free-form deformation refine an affine
registration: antspyx ``Affine``, the ``antsaffine`` baseline with the same settings, so that
the three compare directly.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

import numpy as np

from ..fields import invert_displacement
from ..image import load_volume
from ..itk import read_displacement
from ..transform import Transform
from .ants import AffineConfig, register_affine
from .base import Context, RegistrationResult

__all__ = ["refine_affine"]


def refine_affine(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    estimate: Callable[[str, np.ndarray, str], None],
    *,
    affine_iterations: tuple[int, ...] | None = None,
    context: Context = Context(),
    start: RegistrationResult | None = None,
) -> RegistrationResult:
    """antspyx Affine (the ``antsaffine`` baseline), then a deformable refinement.

    The moving image is resampled onto the fixed grid through the affine and handed to
    ``estimate(fixed_path, warped_moving, warp_path)``, which writes the displacement field
    (fixed grid points -> points of the warped moving image) as an ITK NIfTI warp; it is read
    back in RAS+ mm and inverted, so that a fixed point ``x`` maps to
    ``affine @ (x + displacement(x))``.

    ``start``: an antsaffine result of this pair computed before (parameter sweeps); it is
    used instead of running antspyx again.

    Returns
    -------
    RegistrationResult
        Seconds of both stages; ``parameters`` holds the affine stage's (``affine_start``).
    """
    if start is None:
        start = register_affine(fixed, moving, AffineConfig(affine_iterations), context)
    fixed_volume, moving_volume = load_volume(fixed), load_volume(moving)
    tick = time.perf_counter()
    warped = start.transform.apply(moving_volume, fixed_volume.grid)
    with tempfile.TemporaryDirectory(prefix="bidsreg-refine-") as tmp:
        warp = os.path.join(tmp, "warp.nii.gz")
        estimate(str(fixed), warped, warp)
        displacement, grid = read_displacement(warp)
    transform = Transform(start.transform.affine, displacement, invert_displacement(displacement, grid), grid)
    seconds = start.seconds + time.perf_counter() - tick
    return RegistrationResult(transform, seconds, {"affine_start": start.parameters})
