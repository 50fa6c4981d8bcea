"""``bidsreg bids_dir output_dir {train,participant,group}``: the BIDS-App entry point.

Every input is checked before any work starts; a bad one ends the run with a one-line error
naming the file and the fix, and the BIDS-Apps exit code (:mod:`bidsreg.exit_codes`). Outputs
are written atomically, and Nipype's working directory caches finished steps, so a rerun
after an interruption redoes only what was not finished.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from .. import exit_codes
from ..atomic import atomic_output
from ..bids.derivatives import generated_by
from ..errors import InputError, MissingInputError, NoFilesSelectedError, OutputError
from .parser import parse_args

__all__ = ["main"]

LOGGER = logging.getLogger("bidsreg")
#: File names (in output_dir/models) of the checkpoint each network method trains.
MODEL_NAMES = {"cnn": "bidsreg_model", "voxelmorph": "bidsreg_voxelmorph"}
#: Entries of the derivatives dataset's .bidsignore: what is not BIDS in it.
BIDSIGNORE = ("/work", "/models", "/group", "*_xfm.h5", "*_xfm.json", "*_overlap.tsv", "*_overlap.json",
              "*_jacobian.nii.gz", "*_jacobian.json")


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
        handler.setFormatter(logging.Formatter("%(asctime)s bidsreg %(levelname)s: %(message)s", datefmt="%H:%M:%S"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    LOGGER.setLevel(level)
    nipype_level = "INFO" if verbose else "WARNING"
    config.update_config({"logging": {"workflow_level": nipype_level, "interface_level": nipype_level,
                                      "utils_level": "WARNING"}, "execution": {"check_version": False}})
    nipype_logging.update_logging(config)


def _prepare_output(output_dir: Path, bids_dir: Path) -> None:
    """Create the derivatives dataset (dataset_description.json, .bidsignore), atomically."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".bidsreg-write-test-"):
            pass
        description = {
            "Name": "bidsreg registrations",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [generated_by()],
            "SourceDatasets": [{"URL": bids_dir.as_uri()}],
        }
        with atomic_output(output_dir / "dataset_description.json") as tmp:
            tmp.write_text(json.dumps(description, indent=2) + "\n")
        with atomic_output(output_dir / ".bidsignore") as tmp:
            tmp.write_text("\n".join(BIDSIGNORE) + "\n")
    except OSError as error:
        raise OutputError(f"{output_dir}: cannot create or write the output folder ({error.strerror}); "
                          "choose a writable output_dir") from None


def _layouts(args: argparse.Namespace):
    from ..bids.layout import load_layout, read_filters
    from ..bids.validation import validate_dataset

    if not args.skip_bids_validation:
        report = validate_dataset(args.bids_dir)
        if report.warnings:
            LOGGER.warning("BIDS validator: %d warning(s) in %s (run bids-validator-deno for details)",
                           len(report.warnings), args.bids_dir)
    layout = load_layout(args.bids_dir)
    labels = load_layout(args.labels, derivative=True) if args.labels else None
    masks = load_layout(args.masks, derivative=True) if args.masks else None
    return layout, labels, masks, read_filters(args.bids_filter_file)


def _check_image(path: Path, labels: bool = False):
    from ..image import load_volume

    try:
        return load_volume(path, labels=labels)
    except ValueError as error:
        raise InputError(str(error)) from None


def _check_same_grid(image, other, what: str) -> None:
    from ..image import same_grid

    if not same_grid(image, other):
        raise InputError(
            f"{other.path}: this {what} is on another grid ({other.shape}) than its T1w {image.path} ({image.shape}); "
            f"resample it onto the T1w grid or give the {what} made for this image"
        )


def _check_inputs(image_path: Path, labels: Path | None = None, mask: Path | None = None) -> None:
    """Load an image and its label map and mask once, so that a bad one fails before any work starts."""
    image = _check_image(image_path)
    for path, what in ((labels, "label map"), (mask, "brain mask")):
        if path is not None:
            _check_same_grid(image, _check_image(path, labels=True), what)


def _read_checkpoint(path: Path, fix: str = "") -> dict:
    """A bidsreg checkpoint; a file that is not one is bad input (65)."""
    from ..nn.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except ValueError as error:
        raise InputError(f"{error}{fix}") from None


