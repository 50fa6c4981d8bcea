"""The ANTs baselines, run through antspyx: ``antsaffine``, ``antssyn``, ``antssynquick`` and ``antssynfull``.

``antsaffine`` is antspyx ``type_of_transform="Affine"`` and ``antssyn`` is ``"SyN"`` (an
affine then symmetric normalisation), both with antspyx's defaults unless iterations are given
(CONVENTIONS.md: the SyN reference). ``antssynquick`` and ``antssynfull`` are antspyx's
recreations of the ANTs scripts ``antsRegistrationSyNQuick.sh`` and ``antsRegistrationSyN.sh``
(``"antsRegistrationSyNQuick[s]"`` and ``"antsRegistrationSyN[s]"``: rigid, affine, then SyN,
shrink factors 8, 4, 2, 1; the quick one with mutual information and no full-resolution SyN
level, the full one with CC of radius 2 at every level, the field's reference setting that takes
about 40 minutes a 1 mm pair on 2 cores). They take no options: their settings are the method.
ANTs writes its affine as ``*GenericAffine.mat`` and SyN's fields (forward and inverse) on the
fixed image's grid; they are read back with :mod:`bidsreg.itk` into a
:class:`~bidsreg.transform.Transform`, so that every method of the app writes the same composite
transform files.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from ..itk import read_affine, read_displacement
from ..transform import Transform
from .base import Context, RegistrationResult, option

__all__ = ["AffineConfig", "SCRIPTS", "SyNConfig", "ScriptConfig", "affine_iterations_option", "register_affine",
           "register_syn", "register_syn_full", "register_syn_quick", "too_coarse_for_scripts"]

#: The methods that run an ANTs script with its fixed settings.
SCRIPTS = ("antssynquick", "antssynfull")
#: The scripts' coarsest shrink factor (levels 8, 4, 2, 1), and the fewest voxels across an image
#: at that level for which their rigid stage on mutual information is reliable (a 1 mm brain has 20).
_SCRIPT_SHRINK, _SCRIPT_MIN_VOXELS = 8, 10


def affine_iterations_option() -> Any:
    """The ``--ants-affine-iterations`` field: antspyx Affine's iterations per level, of
    ``antsaffine`` and of the affine start of the other classical methods."""
    return option("--ants-affine-iterations",
                  "iterations per level of antspyx's affine stage (also the start of bspline and demons), coarse to "
                  "fine (default: antspyx's 2100 1200 1200 10)")


@dataclass(frozen=True)
class AffineConfig:
    """Parameters of ``antsaffine``.

    Attributes
    ----------
    affine_iterations : tuple of int or None
        Iterations per level (antspyx ``aff_iterations``, default (2100, 1200, 1200, 10)); one
        level per shrink factor (..., 4, 2, 1), smoothing (..., 2, 1, 0) voxels.
    """

    affine_iterations: tuple[int, ...] | None = affine_iterations_option()


@dataclass(frozen=True)
class SyNConfig:
    """Parameters of ``antssyn``.

    Attributes
    ----------
    affine_iterations : tuple of int or None
        As in :class:`AffineConfig`, for SyN's affine stage.
    syn_iterations : tuple of int or None
        Iterations per level of SyN (antspyx ``reg_iterations``, default (40, 20, 0)).
    """

    affine_iterations: tuple[int, ...] | None = affine_iterations_option()
    syn_iterations: tuple[int, ...] | None = option(
        "--ants-syn-iterations", "iterations per level of SyN, coarse to fine (default: antspyx's 40 20 0)")


@dataclass(frozen=True)
class ScriptConfig:
    """Parameters of ``antssynquick`` and ``antssynfull``: none, the ANTs script's settings are the method."""


