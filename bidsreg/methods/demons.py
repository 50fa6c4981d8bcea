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
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from .ants import affine_iterations_option
from .base import Context, RegistrationResult, config_parameters, option, using_threads
from .refine import refine_affine

__all__ = ["DemonsConfig", "demons_field", "register"]


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
    affine_iterations : tuple of int or None
        Iterations per level of the antspyx Affine start (None: antspyx's defaults).
    """

    shrink_factors: tuple[int, ...] = option("--demons-shrink-factors", "image shrink factor per level", (4, 2, 1))
    iterations: tuple[int, ...] = option("--demons-iterations", "Demons iterations per level, coarse to fine",
                                         (50, 30, 15))
    field_sigma: float = option("--demons-field-sigma",
                                "Gaussian smoothing of the field after each iteration (voxels of the level)", 1.0)
    histogram_levels: int = 256
    match_points: int = 15
    affine_iterations: tuple[int, ...] | None = affine_iterations_option()

    def __post_init__(self) -> None:
        if len(self.shrink_factors) != len(self.iterations) or not self.iterations:
            raise ValueError(f"one iteration count per shrink factor, got {self.shrink_factors} and {self.iterations}")
        if min(self.shrink_factors) < 1 or min(self.iterations) < 0 or self.field_sigma <= 0:
            raise ValueError("shrink factors must be >= 1, iterations >= 0 and field_sigma > 0")


def demons_field(fixed_path: str, warped_moving: np.ndarray, warp_path: str, config: DemonsConfig) -> None:
    """Run the multi-resolution Demons between the fixed image and the affinely warped moving
    image (on the fixed grid) and write the field as an ITK NIfTI warp to ``warp_path``."""
    import SimpleITK as sitk

    fixed = sitk.Cast(sitk.ReadImage(str(fixed_path)), sitk.sitkFloat32)
    # SimpleITK arrays are (Z, Y, X); the moving image is on the fixed grid.
    moving = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(warped_moving, (2, 1, 0)), dtype=np.float32))
    moving.CopyInformation(fixed)
    if config.histogram_levels:
        moving = sitk.HistogramMatching(moving, fixed, config.histogram_levels, config.match_points, True)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetStandardDeviations(config.field_sigma)
    demons.SetSmoothDisplacementField(True)

    def at_level(image, shrink: int):
        """``image`` smoothed and shrunk by ``shrink`` (itself at 1)."""
        if shrink == 1:
            return image
        sigma = [0.5 * shrink * spacing for spacing in image.GetSpacing()]  # mm: half a coarse voxel
        return sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, sigma), [shrink] * 3)

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


def register(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    config: DemonsConfig = DemonsConfig(),
    context: Context = Context(),
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` (3D NIfTI files): antspyx Affine, then fast symmetric
    forces Demons (SimpleITK on ``context.threads`` threads, as the affine stage).

    Returns
    -------
    RegistrationResult
        Affine, forward and inverse displacement on the fixed grid, seconds of both stages.
    """
    import SimpleITK as sitk

    with using_threads(context.threads):
        result = refine_affine(fixed, moving, partial(demons_field, config=config),
                               affine_iterations=config.affine_iterations, context=context)
    return replace(result, parameters={**result.parameters, "simpleitk": sitk.Version.VersionString(),
                                       "filter": "FastSymmetricForcesDemonsRegistrationFilter",
                                       **config_parameters(config)})
