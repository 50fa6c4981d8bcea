"""The participant workflow: one T1w image registered to the fixed image with each method.

Every method's registration node writes the same pair of ITK composite transforms, and each
branch feeds the same evaluation sub-workflow (:func:`init_evaluate_wf`): warp the T1w
(linear) and the label map (nearest), measure the overlap with the fixed labels and the
Jacobian of deformable transforms, and file everything as BIDS derivatives.

A sketch for sub-10 with ``--methods cnn,antssyn`` and labels::

    inputnode ──> register_cnnaffine ──> evaluate_cnnaffine_wf ──> outputnode
                        └──> register_cnn ──> evaluate_cnn_wf ──────┘
              ──> register_antssyn ──> evaluate_antssyn_wf ─────────┘
              ──> evaluate_original_wf  (labels through scanner coordinates: "original")
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from nipype.interfaces.utility import IdentityInterface, Merge, Select
from nipype.pipeline import engine as pe

from ..bids.derivatives import STAGING
from ..bids.layout import FixedImage, T1wInput
from ..interfaces.apply import ApplyTransform, MaskImage
from ..interfaces.derivatives import DerivativesSink, PublishDerivatives
from ..interfaces.metrics import JacobianStats, LabelOverlap
from ..interfaces.registration import Registration
from ..methods.base import Context, config_parameters
from ..methods.table import TABLE, deformable, stage_names

__all__ = ["init_evaluate_wf", "init_participant_wf", "workflow_name"]

#: Entities of an input T1w that its derivatives keep.
_KEPT = ("subject", "session", "acquisition", "ceagent", "reconstruction", "run")
#: The Registration input of each Context field.
_CONTEXT_INPUTS = {"seed": "seed", "threads": "num_threads", "device": "device"}


def workflow_name(entities: dict) -> str:
    """``sub_10_ses_1_run_2_wf`` from a T1w's entities (Nipype names allow no dashes)."""
    parts = [f"{key[:3]}_{entities[key]}" for key in _KEPT if entities.get(key) is not None]
    return "_".join(parts) + "_wf"


