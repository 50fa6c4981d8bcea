"""The configuration of one bidsreg run: built once by the command line, then passed down.

:class:`Config` is frozen; the levels, the workflow factories and the interfaces read what they
need from it (or from what it hands them: :attr:`Config.context`, :attr:`Config.method_configs`),
and :func:`write_config` stores it in the derivatives (``logs/``) beside what the run wrote.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .atomic import atomic_output
from .methods.base import Context, config_parameters
from .nn.train import TrainConfig

__all__ = ["Config", "MAX_DEFAULT_THREADS", "OUTPUT_RESOLUTIONS", "usable_cpus", "write_config"]

#: The most threads a registration gets by default (torch and ANTs gain little beyond, and the
#: rest of the CPUs run other subjects side by side).
MAX_DEFAULT_THREADS = 8
#: Grids the deformable transforms may be written on (``--output-resolution``).
OUTPUT_RESOLUTIONS = ("compact", "full")


def usable_cpus(environ: Mapping[str, str] = os.environ) -> int:
    """The CPUs this process may use: those of its CPU affinity (what ``taskset``, a cgroup's
    cpuset or SLURM's task binding leave it; all of the machine's where the system has no
    affinity), and at most ``SLURM_CPUS_PER_TASK`` inside a SLURM job."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    return max(cpus, 1)


@dataclass(frozen=True)
class Config:
    """Everything a run of ``bidsreg bids_dir output_dir level`` is asked to do.

    Attributes
    ----------
    bids_dir, output_dir : Path
        The input dataset and the derivatives dataset (absolute).
    analysis_level : str
        ``train``, ``participant`` or ``group``.
    participant_label, session_label : tuple of str
        Subjects and sessions to process, without ``sub-``/``ses-`` (empty: all).
    bids_filter_file : Path or None
        A PyBIDS filter JSON.
    skip_bids_validation : bool
    fixed : str or None
        ``sub-XX`` (a subject of the dataset) or the path of a NIfTI image.
    fixed_labels : Path or None
        The label map of a ``fixed`` path.
    labels : Path or None
        Derivatives dataset of label maps (``_dseg``), with ``labels_desc`` their ``desc``.
    labels_desc : str or None
    masks : Path or None
        Derivatives dataset of brain masks.
    output_resolution : str
        One of :data:`OUTPUT_RESOLUTIONS`: the grid of the deformable transforms written
        (``compact``: each method's own, see :attr:`bidsreg.methods.table.Method.field_spacing`;
        ``full``: the fixed image's).
    methods : tuple of str
        Names of :data:`bidsreg.methods.table.TABLE`.
    method_configs : dict
        Per method, its configuration (the networks' ``model`` filled in at the participant
        level).
    affine_steps, deformable_steps : int
        Training steps of the networks' two stages.
    initial_weights : Path or None
        Checkpoint whose weights the two-stage network's training starts from (None: random).
    work_dir : Path or None
        Nipype's working directory (default: :attr:`work`).
    nprocs : int
        CPU cores of the run (default: :func:`usable_cpus`).
    omp_nthreads : int or None
        Threads of each registration (None, the default: ``nprocs``, at most
        :data:`MAX_DEFAULT_THREADS`).
    mem_gb : float or None
        Memory MultiProc may use.
    plugin : str
    plugin_args : dict
    stop_on_first_crash : bool
    allow_missing : bool
        Group level: report the results that are there when some requested ones are missing.
    device : str
        torch device of the networks.
    seed : int
    verbose : int
    recipe : Path or None
        The TOML recipe the options came from.
    """

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    participant_label: tuple[str, ...] = ()
    session_label: tuple[str, ...] = ()
    bids_filter_file: Path | None = None
    skip_bids_validation: bool = False
    fixed: str | None = None
    fixed_labels: Path | None = None
    labels: Path | None = None
    labels_desc: str | None = None
    masks: Path | None = None
    output_resolution: str = "compact"
    methods: tuple[str, ...] = ("cnn",)
    method_configs: dict[str, Any] = field(default_factory=dict)
    affine_steps: int = TrainConfig.affine_steps
    deformable_steps: int = TrainConfig.deformable_steps
    initial_weights: Path | None = None
    work_dir: Path | None = None
    nprocs: int = field(default_factory=usable_cpus)
    omp_nthreads: int | None = None
    mem_gb: float | None = None
    plugin: str = "MultiProc"
    plugin_args: dict[str, Any] = field(default_factory=dict)
    stop_on_first_crash: bool = False
    allow_missing: bool = False
    device: str = "auto"
    seed: int = 0
    verbose: int = 0
    recipe: Path | None = None

    def __post_init__(self) -> None:
        if self.output_resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(f"output_resolution must be one of {', '.join(OUTPUT_RESOLUTIONS)}, "
                             f"got {self.output_resolution!r}")
        if self.omp_nthreads is None:
            object.__setattr__(self, "omp_nthreads", min(self.nprocs, MAX_DEFAULT_THREADS))

    @property
    def context(self) -> Context:
        """How each registration runs: the seed, ``omp_nthreads`` threads, the device."""
        return Context(seed=self.seed, threads=self.omp_nthreads, device=self.device)

    @property
    def work(self) -> Path:
        """The working directory: ``work_dir``, else ``output_dir/work``."""
        return self.work_dir or self.output_dir / "work"

    @property
    def seg(self) -> str:
        """The ``seg-`` label of label maps and overlap tables."""
        return self.labels_desc or "labels"

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, tuples as lists, each method configuration as its parameters."""
        out = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "method_configs":
                value = {name: config_parameters(config) for name, config in value.items()}
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[item.name] = value
        return out


def write_config(config: Config) -> Path:
    """Store ``config`` in ``output_dir/logs/config_<level>_<date>T<time>_<pid>.json`` (one file per run)."""
    folder = config.output_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = folder / f"config_{config.analysis_level}_{stamp}_{os.getpid()}.json"
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return path
