"""The registration methods of bidsreg: one table, one row per method.

Every method turns a (fixed, moving) pair of NIfTI files into a
:class:`~bidsreg.methods.base.RegistrationResult`, so that the participant workflow, the metrics,
the derivatives and the group report serve each one with no special case. A row holds the
method's registration function and configuration class (whose :func:`~bidsreg.methods.base.option`
fields are its command-line options), how much memory one registration of a 1 mm brain takes,
whether it is deformable (a Jacobian to measure), what it needs (a trained network, a program)
and how the report's methods text describes it.

Adding a method: a module with a configuration class and a ``register(fixed, moving, config,
context)`` function (:mod:`bidsreg.methods.base`), and a row in :data:`TABLE`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import DEFAULT_MODEL
from . import ants, bspline, cnn, demons, voxelmorph
from .base import build_config

__all__ = ["TABLE", "Method", "Network", "Option", "Stage", "all_methods", "deformable", "method_configs", "method_names",
           "options", "reported_names", "stage_names"]


@dataclass(frozen=True)
class Stage:
    """A first stage of a method, run before it and reported as a method of its own.

    Attributes
    ----------
    name : str
        Its reported name (``desc-`` entity), e.g. ``cnnaffine``.
    register : callable
        ``register(fixed, moving, config, context)`` with the method's configuration.
    deformable : bool
        Its transform has a displacement field.
    """

    name: str
    register: Callable[..., Any]
    deformable: bool = False


@dataclass(frozen=True)
class Network:
    """What a method that runs a trained bidsreg network needs (its configuration's ``model``).

    Attributes
    ----------
    checkpoint : str
        File name (without ``.pt``) of the checkpoint ``train`` writes in ``output_dir/models``.
    global_stage : bool
        Trained with the global network (two-stage) or without (one-stage).
    diffeomorphic : bool
        Its local network is trained to predict a stationary velocity field
        (:attr:`bidsreg.nn.train.TrainConfig.diffeomorphic`).
    shipped : Path or None
        The default weights used when none is given or trained.
    """

    checkpoint: str
    global_stage: bool
    diffeomorphic: bool = True
    shipped: Path | None = None


@dataclass(frozen=True)
class Method:
    """One registration method.

    Attributes
    ----------
    name : str
        The ``--methods`` name and the ``desc-`` entity of its derivatives.
    summary : str
        One line for ``--help``.
    register : callable
        ``register(fixed, moving, config, context[, start])`` returning a
        :class:`~bidsreg.methods.base.RegistrationResult`; ``start`` (the result of
        :attr:`start`'s stage) for a method with one.
    config : type
        Frozen dataclass of its parameters.
    deformable : bool
        Its transform has a displacement field.
    memory_gb : float
        Peak memory of one registration of a 1 mm 256x256x160 pair (Nipype's ``mem_gb``, so
        that MultiProc with ``--mem-gb`` starts no more of them than fit).
    start : Stage or None
        A stage it starts from, reported too (the CNN's global stage alone, ``cnnaffine``).
    network : Network or None
        The trained bidsreg network it runs.
    check : callable or None
        Called before any work starts; raises FileNotFoundError (with how to install it) when
        something the method runs is missing.
    context : tuple of str
        The :class:`~bidsreg.methods.base.Context` fields it reads: only those reach its
        workflow nodes, so that changing another (``--device`` for ANTs) does not rerun it.
    text : str
        Its sentence in the report's methods paragraph; ``{name}``, ``{version}``,
        ``{parameters}``, ``{kind}`` and ``{model}`` are filled from its sidecars.
    in_all : bool
        ``--methods all`` runs it (False for a method that takes far longer than the others:
        it runs only when named).
    field_spacing : float or None
        Spacing (mm) of the grid its fields are written on with ``--output-resolution compact``
        (a grid of cubic voxels covering the fixed image), chosen where the warped labels stay
        99 % identical to those of the fixed grid's field (``benchmarks/compact_transforms.py``);
        None: the grid it computes them on (the CNN's 2 mm network grid, the fixed grid for the
        classical methods, which no coarser grid of that benchmark kept at 99 %).
    """

    name: str
    summary: str
    register: Callable[..., Any]
    config: type
    deformable: bool
    memory_gb: float
    start: Stage | None = None
    network: Network | None = None
    check: Callable[[], Any] | None = None
    context: tuple[str, ...] = ("seed", "threads")
    text: str = ""
    in_all: bool = True
    field_spacing: float | None = None

    @property
    def stages(self) -> tuple[Stage, ...]:
        """What runs, in order: its start stage (if any), then itself."""
        return (*(() if self.start is None else (self.start,)), Stage(self.name, self.register, self.deformable))


@dataclass(frozen=True)
class Option:
    """A command-line option (and recipe key) setting one parameter of some methods.

    Attributes
    ----------
    flag : str
        The long option, e.g. ``--demons-iterations``.
    keyword : str
        The configuration field it sets.
    methods : tuple of str
        The methods whose configuration has it.
    help : str
    type : type
        Of one word: ``int``, ``float`` or ``Path``.
    many : bool
        Takes one value per resolution level (a tuple).
    default : object
        The configuration's default (None: the method chooses, its help says how).
    """

    flag: str
    keyword: str
    methods: tuple[str, ...]
    help: str
    type: type = int
    many: bool = True
    default: Any = None


_CNN_TEXT = (
    "The CNN method is two-stage and unsupervised: a global network predicts an affine map trained to maximise the "
    "squared global normalised cross-correlation, applied in both directions and averaged (log-Euclidean) so that it "
    "is inverse-consistent; then a U-Net predicts a {field} trained on local NCC over 9×9×9 windows with "
    "a diffusion regulariser (model {model}). Its global stage alone is reported as cnnaffine."
)
#: What a network's registration reads of the run's context (its inference draws nothing at random).
_NETWORK_CONTEXT = ("threads", "device")
_ANTS_TEXT = "The {name} baseline is antspyx {version} registration with type_of_transform='{kind}' ({parameters})."
_ANTS_SCRIPT_TEXT = ("The {name} baseline is antspyx {version} registration with type_of_transform='{kind}', its "
                     "recreation of the ANTs script of that name: rigid, affine, then SyN, coarse to fine "
                     "({parameters}).")
#: The two-stage network of cnn and cnnio (one checkpoint, trained once for both).
_TWO_STAGE = Network("bidsreg_model", global_stage=True, shipped=DEFAULT_MODEL)

#: The methods, in the order of the original comparison.
TABLE: dict[str, Method] = {method.name: method for method in (
    Method("cnn", "the two-stage CNN (global affine network, then U-Net velocity field)", cnn.register_local,
           cnn.CNNConfig, True, 2.5, start=Stage("cnnaffine", cnn.register_global), network=_TWO_STAGE,
           context=_NETWORK_CONTEXT,
           text=_CNN_TEXT),
    Method("cnnio", "the two-stage CNN, then instance optimisation of its field for each pair (accurate mode)",
           cnn.register_optimised, cnn.CNNIOConfig, True, 2.5, network=_TWO_STAGE, context=_NETWORK_CONTEXT,
           text="The cnnio method starts from the same network (model {model}) and refines its result for each "
                "pair by instance optimisation: Adam on a stationary velocity field (integrated by scaling and "
                "squaring, so the map is diffeomorphic and its inverse exact), coarse to fine, on the local NCC with "
                "a diffusion regulariser and the parameters smoothed by 3×3×3 averaging, after affine_steps Adam "
                "steps on the 12 affine parameters ({parameters})."),
    Method("antsaffine", "antspyx Affine", ants.register_affine, ants.AffineConfig, False, 1.8, text=_ANTS_TEXT),
    Method("bspline", "antspyx Affine, then an elastix B-spline free-form deformation", bspline.register,
           bspline.BSplineConfig, True, 2.0, check=bspline.find_elastix,
           text="The bspline baseline refines the antsaffine result with a free-form deformation on a cubic B-spline "
                "grid (elastix {version}; normalised correlation on random samples, adaptive stochastic gradient "
                "descent, coarse to fine; {parameters})."),
    Method("demons", "antspyx Affine, then SimpleITK fast symmetric forces Demons", demons.register, demons.DemonsConfig,
           True, 2.5,
           text="The demons baseline refines the antsaffine result with SimpleITK {version} "
                "FastSymmetricForcesDemonsRegistrationFilter on the histogram-matched moving image, coarse to fine "
                "with Gaussian smoothing of the field ({parameters})."),
    Method("antssyn", "antspyx SyN (affine, then symmetric normalisation)", ants.register_syn, ants.SyNConfig, True, 2.5,
           text=_ANTS_TEXT),
    Method("antssynquick", "antspyx antsRegistrationSyNQuick[s] (the ANTs quick script: rigid, affine, SyN on MI)",
           ants.register_syn_quick, ants.ScriptConfig, True, 2.5, text=_ANTS_SCRIPT_TEXT),
    Method("antssynfull", "antspyx antsRegistrationSyN[s] (the full ANTs script, about 40 min a 1 mm pair on 2 "
           "cores; not in 'all')", ants.register_syn_full, ants.ScriptConfig, True, 4.0, text=_ANTS_SCRIPT_TEXT,
           in_all=False),
    Method("voxelmorph", "one-stage VoxelMorph: the U-Net alone, trained on pairs not aligned by an affine network",
           voxelmorph.register, voxelmorph.VoxelMorphConfig, True, 2.5,
           network=Network("bidsreg_voxelmorph", global_stage=False, diffeomorphic=False), context=_NETWORK_CONTEXT,
           text="The voxelmorph method is the one-stage variant of the original comparison: the same U-Net and "
                "loss, predicting a {field}, trained alone on pairs aligned only by their centres of mass, and "
                "applied from that alignment (model {model})."),
)}


def method_names() -> tuple[str, ...]:
    """The ``--methods`` names, in the table's order."""
    return tuple(TABLE)


def all_methods() -> tuple[str, ...]:
    """The methods that ``--methods all`` runs, in the table's order."""
    return tuple(name for name, method in TABLE.items() if method.in_all)


def reported_names() -> tuple[str, ...]:
    """Every reported method name in the order of the tables: the starting point (``original``),
    then each method's stages (``cnnaffine`` before ``cnn``)."""
    return ("original", *(stage.name for method in TABLE.values() for stage in method.stages))


def stage_names(methods: Iterable[str]) -> list[str]:
    """The reported names of ``methods`` (names of :data:`TABLE`): each method's stages, in
    order, each name once (``cnn`` and ``cnnio`` share ``cnnaffine``)."""
    return list(dict.fromkeys(stage.name for method in methods for stage in TABLE[method].stages))


def deformable(name: str) -> bool:
    """Whether the method (or stage) reported as ``name`` has a displacement field."""
    return any(stage.name == name and stage.deformable for method in TABLE.values() for stage in method.stages)


def options() -> tuple[Option, ...]:
    """The options of every method's configuration, a flag shared by several methods once."""
    found: dict[str, Option] = {}
    for method in TABLE.values():
        hints = typing.get_type_hints(method.config)
        for item in dataclasses.fields(method.config):
            flag = item.metadata.get("flag")
            if flag is None:
                continue
            if flag in found:
                found[flag] = dataclasses.replace(found[flag], methods=found[flag].methods + (method.name,))
                continue
            word, many = _word_type(hints[item.name], f"{method.config.__name__}.{item.name}")
            found[flag] = Option(flag, item.name, (method.name,), item.metadata["help"], word, many, item.default)
    return tuple(found.values())


def method_configs(values: dict[str, Any], methods: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Per method, its configuration from the options given (``values``: value by flag, None when
    not given; fields not given keep their defaults).

    Raises
    ------
    ValueError
        For an unknown method, or values that make no valid configuration of a method (the
        class says why).
    """
    unknown = sorted(set(methods) - set(TABLE))
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(TABLE)}")
    parameters: dict[str, dict] = {name: {} for name in methods}
    for option in options():
        value = values.get(option.flag)
        if value is None:
            continue
        for name in option.methods:
            if name in parameters:
                parameters[name][option.keyword] = value
    return {name: build_config(TABLE[name].config, given) for name, given in parameters.items()}


def _word_type(hint: Any, where: str) -> tuple[type, bool]:
    """(type of one word, takes several) of a field annotation: ``tuple[int, ...]``, ``float``,
    ``Path``, each optionally ``| None``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kept = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = kept[0] if len(kept) == 1 else hint
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    if hint in (int, float, Path):
        return hint, False
    raise TypeError(f"{where}: an option needs a tuple[int, ...], int, float or Path field, not {hint}")
