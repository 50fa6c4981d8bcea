"""Every input of a run checked before any work starts: the BIDS selection, the images, the
networks' checkpoints.

A bad input raises an :class:`~bidsreg.errors.InputError` (or a subclass) whose one-line message
names the file and the fix, and whose ``exit_code`` is the BIDS-Apps one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import NamedTuple

from bids import BIDSLayout

from ..bids.layout import FixedImage, T1wInput, collect_t1w, fixed_image, load_layout, read_filters, select_subjects
from ..config import Config
from ..errors import InputError, MissingInputError, NoFilesSelectedError
from ..image import Volume, check_brain, load_volume, same_grid
from ..methods.ants import SCRIPTS, too_coarse_for_scripts
from ..methods.table import TABLE, options

__all__ = ["Layouts", "check_image", "check_inputs", "fixed_and_subjects", "layouts", "read_checkpoint",
           "resolve_model", "resolve_networks", "subject_inputs"]

LOGGER = logging.getLogger("bidsreg")


class Layouts(NamedTuple):
    """What the run reads its inputs from."""

    dataset: BIDSLayout
    labels: BIDSLayout | None
    masks: BIDSLayout | None
    filters: dict


def layouts(config: Config) -> Layouts:
    """The input dataset (validated unless skipped), the labels and masks derivatives, the T1w filters."""
    from ..bids.validation import validate_dataset

    if not config.skip_bids_validation:
        report = validate_dataset(config.bids_dir)
        if report.warnings:
            LOGGER.warning("BIDS validator: %d warning(s) in %s (run bids-validator-deno for details)",
                           len(report.warnings), config.bids_dir)
    dataset = load_layout(config.bids_dir)
    return Layouts(
        dataset,
        load_layout(config.labels, derivative=True) if config.labels else None,
        load_layout(config.masks, derivative=True) if config.masks else None,
        read_filters(config.bids_filter_file, dataset),
    )


def check_image(path: Path, labels: bool = False) -> Volume:
    """The image (or label map) at ``path``; one that bidsreg cannot use, or an image too small
    to be a brain (:func:`~bidsreg.image.check_brain`), is bad input (65)."""
    try:
        volume = load_volume(path, labels=labels)
        if not labels:
            check_brain(volume)
        return volume
    except ValueError as error:
        raise InputError(str(error)) from None


def check_inputs(image_path: Path, labels: Path | None = None, mask: Path | None = None) -> Volume:
    """Load an image and its label map and mask once, so that a bad one fails before any work
    starts; the image."""
    image = check_image(image_path)
    for path, what in ((labels, "label map"), (mask, "brain mask")):
        if path is None:
            continue
        other = check_image(path, labels=True)
        if not same_grid(image, other):
            raise InputError(
                f"{other.path}: this {what} is on another grid ({other.shape}) than its T1w {image.path} "
                f"({image.shape}); resample it onto the T1w grid or give the {what} made for this image"
            )
    return image


def fixed_and_subjects(config: Config, found: Layouts) -> tuple[FixedImage, list[str]]:
    """The fixed image (``config.fixed``, checked) and the subjects to register (not the fixed one)."""
    subjects = select_subjects(found.dataset, list(config.participant_label))
    fixed = fixed_image(config.fixed, found.dataset, fixed_labels=config.fixed_labels, labels=found.labels,
                        labels_desc=config.labels_desc,
                        need_labels=found.labels is not None or config.fixed_labels is not None)
    shape = check_inputs(fixed.path, fixed.labels).shape
    scripts = [method for method in config.methods if method in SCRIPTS]
    if scripts and (why := too_coarse_for_scripts(shape)):
        LOGGER.warning("%s (%s): %s", ", ".join(scripts), fixed.path.name, why)
    if fixed.labels is None:
        LOGGER.info("no --labels: the registrations are written, no label overlaps (Dice, HD95) are measured; "
                    "give --labels DERIV_DIR --labels-desc DESC to measure them")
    if fixed.source.startswith("sub-") and fixed.source[4:] in subjects:
        LOGGER.info("%s is the fixed image; it is not registered to itself", fixed.source)
        subjects = [s for s in subjects if s != fixed.source[4:]]
    if not subjects:
        raise NoFilesSelectedError(f"{config.bids_dir}: no subject left to register (the only one selected is the "
                                   f"fixed image {fixed.source}); select other subjects")
    return fixed, subjects


def subject_inputs(config: Config, found: Layouts, subjects: list[str]) -> list[T1wInput]:
    """The T1w images of ``subjects`` with their label maps and masks, each loaded and checked."""
    inputs = []
    for subject in subjects:
        for item in collect_t1w(found.dataset, subject, sessions=list(config.session_label) or None,
                                filters=found.filters, labels=found.labels, labels_desc=config.labels_desc,
                                masks=found.masks):
            check_inputs(item.path, item.labels, item.mask)
            if found.labels is not None and item.labels is None:
                desc = f"desc-{config.labels_desc} " if config.labels_desc else ""
                LOGGER.warning("%s: no %slabel map in %s; it is registered, its overlaps are not measured",
                               item.path.name, desc, found.labels.root)
            if item.mask is None and item.skull_stripped is not True:
                LOGGER.warning("%s: not known to be skull-stripped (SkullStripped %s) and no --masks; the networks "
                               "expect brain-extracted images", item.path.name, item.skull_stripped)
            inputs.append(item)
    return inputs


def read_checkpoint(path: Path, fix: str = "") -> dict:
    """A bidsreg checkpoint; a file that is not one is bad input (65)."""
    from ..nn.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except ValueError as error:
        raise InputError(f"{error}{fix}") from None


def resolve_networks(config: Config) -> Config:
    """``config`` with the checkpoint of each network method filled in (:func:`resolve_model`),
    and every program a method runs found (exit 66 if missing)."""
    configs = dict(config.method_configs)
    for name in config.methods:
        method = TABLE[name]
        if method.network is not None:
            configs[name] = dataclasses.replace(configs[name], model=resolve_model(config, name))
        if method.check is not None:
            try:
                method.check()
            except FileNotFoundError as error:
                raise MissingInputError(f"--methods {name}: {error}") from None
    return config.replace(method_configs=configs)


def resolve_model(config: Config, method: str) -> Path:
    """The checkpoint a network method runs: its option (``--model``, ``--voxelmorph-model``), else
    the one ``train`` wrote in output_dir, else the default weights shipped with bidsreg.

    Raises
    ------
    MissingInputError
        When none is found (66), with how to train one.
    InputError
        When it is no finished bidsreg checkpoint of the method's kind (65).
    """
    network = TABLE[method].network
    given = getattr(config.method_configs.get(method), "model", None)
    trained = config.output_dir / "models" / f"{network.checkpoint}.pt"
    flag = next((o.flag for o in options() if o.keyword == "model" and method in o.methods), "the model option")
    path = given or trained
    if not path.is_file():
        if given:
            raise MissingInputError(f"{path}: {flag} file not found; give a checkpoint written by 'bidsreg ... train'")
        path = _shipped_model(config, network.shipped, method)
        if path is None:
            raise MissingInputError(
                f"{trained}: no trained {method} model (no {flag}, none in output_dir/models"
                + (", no default weights in this installation" if network.shipped else "")
                + f"); train one with 'bidsreg {config.bids_dir} {config.output_dir} train --methods {method}' "
                f"or pass {flag} CKPT"
            )
    _check_model(path, method)
    return path


def _check_model(path: Path, method: str) -> None:
    """A finished checkpoint of the kind ``method`` needs, whose weights load into the networks
    it describes (65 otherwise)."""
    from ..nn.checkpoint import build_networks, has_global_stage

    payload = read_checkpoint(path)
    try:
        complete = bool(payload["training"].get("complete"))
        two_stage = has_global_stage(payload)
        build_networks(payload)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: a bidsreg-tagged checkpoint whose networks or weights do not load ({reason}); "
                         "use a checkpoint written by this bidsreg's train level") from None
    if not complete:
        raise InputError(f"{path}: this training is unfinished; run the train level again to finish it")
    if two_stage != TABLE[method].network.global_stage:
        kind = "two-stage (cnn)" if two_stage else "one-stage (voxelmorph)"
        raise InputError(f"{path}: a {kind} checkpoint cannot run the {method} method; give the model trained with "
                         f"'train --methods {method}'")


def _shipped_model(config: Config, shipped: Path | None, method: str) -> Path | None:
    """The default weights shipped in the package, with a warning where the model card does not
    show ``method`` with them above antspyx Affine on real brains (its ``Evaluation.RealData``
    figures; not on the demo data, which are made like the training data)."""
    from ..methods.model_card import read_model_card

    if shipped is None or not shipped.is_file():
        return None
    LOGGER.info("no --model and no trained model in %s: using the default weights shipped with bidsreg (%s), "
                "trained on synthetic brains only", config.output_dir / "models", shipped.name)
    real = read_model_card(shipped).get("Evaluation", {}).get("RealData", {})
    figure, affine = real.get(method), real.get("antsaffine")
    if not _is_demo(config.bids_dir) and (figure is None or affine is None or figure <= affine):
        LOGGER.warning(
            "with the shipped default weights, %s is not known to beat antspyx Affine on real brains (%s: %s Dice "
            "%s, antsaffine %s); use %s, or train a model on your data ('bidsreg %s %s train')",
            method, real.get("Dataset", "not measured"), method, figure if figure is not None else "n/a",
            affine if affine is not None else "n/a", _best_shipped(real, method), config.bids_dir, config.output_dir)
    return shipped


def _best_shipped(real: dict, method: str) -> str:
    """The method whose real-data figure with the shipped weights is the highest among those
    that run them (``method`` itself when no other has a figure)."""
    measured = {name: real[name] for name, row in TABLE.items()
                if row.network is not None and row.network.shipped is not None and isinstance(real.get(name), float)}
    return max(measured, key=measured.get) if measured else method


def _is_demo(bids_dir: Path) -> bool:
    """Whether ``bids_dir`` is a dataset written by ``bidsreg-demo-data``."""
    from ..demo.dataset import GENERATOR

    try:
        description = json.loads((bids_dir / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    generated = description.get("GeneratedBy") if isinstance(description, dict) else None
    return isinstance(generated, list) and any(isinstance(g, dict) and g.get("Name") == GENERATOR for g in generated)