def _is_demo(bids_dir: Path) -> bool:
    """Whether ``bids_dir`` is a dataset written by ``bidsreg-demo-data``."""
    from ..demo.dataset import GENERATOR

    try:
        description = json.loads((bids_dir / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    generated = description.get("GeneratedBy") if isinstance(description, dict) else None
    return isinstance(generated, list) and any(isinstance(g, dict) and g.get("Name") == GENERATOR for g in generated)


def _shipped_model(args: argparse.Namespace) -> Path | None:
    """The default weights shipped in the package, with a warning where they are not known to do
    better than antspyx Affine (on real brains: the model card's OASIS figures)."""
    from ..data import DEFAULT_MODEL, default_model_card

    if not DEFAULT_MODEL.is_file():
        return None
    LOGGER.info("no --model and no trained model in %s: using the default weights shipped with bidsreg (%s), "
                "trained on synthetic brains only", args.output_dir / "models", DEFAULT_MODEL.name)
    real = default_model_card().get("Evaluation", {}).get("RealData", {})
    if not _is_demo(args.bids_dir) and not real.get("BeatsANTsAffine", False):
        LOGGER.warning(
            "the shipped default weights do not beat antspyx Affine on real brains (%s: cnn Dice %s, antsaffine %s); "
            "train a model on your data ('bidsreg %s %s train') for real use",
            real.get("Dataset", "not measured"), real.get("cnn", "n/a"), real.get("antsaffine", "n/a"),
            args.bids_dir, args.output_dir)
    return DEFAULT_MODEL


def _check_model(path: Path, method: str) -> Path:
    """A finished checkpoint of the kind ``method`` needs (65 otherwise)."""
    from ..methods import TABLE
    from ..nn.checkpoint import has_global_stage

    payload = _read_checkpoint(path)
    if not payload["training"].get("complete"):
        raise InputError(f"{path}: this training is unfinished; run the train level again to finish it")
    one_stage = not has_global_stage(payload)
    if one_stage != (TABLE[method].model == "one-stage"):
        kind = "one-stage (voxelmorph)" if one_stage else "two-stage (cnn)"
        raise InputError(f"{path}: a {kind} checkpoint cannot run the {method} method; give the model trained with "
                         f"'train --methods {method}'")
    return path


def _resolve_model(args: argparse.Namespace, method: str = "cnn") -> Path:
    """The checkpoint of a network method: its option (``--model``, ``--voxelmorph-model``), else
    the one ``train`` wrote in output_dir, else (cnn only) the shipped weights."""
    trained = args.output_dir / "models" / f"{MODEL_NAMES[method]}.pt"
    given = args.model if method == "cnn" else args.voxelmorph_model
    path = given or trained
    if not path.is_file():
        option = "--model" if method == "cnn" else "--voxelmorph-model"
        if given:
            raise MissingInputError(f"{path}: {option} file not found; give a checkpoint written by 'bidsreg ... train'")
        path = _shipped_model(args) if method == "cnn" else None
        if path is None:
            raise MissingInputError(
                f"{trained}: no trained {method} model (no {option}, none in output_dir/models"
                + (", no default weights in this installation" if method == "cnn" else "")
                + f"); train one with 'bidsreg {args.bids_dir} {args.output_dir} train --methods {method}' "
                f"or pass {option} CKPT"
            )
    return _check_model(path, method)


def run_train(args: argparse.Namespace) -> int:
    """Train the selected networks (``--methods``: cnn, voxelmorph) on the selected subjects' T1w
    images; write each model and its card in output_dir/models."""
    import torch

    from ..bids.layout import collect_t1w, select_subjects
    from ..methods import TABLE
    from ..nn.model_card import write_model_card
    from ..nn.train import TrainConfig, train

    networks = [method for method in args.methods if method in MODEL_NAMES]
    if not networks:
        raise InputError(f"the train level trains the networks; --methods {','.join(args.methods)} names none: "
                         f"choose {' and/or '.join(MODEL_NAMES)}")
    layout, _, _, filters = _layouts(args)
    subjects = select_subjects(layout, args.participant_label)
    images = [item.path for s in subjects for item in collect_t1w(layout, s, sessions=args.session_label, filters=filters)]
    if len(images) < 2:
        raise NoFilesSelectedError(f"{args.bids_dir}: training needs at least two T1w images, the selection has "
                                   f"{len(images)}; select more subjects (--participant-label)")
    for path in images:
        _check_image(path)
    _prepare_output(args.output_dir, args.bids_dir)
    torch.set_num_threads(max(args.nprocs, args.omp_nthreads))
    for method in networks:
        one_stage = TABLE[method].model == "one-stage"
        checkpoint = args.output_dir / "models" / f"{MODEL_NAMES[method]}.pt"
        config = TrainConfig(affine_steps=0 if one_stage else args.affine_steps, deformable_steps=args.deformable_steps,
                             seed=args.seed, global_stage=not one_stage)
        LOGGER.info("training %s on %d T1w image(s) of %d subject(s): %d + %d steps -> %s", method,
                    len(images), len(subjects), config.affine_steps, config.deformable_steps, checkpoint)
        finished_before = checkpoint.is_file() and bool(
            _read_checkpoint(checkpoint, "; delete it or choose another output_dir")["training"].get("complete")
        )
        try:
            interactive = sys.stderr.isatty()  # a progress bar on a terminal, a line every 100 steps in a job's log
            payload = train(images, checkpoint, config, device=args.device, progress=interactive,
                            log_every=0 if interactive else 100)
        except ValueError as error:
            raise InputError(str(error)) from None
        card = write_model_card(checkpoint, payload, args.bids_dir, subjects)
        if finished_before:
            LOGGER.info("%s already holds this finished training (same configuration and images, %.0f s); kept it "
                        "(delete it to train again). Card: %s", checkpoint, payload["training"]["seconds"], card)
        else:
            LOGGER.info("model written: %s (card %s)", checkpoint, card)
    return exit_codes.OK


def _progress(node, status: str) -> None:
    """Nipype status callback: a line per subject and method as its registration ends and as
    its overlaps are filed."""
    from ..interfaces.registration import REGISTRATIONS

    registration = isinstance(node.interface, REGISTRATIONS)
    if status != "end" or not (registration or node.name == "ds_overlap"):
        return
    parts = node.fullname.split(".")[1].removesuffix("_wf").split("_")  # sub_10_ses_a -> sub-10_ses-a
    who = "_".join(f"{key}-{value}" for key, value in zip(parts[::2], parts[1::2]))
    try:
        outputs = node.result.outputs
        if registration:
            report = json.loads(Path(outputs.report).read_text())
            LOGGER.info("%s %s: registered in %.1f s", who, report["method"], report["seconds"])
        else:
            import pandas as pd

            dice = pd.read_csv(outputs.out_file, sep="\t", na_values="n/a")["dice"].mean()
            LOGGER.info("%s %s: mean Dice %.3f (seg-%s) -> %s", who, node.inputs.entities["desc"], dice,
                        node.inputs.entities.get("seg"), Path(outputs.out_file).name)
    except (OSError, ValueError, KeyError, AttributeError, IndexError):  # progress must never break a run
        LOGGER.info("%s %s: done", who, node.name)


def run_participant(args: argparse.Namespace) -> int:
    """Register each selected subject to the fixed image with each method (a Nipype workflow)."""
    from nipype.pipeline import engine as pe

    from ..bids.layout import collect_t1w, fixed_image, select_subjects
    from ..group.collect import collect
    from ..workflows.execution import SLURM_PLUGINS, prepare_slurm
    from ..workflows.participant import RunSettings, init_participant_wf, workflow_name

    if args.fixed is None:
        raise MissingInputError("participant needs the fixed image: --fixed sub-XX (a subject of the dataset) or --fixed PATH")
    layout, labels, masks, filters = _layouts(args)
    subjects = select_subjects(layout, args.participant_label)
    fixed = fixed_image(args.fixed, layout, fixed_labels=args.fixed_labels, labels=labels, labels_desc=args.labels_desc,
                        need_labels=labels is not None or args.fixed_labels is not None)
    _check_inputs(fixed.path, fixed.labels)
    if fixed.source.startswith("sub-") and fixed.source[4:] in subjects:
        LOGGER.info("%s is the fixed image; it is not registered to itself", fixed.source)
        subjects = [s for s in subjects if s != fixed.source[4:]]
    if not subjects:
        raise NoFilesSelectedError(f"{args.bids_dir}: no subject left to register (the only one selected is the fixed "
                                   f"image {fixed.source}); select other subjects")
    from ..methods import TABLE, resolve

    models = {method: _resolve_model(args, method) for method in args.methods if TABLE[method].model}
    for method in args.methods:
        if TABLE[method].check:
            try:
                resolve(TABLE[method].check)()
            except FileNotFoundError as error:
                raise MissingInputError(f"--methods {method}: {error}") from None
    inputs = []
    for subject in subjects:
        for item in collect_t1w(layout, subject, sessions=args.session_label, filters=filters, labels=labels,
                                labels_desc=args.labels_desc, masks=masks):
            _check_inputs(item.path, item.labels, item.mask)
            if item.mask is None and item.skull_stripped is not True:
                LOGGER.warning("%s: not known to be skull-stripped (SkullStripped %s) and no --masks; the networks "
                               "expect brain-extracted images", item.path.name, item.skull_stripped)
            inputs.append(item)
    _prepare_output(args.output_dir, args.bids_dir)

    settings = RunSettings(
        methods=tuple(args.methods), models=models, parameters=args.parameters, seg=args.labels_desc or "labels",
        device=args.device, omp_nthreads=args.omp_nthreads, seed=args.seed,
    )
    work_dir = args.work_dir or args.output_dir / "work"
    workflow = pe.Workflow(name="bidsreg_wf", base_dir=str(work_dir))
    workflow.config["execution"].update({
        "crashdump_dir": str(work_dir / "crash"), "crashfile_format": "txt",
        "stop_on_first_crash": args.stop_on_first_crash, "poll_sleep_duration": 0.2,
    })
    for item in inputs:
        workflow.add_nodes([init_participant_wf(
            t1w=item.path, entities=item.entities, fixed=fixed, settings=settings, output_dir=args.output_dir,
            labels=item.labels, mask=item.mask, skull_stripped=item.skull_stripped, name=workflow_name(item.entities),
        )])
    plugin_args = {"status_callback": _progress, **args.plugin_args}
    if args.plugin == "MultiProc":
        plugin_args.setdefault("n_procs", args.nprocs)
        if args.mem_gb:
            plugin_args.setdefault("memory_gb", args.mem_gb)
    jobs = ""
    if args.plugin in SLURM_PLUGINS:
        jobs = f", {prepare_slurm(workflow, args.plugin, plugin_args)} sbatch jobs"
    LOGGER.info("registering %d image(s) to %s with %s (%s plugin%s)", len(inputs), fixed.source,
                ", ".join(args.methods), args.plugin, jobs)
    try:
        workflow.run(plugin=args.plugin, plugin_args=plugin_args)
    except RuntimeError as error:
        LOGGER.error("%s; crash reports in %s; rerun the same command to resume", error, work_dir / "crash")
        return exit_codes.FAILURE
    if args.plugin == "SLURMGraph":  # the plugin submits the whole graph and returns at once
        LOGGER.info("submitted to SLURM with job dependencies; the outputs appear in %s as the jobs end (squeue --me); "
                    "after a failure, the same command resumes; once all ended: 'bidsreg %s %s group'",
                    args.output_dir, args.bids_dir, args.output_dir)
        return exit_codes.OK
    table, _ = collect(args.output_dir)
    chosen = table[table["subject"].isin(subjects)]
    if not chosen.empty:
        LOGGER.info("summary (this run's subjects; 'bidsreg ... group' writes the full report):\n%s", chosen[
            ["subject", "session", "run", "method", "dice", "seconds"]].dropna(axis=1, how="all").to_string(index=False))
    return exit_codes.OK


def run_group_level(args: argparse.Namespace) -> int:
    """Gather the participant outputs into tables and ``group/report.html``."""
    from ..group.report import run_group

    report = run_group(args.output_dir)
    print(f"report: {report.resolve()}")
    return exit_codes.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run bidsreg; returns the BIDS-Apps exit code."""
    args = parse_args(argv)
    _setup_logging(args.verbose)
    level = {"train": run_train, "participant": run_participant, "group": run_group_level}[args.analysis_level]
    try:
        return level(args)
    except (InputError, OutputError) as error:
        LOGGER.error("%s", error)
        return error.exit_code


def console() -> None:
    """The ``bidsreg`` console script."""
    sys.exit(main())
