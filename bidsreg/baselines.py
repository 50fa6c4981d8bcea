"""The ANTs baselines, run through antspyx, as bidsreg RAS+ transforms.

``antsaffine`` is antspyx ``type_of_transform="Affine"`` and ``antssyn`` is ``"SyN"`` (an
affine then symmetric normalisation), both with antspyx's defaults unless iterations are given
(CONVENTIONS.md: the SyN reference). ANTs writes its affine as ``*GenericAffine.mat`` and SyN's
fields (forward and inverse) on the fixed image's grid; they are read back with
:mod:`bidsreg.itk` into the frames of :class:`bidsreg.registration.RegistrationResult`, so that
every method of the app writes the same composite transform files.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .itk import read_affine, read_displacement

__all__ = ["ANTS_TRANSFORMS", "BaselineResult", "ants_register", "config_parameters", "refine_affine"]

#: bidsreg method name -> antspyx ``type_of_transform``.
ANTS_TRANSFORMS = {"antsaffine": "Affine", "antssyn": "SyN"}


@dataclass
class BaselineResult:
    """A baseline's transform in bidsreg's frames (see ``RegistrationResult``).

    Attributes
    ----------
    affine : numpy.ndarray
        (4, 4) world map fixed -> moving (RAS+ mm).
    displacement, inverse_displacement : numpy.ndarray or None
        (X, Y, Z, 3) RAS+ mm on ``reference_affine``'s grid (the fixed grid); None for an affine method.
    reference_affine : numpy.ndarray or None
        (4, 4) voxel -> RAS+ mm of the fields' grid.
    seconds : float
        Wall-clock time of the registration itself.
    parameters : dict
        What was run (for the sidecars).
    """

    affine: np.ndarray
    displacement: np.ndarray | None
    inverse_displacement: np.ndarray | None
    reference_affine: np.ndarray | None
    seconds: float
    parameters: dict = field(default_factory=dict)


def config_parameters(config) -> dict:
    """A method's config dataclass as JSON-ready sidecar parameters (tuples as lists)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


def ants_register(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    method: str,
    *,
    affine_iterations: tuple[int, ...] | None = None,
    syn_iterations: tuple[int, ...] | None = None,
    seed: int = 0,
    threads: int = 1,
) -> BaselineResult:
    """Register ``moving`` to ``fixed`` with antspyx.

    Parameters
    ----------
    fixed, moving : path-like
        3D NIfTI images.
    method : {"antsaffine", "antssyn"}
    affine_iterations : tuple of int, optional
        Iterations per level of the affine stage (antspyx ``aff_iterations``, default
        (2100, 1200, 1200, 10)); one level per shrink factor (6, 4, 2, 1).
    syn_iterations : tuple of int, optional
        Iterations per level of SyN (antspyx ``reg_iterations``, default (40, 20, 0)).
    seed : int
        ANTs random seed (the affine metric samples points at random; ``ANTS_RANDOM_SEED``).
    threads : int
        ITK threads (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``, read by ITK the first time a
        process uses it). Results repeat exactly with one thread and a seed; with more threads
        ANTs' parallel metric sums are not deterministic (differences of a few 0.001 Dice).

    Returns
    -------
    BaselineResult
    """
    if method not in ANTS_TRANSFORMS:
        raise ValueError(f"unknown ANTs method {method!r}; choose from {', '.join(ANTS_TRANSFORMS)}")
    kind = ANTS_TRANSFORMS[method]
    options: dict = {}
    if affine_iterations is not None:
        options["aff_iterations"] = tuple(int(i) for i in affine_iterations)
        levels = len(options["aff_iterations"])
        options["aff_shrink_factors"] = tuple(2 ** i for i in range(levels - 1, -1, -1))
        options["aff_smoothing_sigmas"] = tuple(range(levels - 1, -1, -1))
    if syn_iterations is not None and kind == "SyN":
        options["reg_iterations"] = tuple(int(i) for i in syn_iterations)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    os.environ["ANTS_RANDOM_SEED"] = str(seed)
    import ants  # antspyx: imported here (a second to load), after ITK's settings are in the environment
    fixed_img, moving_img = ants.image_read(str(fixed)), ants.image_read(str(moving))
    with tempfile.TemporaryDirectory(prefix="bidsreg-ants-") as tmp:
        tick = time.perf_counter()
        out = ants.registration(fixed_img, moving_img, type_of_transform=kind, outprefix=f"{tmp}/ants_", **options)
        seconds = time.perf_counter() - tick
        forward, inverse = out["fwdtransforms"], out["invtransforms"]
        affine = read_affine(next(t for t in forward if t.endswith(".mat")))
        warps = [t for t in forward if t.endswith(".nii.gz")]
        inverse_warps = [t for t in inverse if t.endswith(".nii.gz")]
        displacement = inverse_displacement = reference = None
        if warps:
            displacement, reference = read_displacement(warps[0])
            inverse_displacement, _ = read_displacement(inverse_warps[0])
    parameters = {"antspyx": ants.__version__, "type_of_transform": kind, "random_seed": seed, **{
        key: list(value) for key, value in options.items()
    }}
    return BaselineResult(affine, displacement, inverse_displacement, reference, seconds, parameters)



def refine_affine(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    estimate: Callable[[str, np.ndarray, str], None],
    *,
    affine_iterations: tuple[int, ...] | None = None,
    seed: int = 0,
    threads: int = 1,
    start: BaselineResult | None = None,
) -> BaselineResult:
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
    BaselineResult
        Seconds of both stages; ``parameters`` holds the affine stage's (``affine_start``).
    """
    from .image import load_volume
    from .transforms import apply_transform, invert_displacement

    if start is None:
        start = ants_register(fixed, moving, "antsaffine", affine_iterations=affine_iterations, seed=seed,
                              threads=threads)
    fixed_volume, moving_volume = load_volume(fixed), load_volume(moving)
    tick = time.perf_counter()
    warped = apply_transform(moving_volume, fixed_volume.shape, fixed_volume.affine, start.affine)
    with tempfile.TemporaryDirectory(prefix="bidsreg-refine-") as tmp:
        warp = os.path.join(tmp, "warp.nii.gz")
        estimate(str(fixed), warped, warp)
        displacement, reference = read_displacement(warp)
    inverse = invert_displacement(displacement, reference)
    seconds = start.seconds + time.perf_counter() - tick
    return BaselineResult(start.affine, displacement, inverse, reference, seconds, {"affine_start": start.parameters})
