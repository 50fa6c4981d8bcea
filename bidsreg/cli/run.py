"""``bidsreg bids_dir output_dir {train,participant,group}``: the BIDS-App entry point.

Every input is checked before any work starts (:mod:`bidsreg.cli.inputs`); a bad one ends the
run with a one-line error naming the file and the fix, and the BIDS-Apps exit code
(:mod:`bidsreg.exit_codes`). Outputs are written atomically, and Nipype's working directory
caches finished steps, so a rerun after an interruption redoes only what was not finished.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

from .. import exit_codes
from ..atomic import atomic_output, remove_stale_temporaries
from ..config import Config, write_config
from ..errors import InputError, MissingInputError, NoFilesSelectedError, OutputError, write_failure
from ..provenance import generated_by
from .parser import parse_args

__all__ = ["main"]

LOGGER = logging.getLogger("bidsreg")
#: Entries of the derivatives dataset's .bidsignore: what is not BIDS in it.
BIDSIGNORE = ("/work", "/models", "/group", "/logs", "/.staging", "*_xfm.h5", "*_xfm.json", "*_overlap.tsv", "*_overlap.json",
              "*_jacobian.nii.gz", "*_jacobian.json")

_FORMAT = "%(asctime)s bidsreg %(levelname)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not when it was made)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(verbose: int) -> None:
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # no network check of the Nipype version
    from nipype import config, logging as nipype_logging

    level = logging.DEBUG if verbose > 1 else logging.INFO
    if not LOGGER.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    LOGGER.setLevel(level)
    nipype_level = "INFO" if verbose else "WARNING"
    config.update_config({"logging": {"workflow_level": nipype_level, "interface_level": nipype_level,
                                      "utils_level": "WARNING"}, "execution": {"check_version": False}})
    nipype_logging.update_logging(config)


def _prepare_output(config: Config) -> None:
    """Create the derivatives dataset (dataset_description.json, .bidsignore) and store the
    run's configuration in it, atomically."""
    output_dir = config.output_dir
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for path in remove_stale_temporaries(output_dir, skip=(config.work,)):
            LOGGER.info("removed %s, a partial file of a run that was killed", path)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".bidsreg-write-test-"):
            pass
        description = {
            "Name": "bidsreg registrations",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [generated_by()],
            "SourceDatasets": [{"URL": config.bids_dir.as_uri()}],
        }
        with atomic_output(output_dir / "dataset_description.json") as tmp:
            tmp.write_text(json.dumps(description, indent=2) + "\n")
        with atomic_output(output_dir / ".bidsignore") as tmp:
            tmp.write_text("\n".join(BIDSIGNORE) + "\n")
        _log_to_file(write_config(config))
    except OSError as error:
        raise OutputError(f"{output_dir}: cannot create or write the output folder ({error.strerror}); "
                          "choose a writable output_dir") from None