def init_participant_wf(
    *,
    t1w: T1wInput,
    fixed: FixedImage,
    methods: dict[str, Any],
    context: Context,
    output_dir: Path,
    output_resolution: str = "compact",
    seg: str = "labels",
    name: str | None = None,
) -> pe.Workflow:
    """Register one T1w image to ``fixed`` with every method of ``methods``.

    Parameters
    ----------
    t1w : T1wInput
        The subject's T1w image, with its label map (measured when ``fixed`` has labels too),
        brain mask (the T1w is brain-extracted with it first) and ``SkullStripped``.
    fixed : FixedImage
    methods : dict
        Per method of :data:`~bidsreg.methods.table.TABLE`, its configuration (a network's
        ``model`` filled in).
    context : Context
        Seed, threads of each registration, torch device.
    output_dir : Path
        The derivatives dataset.
    output_resolution : str
        Grid of the deformable transforms written (:data:`bidsreg.config.OUTPUT_RESOLUTIONS`).
    seg : str
        ``seg-`` label of label maps and overlap tables.
    name : str, optional
        Default: :func:`workflow_name`.

    Returns
    -------
    nipype.pipeline.engine.Workflow
        ``inputnode``: ``t1w``, ``labels``, ``mask`` (set from ``t1w``). ``outputnode``: per
        reported method ``m``, ``xfm_<m>`` (its filed forward transform) and, when overlaps
        are measured, ``overlap_<m>`` (its overlap table; ``overlap_original`` too).
    """
    unknown = sorted(set(methods) - set(TABLE))
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or '(none)'}; choose from {', '.join(TABLE)}")
    untrained = [m for m, config in methods.items() if TABLE[m].network and getattr(config, "model", None) is None]
    if untrained:
        raise ValueError(f"the {', '.join(untrained)} method(s) need a model (a bidsreg checkpoint)")
    kept = {key: t1w.entities[key] for key in _KEPT if t1w.entities.get(key) is not None}
    measure = t1w.labels is not None and fixed.labels is not None
    reported = stage_names(methods)
    workflow = pe.Workflow(name=name or workflow_name(kept))
    inputnode = pe.Node(IdentityInterface(fields=["t1w", "labels", "mask"]), name="inputnode")
    inputnode.inputs.t1w = str(t1w.path)
    for field, path in (("labels", t1w.labels), ("mask", t1w.mask)):
        if path is not None:
            setattr(inputnode.inputs, field, str(path))
    outputs = [f"xfm_{m}" for m in reported] + ([f"overlap_{m}" for m in ("original", *reported)] if measure else [])
    outputnode = pe.Node(IdentityInterface(fields=outputs), name="outputnode")
    metadata = {
        "Sources": [str(t1w.path)] + ([str(t1w.mask)] if t1w.mask else []),
        "SkullStripped": t1w.skull_stripped if t1w.mask is None else True,
        "SpatialReference": fixed.source if fixed.source.startswith("sub-") else str(fixed.path),
        "FixedImage": str(fixed.path),
        "Space": fixed.space,
    }

    moving = (inputnode, "t1w")
    if t1w.mask is not None:
        mask_t1w = pe.Node(MaskImage(), name="mask_t1w")
        workflow.connect([(inputnode, mask_t1w, [("t1w", "in_file"), ("mask", "mask")])])
        moving = (mask_t1w, "out_file")

    evaluation = {"entities": kept, "fixed": fixed, "output_dir": output_dir, "seg": seg, "metadata": metadata}
    for method, config in methods.items():
        for stage, node in _registration_nodes(workflow, method, config, fixed, context, output_resolution).items():
            evaluate = init_evaluate_wf(method=stage, labels=measure, **evaluation)
            workflow.connect([
                (moving[0], node, [(moving[1], "moving")]),
                (moving[0], evaluate, [(moving[1], "inputnode.moving")]),
                (node, evaluate, [("forward_transform", "inputnode.forward_transform"),
                                  ("inverse_transform", "inputnode.inverse_transform"),
                                  ("report", "inputnode.report")]),
                (evaluate, outputnode, [("outputnode.forward_transform", f"xfm_{stage}")]),
            ])
            if measure:
                workflow.connect([
                    (inputnode, evaluate, [("labels", "inputnode.labels")]),
                    (evaluate, outputnode, [("outputnode.overlap", f"overlap_{stage}")]),
                ])
    if measure:
        original = _init_original_wf(**evaluation)
        workflow.connect([
            (inputnode, original, [("labels", "inputnode.labels")]),
            (original, outputnode, [("outputnode.overlap", "overlap_original")]),
        ])
    return workflow


def _registration_nodes(workflow: pe.Workflow, method: str, config: Any, fixed: FixedImage,
                        context: Context, output_resolution: str) -> dict[str, pe.Node]:
    """The registration node of each stage of a method, chained (a stage starts from the one
    before it), by the name each reports."""
    row = TABLE[method]
    files = [str(value) for value in dataclasses.asdict(config).values() if isinstance(value, Path)]
    inputs = {_CONTEXT_INPUTS[name]: getattr(context, name) for name in row.context}
    nodes, previous = {}, None
    for stage in row.stages:
        node = pe.Node(Registration(
            fixed=str(fixed.path), method=method, stage=stage.name, parameters=config_parameters(config),
            parameter_files=files, **inputs, **({"output_resolution": output_resolution} if stage.deformable else {}),
        ), name=f"register_{stage.name}", n_procs=context.threads, mem_gb=row.memory_gb)
        if previous is not None:
            workflow.connect([(previous, node, [("forward_transform", "start_transform"), ("report", "start_report")])])
        nodes[stage.name], previous = node, node
    return nodes


