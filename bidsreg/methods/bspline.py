"""The ``bspline`` baseline: an elastix B-spline free-form deformation after an affine start.

As for :mod:`bidsreg.methods.demons`, the affine start is antspyx ``Affine`` (the ``antsaffine``
baseline); the moving image is resampled onto the fixed grid through it and elastix optimises
a cubic B-spline transform on it (Rueckert et al. 1999; Klein et al. 2010): normalised
correlation (both images are T1w; on the phantom of the tests Mattes mutual information lost
Dice where correlation gained it) on random samples inside the fixed brain, drawn anew every
iteration, adaptive
stochastic gradient descent, coarse to fine with the control point grid refined at each level.
transformix turns the result into a dense field on the fixed grid (ITK's NIfTI warp), read back
with :mod:`bidsreg.itk`, so a fixed point ``x`` maps to ``affine @ (x + displacement(x))`` like
every other method.

elastix (the Debian/Ubuntu ``elastix`` package, run as a subprocess), not
SimpleITK's B-spline registration, because ITK v4's metrics accumulate each sample's derivative
over every control point: on a 1 mm brain with a 10 mm grid (some 48 000 parameters) one
metric evaluation takes seconds, where elastix's stochastic sampler takes milliseconds. And not
the itk-elastix wheels, which install about 1.6 GB of ITK Python wrapping for one executable's
worth of code. The cost: elastix is a system package (``apt-get install elastix``, or conda-forge
``elastix``); without it ``--methods bspline`` stops before any work with the install command.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import nibabel as nb
import numpy as np

from .ants import affine_iterations_option
from .base import Context, RegistrationResult, config_parameters, option, using_threads
from .refine import refine_affine

__all__ = ["BSplineConfig", "bspline_field", "elastix_parameters", "find_elastix", "register"]


@dataclass(frozen=True)
class BSplineConfig:
    """Parameters of the B-spline stage.

    Attributes
    ----------
    grid_spacing : float
        Control point spacing (mm) at the finest level; each coarser level doubles it.
    shrink_factors : tuple of int
        Image pyramid shrink factor of each level, coarse to fine.
    iterations : tuple of int
        Optimiser iterations of each level.
    samples : int
        Random samples of the metric per iteration (inside the fixed brain).
    affine_iterations : tuple of int or None
        Iterations per level of the antspyx Affine start (None: antspyx's defaults).
    """

    grid_spacing: float = option("--bspline-grid-spacing", "B-spline control point spacing (mm) of the finest level",
                                 10.0)
    shrink_factors: tuple[int, ...] = option("--bspline-shrink-factors", "image shrink factor per level", (4, 2, 1))
    iterations: tuple[int, ...] = option("--bspline-iterations", "optimiser iterations per level, coarse to fine",
                                         (250, 250, 250))
    samples: int = 2048
    affine_iterations: tuple[int, ...] | None = affine_iterations_option()

    def __post_init__(self) -> None:
        if len(self.shrink_factors) != len(self.iterations) or not self.iterations:
            raise ValueError(f"one iteration count per shrink factor, got {self.shrink_factors} and {self.iterations}")
        if min(self.shrink_factors) < 1 or min(self.iterations) < 1 or self.grid_spacing <= 0 or self.samples < 1:
            raise ValueError("shrink factors, iterations and samples must be >= 1 and grid_spacing > 0")


def find_elastix() -> tuple[str, str]:
    """The ``elastix`` and ``transformix`` executables.

    Raises
    ------
    FileNotFoundError
        When either is not on the PATH (with how to install them).
    """
    found = tuple(shutil.which(name) for name in ("elastix", "transformix"))
    if None in found:
        raise FileNotFoundError("elastix/transformix not found on the PATH (the bspline method runs them); install "
                                "them: 'apt-get install elastix' (Debian/Ubuntu) or 'conda install -c conda-forge "
                                "elastix', or use the bidsreg container")
    return found  # type: ignore[return-value]


def elastix_parameters(config: BSplineConfig, seed: int) -> str:
    """The elastix parameter file of ``config`` (a B-spline registration of images already on one grid)."""
    levels = len(config.shrink_factors)
    pyramid = " ".join(f"{s} {s} {s}" for s in config.shrink_factors)
    # the grid spacing of each level as a multiple of the finest (elastix's schedule)
    grid = " ".join(str(2 ** (levels - 1 - level)) for level in range(levels))
    values = {
        "FixedInternalImagePixelType": '"float"', "MovingInternalImagePixelType": '"float"',
        "FixedImageDimension": 3, "MovingImageDimension": 3, "UseDirectionCosines": '"true"',
        "Registration": '"MultiResolutionRegistration"', "Transform": '"BSplineTransform"',
        "BSplineTransformSplineOrder": 3, "FinalGridSpacingInPhysicalUnits": config.grid_spacing,
        "GridSpacingSchedule": grid, "HowToCombineTransforms": '"Compose"',
        "Metric": '"AdvancedNormalizedCorrelation"',
        "Optimizer": '"AdaptiveStochasticGradientDescent"',
        "MaximumNumberOfIterations": " ".join(map(str, config.iterations)),
        "ImageSampler": '"RandomCoordinate"', "NumberOfSpatialSamples": config.samples,
        "NewSamplesEveryIteration": '"true"', "RandomSeed": seed,
        "NumberOfResolutions": levels, "ImagePyramidSchedule": pyramid,
        "FixedImagePyramid": '"FixedSmoothingImagePyramid"', "MovingImagePyramid": '"MovingSmoothingImagePyramid"',
        "Interpolator": '"LinearInterpolator"', "ResampleInterpolator": '"FinalBSplineInterpolator"',
        "FinalBSplineInterpolationOrder": 3, "Resampler": '"DefaultResampler"', "DefaultPixelValue": 0,
        "ErodeMask": '"false"', "WriteResultImage": '"false"', "ResultImageFormat": '"nii.gz"',
    }
    return "".join(f"({key} {value})\n" for key, value in values.items())


def bspline_field(fixed_path: str, warped_moving: np.ndarray, warp_path: str, config: BSplineConfig, seed: int,
                   threads: int) -> None:
    """Run elastix between the fixed image and the affinely warped moving image (on the fixed
    grid), then transformix for the dense field, written as an ITK NIfTI warp to ``warp_path``."""
    find_elastix()
    fixed = nb.load(fixed_path)
    folder = Path(warp_path).parent
    moving = folder / "moving.nii.gz"
    nb.Nifti1Image(warped_moving.astype(np.float32), fixed.affine, fixed.header).to_filename(moving)
    mask = folder / "fixed_mask.nii.gz"
    brain = np.asarray(fixed.dataobj) > 0
    nb.Nifti1Image(brain.astype(np.uint8), fixed.affine).to_filename(mask)
    parameters = folder / "bspline.txt"
    parameters.write_text(elastix_parameters(config, seed))
    out = folder / "elastix"
    out.mkdir()
    _run(["elastix", "-f", fixed_path, "-m", str(moving), "-fMask", str(mask), "-p", str(parameters),
          "-threads", str(threads), "-out", str(out)], out)
    transform = out / "TransformParameters.0.txt"
    _run(["transformix", "-def", "all", "-threads", str(threads), "-out", str(out), "-tp", str(transform)], out)
    shutil.move(next(out.glob("deformationField.*")), warp_path)


def _run(command: list[str], folder: Path) -> None:
    """Run elastix or transformix in ``folder``; raise with the end of its log when it fails."""
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise RuntimeError(f"{command[0]} failed (exit code {done.returncode}): {tail}")


def register(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    config: BSplineConfig = BSplineConfig(),
    context: Context = Context(),
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` (3D NIfTI files): antspyx Affine, then an elastix
    B-spline deformation (``context.seed`` seeds both stages' samplers, ``context.threads`` both).

    Returns
    -------
    RegistrationResult
        Affine, forward and inverse displacement on the fixed grid, seconds of both stages.

    Raises
    ------
    FileNotFoundError
        Without elastix (see :func:`find_elastix`), before the affine stage runs.
    """
    elastix, _ = find_elastix()
    version = subprocess.run([elastix, "--version"], capture_output=True, text=True).stdout.split(":")[-1].strip()
    field = partial(bspline_field, config=config, seed=context.seed, threads=context.threads)
    with using_threads(context.threads):
        result = refine_affine(fixed, moving, field, affine_iterations=config.affine_iterations, context=context)
    return replace(result, parameters={**result.parameters, "elastix": version,
                                       "transform": "BSplineTransform (order 3)",
                                       "metric": "AdvancedNormalizedCorrelation",
                                       "optimizer": "AdaptiveStochasticGradientDescent", **config_parameters(config)})
