"""The registration methods of bidsreg: one table, one row per method.

Every method turns a (fixed, moving) pair of NIfTI files into the same transform pair (ITK
composites, see :mod:`bidsreg.interfaces.registration`), so that the participant workflow, the
metrics, the derivatives and the group report serve each one with no special case. A row says
how the method runs (a registration function and its configuration class, or a trained network),
which command-line options set its parameters, how much memory one registration of a 1 mm
brain takes, whether it is deformable (a Jacobian to measure) and how the report's methods text
describes it.

Adding a method: a module with a function ``register(fixed, moving, [config,] *, seed,
threads) -> BaselineResult``, a row in :data:`TABLE`, and its options in :data:`OPTIONS`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["METHODS", "OPTIONS", "REPORTED", "TABLE", "Method", "Option", "build_config", "deformable",
           "method_parameters", "resolve"]


@dataclass(frozen=True)
class Method:
    """One registration method.

    Attributes
    ----------
    name : str
        The ``--methods`` name and the ``desc-`` entity of its derivatives.
    summary : str
        One line for ``--help``.
    deformable : bool
        Its transform has a displacement field.
    memory_gb : float
        Peak memory of one registration of a 1 mm 256x256x160 pair (Nipype's ``mem_gb``, so
        that MultiProc with ``--mem-gb`` starts no more of them than fit).
    function : str or None
        ``module:function`` of the registration, called as ``function(fixed, moving, [config],
        seed=, threads=, **keywords)`` and returning a :class:`bidsreg.baselines.BaselineResult`;
        None for the networks, which run from a checkpoint (``model``).
    config : str or None
        ``module:Class`` of the frozen dataclass built from the method's parameters and passed
        as ``config``; None: the parameters are passed as keywords.
    keywords : dict
        Fixed keywords of ``function`` (e.g. which ANTs transform).
    model : str or None
        ``"two-stage"`` or ``"one-stage"``: the kind of bidsreg checkpoint the method needs.
    reports : tuple of str
        Further method names it reports (the CNN's global stage alone, ``cnnaffine``).
    check : str or None
        ``module:function`` called before any work starts; raises FileNotFoundError (with how to
        install it) when something the method runs is missing.
    text : str
        Its sentence in the report's methods paragraph; ``{version}`` and ``{parameters}`` are
        filled from its sidecars.
    """

    name: str
    summary: str
    deformable: bool
    memory_gb: float
    function: str | None = None
    config: str | None = None
    keywords: dict = field(default_factory=dict)
    model: str | None = None
    reports: tuple[str, ...] = ()
    check: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Option:
    """A command-line option (and recipe key) setting one parameter of some methods.

    Attributes
    ----------
    flag : str
        The long option, e.g. ``--demons-iterations``.
    keyword : str
        The parameter it sets (a keyword of the function, or a field of the config class).
    methods : tuple of str
        The methods it applies to.
    help : str
    type : callable
        Converts one word (``int`` or ``float``).
    many : bool
        Takes one value per resolution level (a tuple).
    """

    flag: str
    keyword: str
    methods: tuple[str, ...]
    help: str
    type: Callable[[str], Any] = int
    many: bool = True


_CNN_TEXT = (
    "The CNN method is two-stage and unsupervised: a global network predicts an affine map trained to maximise the "
    "squared global normalised cross-correlation, applied in both directions and averaged (log-Euclidean) so that it "
    "is inverse-consistent; then a U-Net predicts a displacement field trained on local NCC over 9×9×9 windows with "
    "a diffusion regulariser (model {model}). Its global stage alone is reported as cnnaffine."
)
_ANTS_TEXT = "The {name} baseline is antspyx {version} registration with type_of_transform='{kind}' ({parameters})."

#: The methods, in the order of the original comparison.
TABLE: dict[str, Method] = {method.name: method for method in (
    Method("cnn", "the two-stage CNN (global affine network, then U-Net displacement field)", True, 2.5,
           model="two-stage", reports=("cnnaffine",), text=_CNN_TEXT),
    Method("antsaffine", "antspyx Affine", False, 1.8, function="bidsreg.baselines:ants_register",
           keywords={"method": "antsaffine"}, text=_ANTS_TEXT),
    Method("bspline", "antspyx Affine, then an elastix B-spline free-form deformation", True, 2.0,
           function="bidsreg.bspline:bspline_register", config="bidsreg.bspline:BSplineConfig",
           check="bidsreg.bspline:find_elastix",
           text="The bspline baseline refines the antsaffine result with a free-form deformation on a cubic B-spline "
                "grid (elastix {version}; normalised correlation on random samples, adaptive stochastic gradient "
                "descent, coarse to fine; {parameters})."),
    Method("demons", "antspyx Affine, then SimpleITK fast symmetric forces Demons", True, 2.5,
           function="bidsreg.demons:demons_register", config="bidsreg.demons:DemonsConfig",
           text="The demons baseline refines the antsaffine result with SimpleITK {version} "
                "FastSymmetricForcesDemonsRegistrationFilter on the histogram-matched moving image, coarse to fine "
                "with Gaussian smoothing of the field ({parameters})."),
    Method("antssyn", "antspyx SyN (affine, then symmetric normalisation)", True, 2.5,
           function="bidsreg.baselines:ants_register", keywords={"method": "antssyn"}, text=_ANTS_TEXT),
    Method("voxelmorph", "one-stage VoxelMorph: the U-Net alone, trained on pairs not aligned by an affine network",
           True, 2.5, model="one-stage",
           text="The voxelmorph method is the one-stage variant: the same U-Net and loss trained alone on pairs "
                "aligned only by their centres of mass, and applied from that alignment (model {model})."),
)}
#: The ``--methods`` names.
METHODS = tuple(TABLE)
#: Every reported method name in the order of the tables: the starting point, then each method
#: after what it reports besides itself (``cnnaffine`` before ``cnn``).
REPORTED = ("original", *(name for method in TABLE.values() for name in (*method.reports, method.name)))

#: Parameters of the methods on the command line and in recipes.
OPTIONS = (
    Option("--ants-affine-iterations", "affine_iterations", ("antsaffine", "antssyn", "bspline", "demons"),
           "iterations per level of antspyx's affine stage (also the start of bspline and demons), coarse to fine "
           "(default: antspyx's 2100 1200 1200 10)"),
    Option("--ants-syn-iterations", "syn_iterations", ("antssyn",),
           "iterations per level of SyN, coarse to fine (default: antspyx's 40 20 0)"),
    Option("--bspline-grid-spacing", "grid_spacing", ("bspline",),
           "B-spline control point spacing (mm) of the finest level", float, False),
    Option("--bspline-iterations", "iterations", ("bspline",), "L-BFGS-B iterations per level, coarse to fine"),
    Option("--bspline-shrink-factors", "shrink_factors", ("bspline",), "image shrink factor per level"),
    Option("--demons-iterations", "iterations", ("demons",), "Demons iterations per level, coarse to fine"),
    Option("--demons-shrink-factors", "shrink_factors", ("demons",), "image shrink factor per level"),
    Option("--demons-field-sigma", "field_sigma", ("demons",),
           "Gaussian smoothing of the field after each iteration (voxels of the level)", float, False),
)


def resolve(path: str) -> Any:
    """The object named by ``module:attribute``."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def deformable(name: str) -> bool:
    """Whether the method reported as ``name`` has a displacement field (``cnnaffine``: no)."""
    return name in TABLE and TABLE[name].deformable


def method_parameters(values: dict[str, Any], methods: tuple[str, ...] | list[str]) -> dict[str, dict]:
    """Per method, the parameters given (``values``: option keyword by flag, None when not given).

    Raises
    ------
    ValueError
        When the values do not make a valid configuration of a method (the config class says why).
    """
    out: dict[str, dict] = {name: {} for name in methods}
    for option in OPTIONS:
        value = values.get(option.flag)
        if value is None:
            continue
        for name in option.methods:
            if name in out:
                out[name][option.keyword] = list(value) if option.many else value
    for name, parameters in out.items():
        if TABLE[name].config:
            build_config(name, parameters)  # raises on bad values, before any work starts
    return out


def build_config(name: str, parameters: dict) -> Any:
    """The method's config object from its parameters (lists become tuples)."""
    config = resolve(TABLE[name].config)
    return config(**{key: tuple(value) if isinstance(value, list) else value for key, value in parameters.items()})