def too_coarse_for_scripts(shape: tuple[int, ...]) -> str | None:
    """Why the ANTs scripts' settings do not suit a fixed image of ``shape`` voxels, or None.

    Their coarsest level shrinks the image 8 times; below 10 voxels across, their rigid stage
    lands far from the answer on some seeds (on a 40-voxel phantom: 0.0 to 0.9 Dice).
    """
    narrowest = min(shape[:3]) // _SCRIPT_SHRINK
    if narrowest >= _SCRIPT_MIN_VOXELS:
        return None
    return (f"the ANTs scripts' coarsest level (shrink factor {_SCRIPT_SHRINK}) leaves {narrowest} voxels across "
            f"this {'x'.join(map(str, shape[:3]))} image, where their rigid stage can fail; they are made for "
            f"brains of about 1 mm: prefer antssyn, whose levels can be set, for images this coarse")


def register_affine(fixed: str | os.PathLike, moving: str | os.PathLike, config: AffineConfig = AffineConfig(),
                    context: Context = Context()) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with antspyx ``Affine`` (3D NIfTI files)."""
    return _register(fixed, moving, "Affine", config.affine_iterations, None, context)


def register_syn(fixed: str | os.PathLike, moving: str | os.PathLike, config: SyNConfig = SyNConfig(),
                 context: Context = Context()) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with antspyx ``SyN`` (3D NIfTI files)."""
    return _register(fixed, moving, "SyN", config.affine_iterations, config.syn_iterations, context)


def register_syn_quick(fixed: str | os.PathLike, moving: str | os.PathLike, config: ScriptConfig = ScriptConfig(),
                       context: Context = Context()) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with antspyx ``antsRegistrationSyNQuick[s]`` (3D NIfTI files)."""
    return _register(fixed, moving, "antsRegistrationSyNQuick[s]", None, None, context)


def register_syn_full(fixed: str | os.PathLike, moving: str | os.PathLike, config: ScriptConfig = ScriptConfig(),
                      context: Context = Context()) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with antspyx ``antsRegistrationSyN[s]`` (3D NIfTI files)."""
    return _register(fixed, moving, "antsRegistrationSyN[s]", None, None, context)


def _register(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    kind: str,
    affine_iterations: tuple[int, ...] | None,
    syn_iterations: tuple[int, ...] | None,
    context: Context,
) -> RegistrationResult:
    """antspyx ``type_of_transform=kind``.

    ITK's threads (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``, read by ITK the first time a process
    uses it) are ``context.threads``, and ``context.seed`` is ANTs' random seed (the affine
    metric samples points at random). Results repeat exactly with one thread and a seed; with
    more threads ANTs' parallel metric sums are not deterministic (a few 0.001 Dice).
    The seconds are those of the registration alone, without reading the images.
    """
    options: dict = {}
    if affine_iterations is not None:
        options["aff_iterations"] = tuple(int(i) for i in affine_iterations)
        levels = len(options["aff_iterations"])
        options["aff_shrink_factors"] = tuple(2 ** i for i in range(levels - 1, -1, -1))
        options["aff_smoothing_sigmas"] = tuple(range(levels - 1, -1, -1))
    if syn_iterations is not None:
        options["reg_iterations"] = tuple(int(i) for i in syn_iterations)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(context.threads)
    os.environ["ANTS_RANDOM_SEED"] = str(context.seed)
    import ants  # antspyx: imported here (a second to load), after ITK's settings are in the environment
    fixed_img, moving_img = ants.image_read(str(fixed)), ants.image_read(str(moving))
    with tempfile.TemporaryDirectory(prefix="bidsreg-ants-") as tmp:
        tick = time.perf_counter()
        out = ants.registration(fixed_img, moving_img, type_of_transform=kind, outprefix=f"{tmp}/ants_", **options)
        seconds = time.perf_counter() - tick
        forward, inverse = out["fwdtransforms"], out["invtransforms"]
        affine = read_affine(next(t for t in forward if t.endswith(".mat")))
        warps = [t for t in forward if t.endswith(".nii.gz")]
        transform = Transform(affine)
        if warps:
            displacement, grid = read_displacement(warps[0])
            inverse_displacement, _ = read_displacement(next(t for t in inverse if t.endswith(".nii.gz")))
            transform = Transform(affine, displacement, inverse_displacement, grid)
    parameters = {"antspyx": ants.__version__, "type_of_transform": kind, "random_seed": context.seed,
                  **{key: list(value) for key, value in options.items()}}
    return RegistrationResult(transform, seconds, parameters)