def init_evaluate_wf(
    *,
    method: str,
    entities: dict,
    fixed: FixedImage,
    output_dir: Path,
    seg: str,
    metadata: dict,
    labels: bool,
) -> pe.Workflow:
    """Warp, measure and file one method's result.

    Parameters
    ----------
    method : str
        The reported method name (``desc-`` entity).
    entities : dict
        The T1w's pybids entities that its derivatives keep.
    fixed : FixedImage
    output_dir : Path
    seg : str
    metadata : dict
        Sidecar fields of every derivative (sources, fixed image, space).
    labels : bool
        Warp the subject's label map and measure its overlap with the fixed one.

    Returns
    -------
    nipype.pipeline.engine.Workflow
        ``inputnode``: ``moving`` (the registered T1w), ``forward_transform``,
        ``inverse_transform`` (ITK composites), ``report`` (the registration's JSON) and
        ``labels`` (the subject's label map). ``outputnode``: ``forward_transform`` and
        ``overlap`` (the filed transform and overlap table).
    """
    workflow = pe.Workflow(name=f"evaluate_{method}_wf")
    inputnode = pe.Node(IdentityInterface(fields=["moving", "forward_transform", "inverse_transform", "report",
                                                  "labels"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["forward_transform", "overlap"]), name="outputnode")
    space = fixed.space
    described = {**entities, "desc": method}
    sink = {"base_directory": str(output_dir), "staging": str(_staging(output_dir, entities, method)),
            "metadata": {**metadata, "Method": method}}

    warp_t1w = pe.Node(ApplyTransform(reference=str(fixed.path), interpolation="linear"), name="warp_t1w")
    ds_t1w = pe.Node(
        DerivativesSink(entities={**described, "space": space}, suffix="T1w", extension=".nii.gz", **sink), name="ds_t1w"
    )
    ds_forward = pe.Node(DerivativesSink(
        entities={**described, "from": "T1w", "to": space, "mode": "image"}, suffix="xfm", extension=".h5", **sink
    ), name="ds_forward")
    ds_inverse = pe.Node(DerivativesSink(
        entities={**described, "from": space, "to": "T1w", "mode": "image"}, suffix="xfm", extension=".h5", **sink
    ), name="ds_inverse")
    merge = pe.Node(Merge(2), name="merge_reports")  # the registration's report and the Jacobian's statistics
    workflow.connect([
        (inputnode, warp_t1w, [("moving", "in_file"), ("forward_transform", "transform")]),
        (warp_t1w, ds_t1w, [("out_file", "in_file")]),
        (inputnode, ds_t1w, [("report", "json_files")]),
        (inputnode, ds_forward, [("forward_transform", "in_file")]),
        (inputnode, ds_inverse, [("inverse_transform", "in_file"), ("report", "json_files")]),
        (inputnode, merge, [("report", "in1")]),
        (merge, ds_forward, [("out", "json_files")]),
    ])
    sinks = [ds_t1w, ds_inverse]
    if deformable(method):
        jacobian = pe.Node(JacobianStats(reference=str(fixed.path)), name="jacobian")
        ds_jacobian = pe.Node(DerivativesSink(
            entities={**described, "space": space}, suffix="jacobian", extension=".nii.gz", **sink
        ), name="ds_jacobian")
        workflow.connect([
            (inputnode, jacobian, [("forward_transform", "transform")]),
            (jacobian, ds_jacobian, [("out_file", "in_file"), ("out_stats", "json_files")]),
            (jacobian, merge, [("out_stats", "in2")]),
        ])
        sinks.append(ds_jacobian)
    if labels:
        warp_labels, ds_overlap = _add_overlap(workflow, inputnode, fixed=fixed, entities=described, seg=seg, sink=sink)
        ds_dseg = pe.Node(DerivativesSink(
            entities={**described, "space": space, "segmentation": seg}, suffix="dseg", extension=".nii.gz", **sink
        ), name="ds_dseg")
        workflow.connect([
            (inputnode, warp_labels, [("forward_transform", "transform")]),
            (warp_labels, ds_dseg, [("out_file", "in_file")]),
            (merge, ds_overlap, [("out", "json_files")]),
        ])
        sinks.append(ds_dseg)
    sinks.append(ds_forward)
    publish = _publish(workflow, sinks + ([ds_overlap] if labels else []), sink)
    _select(workflow, publish, 2 * len(sinks) - 1, outputnode, "forward_transform")
    if labels:
        _select(workflow, publish, 2 * len(sinks) + 1, outputnode, "overlap")
    return workflow


def _staging(output_dir: Path, entities: dict, method: str) -> Path:
    """The staging folder of one result (image, method)."""
    return output_dir / STAGING / f"{workflow_name(entities)}_{method}"


def _publish(workflow: pe.Workflow, sinks: list[pe.Node], sink: dict) -> pe.Node:
    """A node that moves the files of ``sinks`` (each its sidecar, then its file; the last
    sink's file marks the result complete) from their staging folder into the dataset."""
    files = pe.Node(Merge(2 * len(sinks)), name="staged_files")
    publish = pe.Node(PublishDerivatives(base_directory=sink["base_directory"], staging=sink["staging"]),
                      name="publish")
    for index, node in enumerate(sinks):
        workflow.connect([(node, files, [("out_sidecar", f"in{2 * index + 1}"), ("out_file", f"in{2 * index + 2}")])])
    workflow.connect(files, "out", publish, "in_files")
    return publish


def _select(workflow: pe.Workflow, publish: pe.Node, index: int, outputnode: pe.Node, field: str) -> None:
    """Connect the published file at ``index`` to ``outputnode.field``."""
    select = pe.Node(Select(index=[index]), name=f"select_{field}")
    workflow.connect([(publish, select, [("out_files", "inlist")]), (select, outputnode, [("out", field)])])


def _add_overlap(workflow: pe.Workflow, inputnode: pe.Node, *, fixed: FixedImage, entities: dict, seg: str,
                 sink: dict) -> tuple[pe.Node, pe.Node]:
    """Warp ``inputnode``'s label map onto the fixed labels' grid, measure their overlap and
    file the table; returns the warp node (its transform left to connect) and the sink."""
    warp_labels = pe.Node(ApplyTransform(reference=str(fixed.labels), interpolation="nearest"), name="warp_labels")
    overlap = pe.Node(LabelOverlap(fixed_labels=str(fixed.labels)), name="overlap")
    if fixed.lut is not None:
        overlap.inputs.lut = str(fixed.lut)
    measured = {**sink, "metadata": {**sink["metadata"], "FixedLabels": str(fixed.labels)}}
    ds_overlap = pe.Node(DerivativesSink(
        entities={**entities, "segmentation": seg}, suffix="overlap", extension=".tsv", **measured
    ), name="ds_overlap")
    workflow.connect([
        (inputnode, warp_labels, [("labels", "in_file")]),
        (warp_labels, overlap, [("out_file", "warped_labels")]),
        (overlap, ds_overlap, [("out_table", "in_file")]),
    ])
    return warp_labels, ds_overlap


def _init_original_wf(*, entities: dict, fixed: FixedImage, output_dir: Path, seg: str, metadata: dict) -> pe.Workflow:
    """The "original" overlap: labels resampled through scanner coordinates, no transform.

    ``inputnode``: ``labels``; ``outputnode``: ``overlap`` (the filed table).
    """
    workflow = pe.Workflow(name="evaluate_original_wf")
    inputnode = pe.Node(IdentityInterface(fields=["labels"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["overlap"]), name="outputnode")
    sink = {"base_directory": str(output_dir), "staging": str(_staging(output_dir, entities, "original")),
            "metadata": {**metadata, "Method": "original"}}
    _, ds_overlap = _add_overlap(workflow, inputnode, fixed=fixed, entities={**entities, "desc": "original"}, seg=seg,
                                 sink=sink)
    _select(workflow, _publish(workflow, [ds_overlap], sink), 1, outputnode, "overlap")
    return workflow
