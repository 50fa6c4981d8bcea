"""What every registration method shares: how it is run, what it returns, how it declares its parameters.

A method is a module with a frozen configuration dataclass and a function::

    register(fixed, moving, config, context) -> RegistrationResult

(a method that starts from another stage's result, as the CNN's local stage starts from its
global one, also takes ``start``, that result). The configuration holds what the method
computes; :class:`Context` how it runs. Fields declared with :func:`option` are also
command-line options and recipe keys (:mod:`bidsreg.methods.table` collects them).
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..transform import Transform

__all__ = ["Context", "RegistrationResult", "build_config", "config_parameters", "option", "using_threads"]


@dataclass(frozen=True)
class Context:
    """How a registration runs (the same for every method of a run).

    Attributes
    ----------
    seed : int
        Random seed (ANTs' and elastix's samplers).
    threads : int
        CPU threads of the registration (ITK, torch).
    device : str
        torch device of the networks: ``auto``, ``cpu`` or ``cuda``.
    """

    seed: int = 0
    threads: int = 1
    device: str = "auto"


@dataclass(frozen=True)
class RegistrationResult:
    """What a method returns.

    Attributes
    ----------
    transform : Transform
        Fixed -> moving, with the inverse field for a deformable method.
    seconds : float
        Wall-clock time of the registration itself (what the user waits for: the CNN's local
        stage counts its global stage too).
    parameters : dict
        What ran (software, versions, settings), JSON-ready, for the sidecars and the report.
    steps : dict
        Seconds of each step, where the method reports them (the CNN: load, preprocess, ...).
    """

    transform: Transform
    seconds: float
    parameters: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)


@contextmanager
def using_threads(count: int) -> Iterator[None]:
    """torch and SimpleITK on ``count`` threads until the block ends, then as they were before (a
    step run in the calling process must not change the thread count of what runs next)."""
    import SimpleITK as sitk
    import torch

    before = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    torch.set_num_threads(count)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before[1])


def option(flag: str, help: str, default: Any = None) -> Any:
    """A configuration field that is also the command-line option ``flag`` (and recipe key).

    The option's type comes from the field's annotation: ``tuple[int, ...]`` takes one value per
    resolution level, ``int``/``float`` one number, ``Path`` a file. Leaving it out keeps
    ``default``.
    """
    return field(default=default, metadata={"flag": flag, "help": help})


def build_config(config_class: type, parameters: dict) -> Any:
    """A method's configuration from its parameters (as :func:`config_parameters` writes them:
    lists become tuples, strings of ``Path`` fields paths).

    Raises
    ------
    ValueError
        When the values make no valid configuration (the class says why).
    """
    hints = typing.get_type_hints(config_class)
    unknown = sorted(set(parameters) - set(hints))
    if unknown:
        raise ValueError(f"{config_class.__name__} has no parameter(s) {', '.join(unknown)}")
    values = {}
    for key, value in parameters.items():
        if isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, str) and Path in (hints[key], *typing.get_args(hints[key])):
            value = Path(value)
        values[key] = value
    return config_class(**values)


def config_parameters(config: Any) -> dict:
    """A configuration as JSON-ready parameters (tuples as lists, paths as strings)."""
    out = {}
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, tuple):
            value = list(value)
        elif hasattr(value, "__fspath__"):
            value = str(value)
        out[key] = value
    return out
