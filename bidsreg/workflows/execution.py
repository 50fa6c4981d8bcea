"""Running a workflow: on one machine with workers that die with the run, or on a SLURM cluster
with each node's own batch options from its estimates.

Nipype's MultiProc forks its workers from the calling process (they freeze in torch when its
thread pool already ran) and leaves them running when that process is killed. :class:`MultiProc`
starts them from a forkserver instead, each ends itself once the run's process has ended, and
:meth:`MultiProc.stop` kills them on an interruption.

Nipype's SLURM plugins (``SLURM``: a job per node as it becomes ready; ``SLURMGraph``: the whole
graph submitted at once with job dependencies) pass the same ``sbatch_args`` to every job and
do not turn a node's ``mem_gb`` and ``n_procs`` into batch options themselves. Here every node
gets ``--mem`` and ``--cpus-per-task`` from its own estimates (the registration nodes' come from
the method table), unless the run's ``sbatch_args`` already choose them: the user's choice wins.
The nodes that only file outputs or gather reports run inside the submitting process instead
of as jobs of their own (with ``SLURM``; ``SLURMGraph`` submits every node).
"""
from __future__ import annotations

import getpass
import math
import multiprocessing
import os
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from nipype import config as nipype_config
from nipype.interfaces.utility import IdentityInterface, Merge
from nipype.pipeline import engine as pe
from nipype.pipeline.plugins.multiproc import MultiProcPlugin, process_initializer

from ..atomic import process_running
from ..interfaces.derivatives import DerivativesSink

__all__ = ["SLURM_PLUGINS", "MIN_JOB_GB", "MultiProc", "node_sbatch_args", "prepare_slurm"]

#: The Nipype plugins that submit jobs with sbatch.
SLURM_PLUGINS = ("SLURM", "SLURMGraph")
#: Memory of any job (GB), for the nodes whose own estimate (Nipype's default 0.2 GB) is below
#: it: warping a 1 mm brain through a deformable transform peaks at 1.2 GB, the whole process
#: (OASIS-TRT-20 sub-10 to sub-09; the Jacobian 0.95 GB, the overlaps 0.35 GB).
MIN_JOB_GB = 2.0
#: Nipype's log levels, as the run set them, for its workers too.
_LOG_LEVELS = ("workflow_level", "interface_level", "utils_level")
#: Nodes too light for a job of their own: they copy files or gather lists.
_IN_PROCESS = (DerivativesSink, Merge)
_MEMORY = re.compile(r"(^|\s)--mem(-per-cpu|-per-gpu)?[=\s]")
_CPUS = re.compile(r"(^|\s)(--cpus-per-task[=\s]|-c\s*\d)")


def _start_worker(cwd: str, run: int, logging_levels: dict[str, str]) -> None:
    """Nipype's worker set-up with the run's Nipype log levels (a worker from a forkserver
    starts with Nipype's defaults, which log every step), and a watch that ends the worker once
    the run's process ``run`` has ended (killed: no one else would; the forkserver lives as
    long as its workers)."""
    from nipype import config, logging

    process_initializer(cwd)
    config.update_config({"logging": logging_levels})
    logging.update_logging(config)
    threading.Thread(target=_end_with, args=(run,), name="bidsreg-end-with-run", daemon=True).start()


def _end_with(run: int, every: float = 1.0) -> None:
    while process_running(run):
        time.sleep(every)
    os._exit(1)


class MultiProc(MultiProcPlugin):
    """Nipype's MultiProc plugin whose workers start from a forkserver (``plugin_args``
    ``mp_context`` chooses another start method) and end with the run."""

    def __init__(self, plugin_args: dict | None = None) -> None:
        super().__init__(plugin_args=plugin_args)
        self.pool.shutdown(wait=False)  # Nipype's pool: its workers start on the first job, none yet
        context = multiprocessing.get_context(self.plugin_args.get("mp_context", "forkserver"))
        levels = {key: nipype_config.get("logging", key) for key in _LOG_LEVELS}
        self.pool = ProcessPoolExecutor(max_workers=self.processors, initializer=_start_worker,
                                        initargs=(self._cwd, os.getpid(), levels), mp_context=context)

    def stop(self) -> None:
        """Kill the workers (the steps they ran are redone by the next run) and drop the queue."""
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            process.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)


def node_sbatch_args(mem_gb: float, n_procs: int, sbatch_args: str = "") -> str:
    """The sbatch options of one job: ``--mem`` (MB, at least :data:`MIN_JOB_GB`) and
    ``--cpus-per-task`` from the node's estimates, each left out where ``sbatch_args`` (the
    run's options, given to every job) already sets it.

    >>> node_sbatch_args(2.5, 4)
    '--mem=2560M --cpus-per-task=4'
    >>> node_sbatch_args(0.2, 1, "--time=1:00:00 --mem=16G")
    '--cpus-per-task=1'
    """
    if mem_gb <= 0 or n_procs < 1:
        raise ValueError(f"a job needs memory > 0 and at least one CPU (got {mem_gb} GB, {n_procs} CPUs)")
    options = []
    if not _MEMORY.search(sbatch_args):
        options.append(f"--mem={math.ceil(max(mem_gb, MIN_JOB_GB) * 1024)}M")
    if not _CPUS.search(sbatch_args):
        options.append(f"--cpus-per-task={int(n_procs)}")
    return " ".join(options)


def prepare_slurm(workflow: pe.Workflow, plugin: str, plugin_args: dict) -> int:
    """Set every node's ``plugin_args`` for a run of ``workflow`` with a SLURM ``plugin``.

    Also sets ``LOGNAME`` where it is unset (the plugin names jobs after it; batch
    environments and containers often lack it). Returns the number of nodes that will be
    submitted as jobs.
    """
    if plugin not in SLURM_PLUGINS:
        raise ValueError(f"{plugin}: not a SLURM plugin ({', '.join(SLURM_PLUGINS)})")
    os.environ.setdefault("LOGNAME", getpass.getuser())
    sbatch_args = str(plugin_args.get("sbatch_args", ""))
    jobs = 0
    for name in workflow.list_node_names():
        node = workflow.get_node(name)
        if isinstance(node.interface, IdentityInterface):  # Nipype takes them out of the graph it runs
            continue
        if plugin == "SLURM" and isinstance(node.interface, _IN_PROCESS):
            node.run_without_submitting = True
            continue
        options = node_sbatch_args(node.mem_gb, node.n_procs, sbatch_args)
        if options:  # appended to the run's sbatch_args (SLURMGraph joins them with no space)
            node.plugin_args = {**node.plugin_args, "sbatch_args": " " + options}
        jobs += 1
    return jobs
