"""The ``demons`` baseline: SimpleITK's fast symmetric forces Demons after an affine start.

As in the original comparison, Demons refines an affine registration: the affine is antspyx
``Affine`` (the ``antsaffine`` baseline, so the two are directly comparable), the moving image
is resampled onto the fixed grid through it and histogram-matched to the fixed image, and
:class:`SimpleITK.FastSymmetricForcesDemonsRegistrationFilter` estimates a displacement
field coarse to fine (shrink factors, Gaussian field smoothing). The field is read back through
ITK's NIfTI warp format with :mod:`bidsreg.itk`, so it lands in the same RAS+ frames as every
other method: a fixed point ``x`` maps to ``affine @ (x + displacement(x))``.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from .baselines import BaselineResult, ants_register
from .image import load_volume
from .itk import read_displacement
from .transforms import apply_transform, invert_displacement

__all__ = ["DemonsConfig", "demons_register"]


@dataclass(frozen=True)
class DemonsConfig:
    """Parameters of the Demons stage.

    Attributes
    ----------
    shrink_factors : tuple of int
        Grid shrink factor of each level, coarse to fine.
    iterations : tuple of int
        Demons iterations of each level.
    field_sigma : float
        Standard deviation (voxels of each level) of the Gaussian smoothing of the field
        after each iteration (the regulariser).
    histogram_levels, match_points : int
        Histogram matching of the moving image to the fixed one (0 levels: off).
    """

    shrink_factors: tuple[int, ...] = (4, 2, 1)
    iterations: tuple[int, ...] = (50, 30, 15)
    field_sigma: float = 1.5
    histogram_levels: int = 256
    match_points: int = 15

    def __post_init__(self) -> None:
        if len(self.shrink_factors) != len(self.iterations) or not self.iterations:
            raise ValueError(f"one iteration count per shrink factor, got {self.shrink_factors} and {self.iterations}")
        if min(self.shrink_factors) < 1 or min(self.iterations) < 0 or self.field_sigma <= 0:
            raise ValueError("shrink factors must be >= 1, iterations >= 0 and field_sigma > 0")


def _demons_field(fixed_path: str, warped_moving: np.ndarray, config: DemonsConfig, warp_path: str) -> None:
    """Run the multi-resolution Demons between the fixed image and the affinely warped moving
    image (on the fixed grid) and write the field as an ITK NIfTI warp to ``warp_path``."""
    import SimpleITK as sitk

    fixed = sitk.Cast(sitk.ReadImage(fixed_path), sitk.sitkFloat32)
    moving = sitk.GetImageFromArray(np.ascontiguousarray(warped_moving.transpose(2, 1, 0), dtype=np.float32))
    moving.CopyInformation(fixed)
    if config.histogram_levels:
        moving = sitk.HistogramMatching(moving, fixed, config.histogram_levels, config.match_points, True)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetStandardDeviations(config.field_sigma)
    demons.SetSmoothDisplacementField(True)

    def at_level(image, shrink: int):
        """``image`` smoothed and shrunk by ``shrink`` (itself at 1)."""
        return sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, 0.5 * shrink), [shrink] * 3) if shrink > 1 else image

    field = None
    for shrink, iterations in zip(config.shrink_factors, config.iterations):
        level_fixed, level_moving = at_level(fixed, shrink), at_level(moving, shrink)
        if field is None:
            start = sitk.Image(level_fixed.GetSize(), sitk.sitkVectorFloat64, 3)
            start.CopyInformation(level_fixed)
        else:  # the coarser level's field, upsampled
            start = sitk.Resample(field, level_fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
        demons.SetNumberOfIterations(iterations)
        field = demons.Execute(level_fixed, level_moving, start)
    if field.GetSize() != fixed.GetSize():
        field = sitk.Resample(field, fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    sitk.WriteImage(sitk.Cast(field, sitk.sitkVectorFloat32), warp_path)


def demons_register(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    config: DemonsConfig = DemonsConfig(),
    *,
    seed: int = 0,
    threads: int = 1,
) -> BaselineResult:
    """Register ``moving`` to ``fixed``: antspyx Affine, then fast symmetric forces Demons.

    Parameters
    ----------
    fixed, moving : path-like
        3D NIfTI images.
    config : DemonsConfig
    seed, threads : int
        Of the affine stage (see :func:`bidsreg.baselines.ants_register`); SimpleITK uses
        ``threads`` too.

    Returns
    -------
    BaselineResult
        Affine, forward and inverse displacement on the fixed grid, seconds of both stages.
    """
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    start = ants_register(fixed, moving, "antsaffine", seed=seed, threads=threads)
    fixed_volume, moving_volume = load_volume(fixed), load_volume(moving)
    tick = time.perf_counter()
    warped = apply_transform(moving_volume, fixed_volume.shape, fixed_volume.affine, start.affine)
    with tempfile.TemporaryDirectory(prefix="bidsreg-demons-") as tmp:
        warp = os.path.join(tmp, "demons_warp.nii.gz")
        _demons_field(str(fixed), warped, config, warp)
        displacement, reference = read_displacement(warp)
    inverse = invert_displacement(displacement, reference)
    seconds = start.seconds + time.perf_counter() - tick
    parameters = {"simpleitk": sitk.Version.VersionString(), "filter": "FastSymmetricForcesDemonsRegistrationFilter",
                  "affine_start": start.parameters, **{key: list(value) if isinstance(value, tuple) else value
                                                        for key, value in asdict(config).items()}}
    return BaselineResult(start.affine, displacement, inverse, reference, seconds, parameters)