def _log_to_file(config_path: Path) -> None:
    """From now on, also write the log beside the run's stored configuration
    (``logs/config_<level>_<stamp>_<pid>.json`` -> ``logs/log_<level>_<stamp>_<pid>.txt``)."""
    handler = logging.FileHandler(config_path.with_name(config_path.stem.replace("config_", "log_", 1) + ".txt"),
                                  encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    LOGGER.addHandler(handler)


def _close_log_files() -> None:
    for handler in [h for h in LOGGER.handlers if isinstance(h, logging.FileHandler)]:
        LOGGER.removeHandler(handler)
        handler.close()


def run_train(config: Config) -> int:
    """Train the selected networks (``--methods``: cnn, voxelmorph) on the selected subjects' T1w
    images; write each model and its card in output_dir/models."""
    import torch

    from ..bids.layout import collect_t1w, select_subjects
    from ..methods.model_card import write_model_card
    from ..methods.table import TABLE
    from ..methods.training import train_model
    from ..nn.train import TrainConfig
    from .inputs import check_image, layouts, read_checkpoint

    by_checkpoint: dict[str, str] = {}  # cnn and cnnio run one checkpoint: it is trained once
    for name in config.methods:
        if TABLE[name].network is not None:
            by_checkpoint.setdefault(TABLE[name].network.checkpoint, name)
    networks = list(by_checkpoint.values())
    if not networks:
        trainable = " and/or ".join(name for name, method in TABLE.items() if method.network)
        raise InputError(f"the train level trains the networks; --methods {','.join(config.methods)} names none: "
                         f"choose {trainable}")
    found = layouts(config)
    subjects = select_subjects(found.dataset, list(config.participant_label))
    sessions = list(config.session_label) or None
    images = [item.path for s in subjects
              for item in collect_t1w(found.dataset, s, sessions=sessions, filters=found.filters)]
    if len(images) < 2:
        raise NoFilesSelectedError(f"{config.bids_dir}: training needs at least two T1w images, the selection has "
                                   f"{len(images)}; select more subjects (--participant-label)")
    for path in images:
        check_image(path)
    initial = None
    if config.initial_weights is not None:
        one_stage = [name for name in networks if not TABLE[name].network.global_stage]
        if one_stage:
            raise InputError(f"--initial-weights {config.initial_weights}: starts the two-stage network (cnn, cnnio) "
                             f"only; train {', '.join(one_stage)} in a call without it")
        initial = read_checkpoint(config.initial_weights, "; give a checkpoint that bidsreg wrote, or default")
    _prepare_output(config)
    torch.set_num_threads(max(config.nprocs, config.omp_nthreads))
    for name in networks:
        network = TABLE[name].network
        checkpoint = config.output_dir / "models" / f"{network.checkpoint}.pt"
        train_config = TrainConfig(affine_steps=config.affine_steps if network.global_stage else 0,
                                   deformable_steps=config.deformable_steps, seed=config.seed,
                                   global_stage=network.global_stage, diffeomorphic=network.diffeomorphic)
        LOGGER.info("training %s on %d T1w image(s) of %d subject(s): %d + %d steps from %s -> %s", name,
                    len(images), len(subjects), train_config.affine_steps, train_config.deformable_steps,
                    config.initial_weights or "random weights", checkpoint)
        finished_before = checkpoint.is_file() and bool(
            read_checkpoint(checkpoint, "; delete it or choose another output_dir")["training"].get("complete")
        )
        try:
            interactive = sys.stderr.isatty()  # a progress bar on a terminal, a line every 100 steps in a job's log
            payload = train_model(images, checkpoint, train_config, device=config.device, progress=interactive,
                                  log_every=0 if interactive else 100, initial=initial)
        except ValueError as error:
            raise InputError(str(error)) from None
        card = write_model_card(checkpoint, payload, config.bids_dir, subjects)
        if finished_before:
            LOGGER.info("%s already holds this finished training (same configuration and images, %.0f s); kept it "
                        "(delete it to train again). Card: %s", checkpoint, payload["training"]["seconds"], card)
        else:
            LOGGER.info("model written: %s (card %s)", checkpoint, card)
    return exit_codes.OK


class _Progress:
    """Nipype status callback: a line per subject and method as its registration ends (counted
    against all of the run's registrations, and saying when the work folder's cache had it
    from an earlier run) and as its overlaps are filed.

    Parameters
    ----------
    subjects : dict
        The name of each subject's workflow -> how the lines name it (``sub-10_ses-a``).
    registrations : int
        How many registrations (method stages times subjects) the run has.
    """

    def __init__(self, subjects: dict[str, str], registrations: int) -> None:
        self.subjects = subjects
        self.registrations = registrations
        self.done = 0
        self.started = time.time()

    def __call__(self, node, status: str) -> None:
        from ..interfaces.derivatives import DerivativesSink
        from ..interfaces.registration import Registration

        registration = isinstance(node.interface, Registration)
        overlap = isinstance(node.interface, DerivativesSink) and node.inputs.suffix == "overlap"
        if status != "end" or not (registration or overlap):
            return
        workflow = node.fullname.split(".")[1]  # bidsreg_wf.<the subject's workflow>.(...)
        who = self.subjects.get(workflow, workflow)
        try:
            outputs = node.result.outputs
            if registration:
                self.done += 1
                path = Path(outputs.report)
                report = json.loads(path.read_text())
                how = (f"registered in {report['seconds']:.1f} s" if path.stat().st_mtime >= self.started else
                       f"registered by an earlier run ({report['seconds']:.1f} s), kept from the work folder")
                LOGGER.info("%s %s: %s (%d of %d registrations)", who, report["method"], how, self.done,
                            self.registrations)
            else:
                import pandas as pd

                dice = pd.read_csv(outputs.out_file, sep="\t", na_values="n/a")["dice"].mean()
                LOGGER.info("%s %s: mean Dice %.3f (seg-%s) -> %s", who, node.inputs.entities["desc"], dice,
                            node.inputs.entities.get("segmentation"), Path(outputs.out_file).name)
        except (OSError, ValueError, KeyError, AttributeError, IndexError):  # progress must never break a run
            LOGGER.info("%s %s: done", who, node.name)


class _Interrupted(BaseException):
    """SIGTERM or SIGINT during a run (a BaseException, like KeyboardInterrupt: no ``except
    Exception`` of the engine swallows it)."""

    def __init__(self, number: int) -> None:
        super().__init__(signal.Signals(number).name)
        self.signal = number


@contextlib.contextmanager
def _interruptible(plugin, config: Config) -> Iterator[None]:
    """Turn SIGTERM and SIGINT (a cluster's time limit, scancel, Ctrl-C) into a stop that kills
    the workers and says how to resume."""

    def handler(number: int, frame) -> None:
        raise _Interrupted(number)

    if threading.current_thread() is not threading.main_thread():  # only the main thread receives signals
        yield
        return
    previous = {number: signal.signal(number, handler) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except _Interrupted as stop:
        if hasattr(plugin, "stop"):
            plugin.stop()
        LOGGER.error("stopped by %s: the finished steps are kept in %s; run the same command again to resume "
                     "(only the unfinished steps run)", stop, config.work)
        raise
    finally:
        for number, handling in previous.items():
            signal.signal(number, handling)


def run_participant(config: Config) -> int:
    """Register each selected subject to the fixed image with each method (a Nipype workflow)."""
    from nipype.pipeline import engine as pe

    from ..group.collect import collect
    from ..group.requests import write_requests
    from ..methods.table import TABLE, stage_names
    from ..workflows.execution import SLURM_PLUGINS, MultiProc, prepare_slurm
    from ..workflows.participant import init_participant_wf, workflow_name
    from .inputs import fixed_and_subjects, layouts, resolve_networks, subject_inputs

    if config.fixed is None:
        raise MissingInputError("participant needs the fixed image: --fixed sub-XX (a subject of the dataset) or "
                                "--fixed PATH")
    found = layouts(config)
    fixed, subjects = fixed_and_subjects(config, found)
    config = resolve_networks(config)  # before reading every image: a missing model or program says so first
    inputs = subject_inputs(config, found, subjects)
    _prepare_output(config)
    reported = stage_names(config.methods)
    write_requests(config.output_dir, [item.entities for item in inputs], reported,
                   [fixed.labels is not None and item.labels is not None for item in inputs])

    methods = {name: config.method_configs[name] for name in config.methods}
    workflow = pe.Workflow(name="bidsreg_wf", base_dir=str(config.work))
    workflow.config["execution"].update({
        "crashdump_dir": str(config.work / "crash"), "crashfile_format": "txt",
        "stop_on_first_crash": config.stop_on_first_crash, "poll_sleep_duration": 0.2,
    })
    names = {}
    for item in inputs:
        name = workflow_name(item.entities)
        names[name] = "_".join(f"{key[:3]}-{item.entities[key]}" for key in ("subject", "session", "run")
                               if item.entities.get(key) is not None)
        workflow.add_nodes([init_participant_wf(t1w=item, fixed=fixed, methods=methods, context=config.context,
                                                output_dir=config.output_dir, output_resolution=config.output_resolution,
                                                seg=config.seg, name=name)])
    registrations = len(inputs) * sum(len(TABLE[name].stages) for name in config.methods)
    plugin_args = {"status_callback": _Progress(names, registrations), **config.plugin_args}
    plugin = config.plugin
    if config.plugin == "MultiProc":
        plugin_args.setdefault("n_procs", config.nprocs)
        if config.mem_gb:
            plugin_args.setdefault("memory_gb", config.mem_gb)
        plugin = MultiProc(plugin_args)  # workers from a forkserver, ending with the run
    jobs = ""
    if config.plugin in SLURM_PLUGINS:
        jobs = f", {prepare_slurm(workflow, config.plugin, plugin_args)} sbatch jobs"
    LOGGER.info("registering %d image(s) to %s with %s (%s plugin%s)", len(inputs), fixed.source,
                ", ".join(config.methods), config.plugin, jobs)
    try:
        with _interruptible(plugin, config):
            workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as error:
        failed = write_failure(f"{error}\n{error.__cause__ or ''}")
        if failed is not None:  # a full disk, a quota, an unwritable folder: the user's to fix
            LOGGER.error("%s", failed[1])
            return failed[0]
        LOGGER.error("%s; crash reports in %s; rerun the same command to resume", error, config.work / "crash")
        return exit_codes.FAILURE
    except _Interrupted as stop:
        return 128 + stop.signal
    if config.plugin == "SLURMGraph":  # the plugin submits the whole graph and returns at once
        LOGGER.info("submitted to SLURM with job dependencies; the outputs appear in %s as the jobs end (squeue --me); "
                    "after a failure, the same command resumes; once all ended: 'bidsreg %s %s group'",
                    config.output_dir, config.bids_dir, config.output_dir)
        return exit_codes.OK
    table, _ = collect(config.output_dir)
    chosen = table[table["subject"].isin(subjects)]
    if not chosen.empty:
        LOGGER.info("summary (this run's subjects; 'bidsreg ... group' writes the full report):\n%s", chosen[
            ["subject", "session", "run", "method", "dice", "seconds"]].dropna(axis=1, how="all").to_string(index=False))
    return exit_codes.OK


def run_group_level(config: Config) -> int:
    """Gather the participant outputs into tables and ``group/report.html``; log the rounded
    comparison of the methods."""
    import pandas as pd

    from ..group.report import run_group

    report = run_group(config.output_dir, allow_missing=config.allow_missing)
    try:
        _log_to_file(write_config(config))
    except OSError as error:
        raise OutputError(f"{config.output_dir / 'logs'}: cannot write the run's configuration ({error.strerror}); "
                          "make the output folder writable") from None
    methods = pd.read_csv(report.parent / "methods.tsv", sep="\t", na_values="n/a")
    columns = [c for c in ("seg", "method", "n", "dice_mean", "dice_sd", "hd95_mean", "folding_percent_mean",
                           "seconds_mean", "peak_memory_mb_mean") if c in methods]
    LOGGER.info("methods compared (group/methods.tsv, rounded):\n%s",
                methods[columns].dropna(axis=1, how="all").round(3).to_string(index=False))
    print(f"report: {report.resolve()}")
    return exit_codes.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run bidsreg; returns the BIDS-Apps exit code."""
    config = parse_args(argv)
    _setup_logging(config.verbose)
    level = {"train": run_train, "participant": run_participant, "group": run_group_level}[config.analysis_level]
    try:
        return level(config)
    except (InputError, OutputError) as error:
        LOGGER.error("%s", error)
        return error.exit_code
    finally:
        _close_log_files()


def console() -> None:
    """The ``bidsreg`` console script."""
    sys.exit(main())
