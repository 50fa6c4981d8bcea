"""The participant workflow: one T1w image registered to the fixed image with each method.

Every method's registration node writes the same pair of ITK composite transforms, and each
branch feeds the same evaluation sub-workflow (:func:`init_evaluate_wf`): warp the T1w
(linear) and the label map (nearest), measure the overlap with the fixed labels and the
Jacobian of deformable transforms, and file everything as BIDS derivatives.

A sketch for sub-10 with ``--methods cnn,antssyn`` and labels::

    cnn_global ──> evaluate_cnnaffine_wf
        └──> cnn_local ──> evaluate_cnn_wf
    register_antssyn ──> evaluate_antssyn_wf
    (identity) ──> evaluate_original_wf  (labels through scanner coordinates: "original")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nipype.pipeline import engine as pe

from ..bids.layout import FixedImage
from ..interfaces.apply import ApplyTransform, MaskImage
from ..interfaces.derivatives import DerivativesSink
from ..interfaces.metrics import JacobianStats, LabelOverlap
from ..interfaces.registration import CNNGlobal, CNNLocal, CNNOneStage, MethodRegistration
from ..methods import METHODS, TABLE, deformable

__all__ = ["RunSettings", "init_evaluate_wf", "init_participant_wf", "workflow_name"]

#: Entities of an input T1w that its derivatives keep.
_KEPT = ("subject", "session", "acquisition", "ceagent", "reconstruction", "run")


@dataclass(frozen=True)
class RunSettings:
    """How the methods run (from the command line).

    Attributes
    ----------
    methods : tuple of str
        Names of :data:`bidsreg.methods.TABLE`; ``cnn`` also yields ``cnnaffine``.
    models : dict
        The checkpoint of each network method (``cnn``, ``voxelmorph``) that runs.
    parameters : dict
        Per method, its parameters (:func:`bidsreg.methods.method_parameters`; absent: defaults).
    seg : str
        ``seg-`` label of label maps and overlap tables (the ``--labels-desc``).
    device : str
    omp_nthreads : int
        Threads of each registration.
    seed : int
    instance_steps : int
        Local instance optimisation of the networks (0: off).
    """

    methods: tuple[str, ...]
    models: dict[str, Path] = field(default_factory=dict)
    parameters: dict[str, dict] = field(default_factory=dict)
    seg: str = "labels"
    device: str = "auto"
    omp_nthreads: int = 1
    seed: int = 0
    instance_steps: int = 0


def workflow_name(entities: dict) -> str:
    """``sub_10_ses_1_run_2_wf`` from a T1w's entities (Nipype names allow no dashes)."""
    parts = [f"{key[:3]}_{entities[key]}" for key in _KEPT if entities.get(key) is not None]
    return "_".join(parts) + "_wf"


def init_participant_wf(
    *,
    t1w: Path,
    entities: dict,
    fixed: FixedImage,
    settings: RunSettings,
    output_dir: Path,
    labels: Path | None = None,
    mask: Path | None = None,
    skull_stripped: bool | None = True,
    name: str | None = None,
) -> pe.Workflow:
    """Register one T1w image to ``fixed`` with every method of ``settings``.

    Parameters
    ----------
    t1w : Path
        The subject's T1w image.
    entities : dict
        Its pybids entities (subject, session, run, ...).
    fixed : FixedImage
    settings : RunSettings
    output_dir : Path
        The derivatives dataset.
    labels : Path, optional
        The subject's label map on the T1w grid; with ``fixed.labels`` the overlaps are measured.
    mask : Path, optional
        Brain mask: the T1w is brain-extracted with it before registration.
    skull_stripped : bool or None
        The T1w sidecar's ``SkullStripped`` (recorded in the sidecars; the report warns).
    name : str, optional
        Default: :func:`workflow_name`.

    Returns
    -------
    nipype.pipeline.engine.Workflow
    """
    unknown = sorted(set(settings.methods) - set(METHODS))
    if unknown or not settings.methods:
        raise ValueError(f"unknown method(s) {unknown or '(none)'}; choose from {', '.join(METHODS)}")
    untrained = [name for name in settings.methods if TABLE[name].model and name not in settings.models]
    if untrained:
        raise ValueError(f"the {', '.join(untrained)} method(s) need a model (a bidsreg checkpoint)")
    kept = {key: entities[key] for key in _KEPT if entities.get(key) is not None}
    workflow = pe.Workflow(name=name or workflow_name(kept))
    measure = labels is not None and fixed.labels is not None
    source = {
        "Sources": [str(t1w)] + ([str(mask)] if mask else []),
        "SkullStripped": skull_stripped if mask is None else True,
        "SpatialReference": fixed.source if fixed.source.startswith("sub-") else str(fixed.path),
        "FixedImage": str(fixed.path),
        "Space": fixed.space,
    }

    moving = pe.Node(MaskImage(in_file=str(t1w), mask=str(mask)), name="mask_t1w") if mask else None

    def connect_moving(node: pe.Node, field: str = "moving") -> None:
        if moving is None:
            setattr(node.inputs, field, str(t1w))
        else:
            workflow.connect(moving, "out_file", node, field)

    branches: dict[str, pe.Node] = {}
    for name in settings.methods:
        nodes = _registration_nodes(name, fixed, settings)
        for node in nodes.values():
            connect_moving(node)
        if name == "cnn":  # the local stage starts from the global one
            workflow.connect([(nodes["cnnaffine"], nodes["cnn"], [("forward_transform", "global_transform"),
                                                                  ("report", "global_report")])])
        branches.update(nodes)

    for method, node in branches.items():
        evaluate = init_evaluate_wf(
            method=method, entities=kept, fixed=fixed, output_dir=output_dir, labels=labels if measure else None,
            seg=settings.seg, metadata=source,
        )
        connect_moving(evaluate.get_node("inputnode"), "moving")
        workflow.connect([(node, evaluate, [
            ("forward_transform", "inputnode.forward_transform"),
            ("inverse_transform", "inputnode.inverse_transform"),
            ("report", "inputnode.report"),
        ])])
    if measure:
        workflow.add_nodes([_init_original_wf(entities=kept, fixed=fixed, output_dir=output_dir, labels=labels,
                                              seg=settings.seg, metadata=source)])
    return workflow


def _registration_nodes(name: str, fixed: FixedImage, settings: RunSettings) -> dict[str, pe.Node]:
    """The registration node(s) of a method, by the method name each reports."""
    method, threads = TABLE[name], settings.omp_nthreads
    common = {"fixed": str(fixed.path), "num_threads": threads}
    placement = {"n_procs": threads, "mem_gb": method.memory_gb}
    if method.model is None:
        node = MethodRegistration(method=name, parameters=settings.parameters.get(name, {}), seed=settings.seed, **common)
        return {name: pe.Node(node, name=f"register_{name}", **placement)}
    network = {"model": str(settings.models[name]), "device": settings.device, **common}
    if method.model == "one-stage":
        node = CNNOneStage(instance_steps=settings.instance_steps, **network)
        return {name: pe.Node(node, name=f"register_{name}", **placement)}
    return {  # the two-stage CNN: the global stage alone is reported too
        "cnnaffine": pe.Node(CNNGlobal(**network), name="cnn_global", **placement),
        "cnn": pe.Node(CNNLocal(instance_steps=settings.instance_steps, **network), name="cnn_local", **placement),
    }


def init_evaluate_wf(
    *,
    method: str,
    entities: dict,
    fixed: FixedImage,
    output_dir: Path,
    labels: Path | None,
    seg: str,
    metadata: dict,
) -> pe.Workflow:
    """Warp, measure and file one method's result.

    Inputs (``inputnode``): ``moving`` (the registered T1w), ``forward_transform``,
    ``inverse_transform`` (ITK composites) and ``report`` (the registration's JSON).
    """
    from nipype.interfaces.utility import IdentityInterface

    workflow = pe.Workflow(name=f"evaluate_{method}_wf")
    inputnode = pe.Node(
        IdentityInterface(fields=["moving", "forward_transform", "inverse_transform", "report"]), name="inputnode"
    )
    space = fixed.space
    described = {**entities, "desc": method}
    sink = {"base_directory": str(output_dir), "metadata": {**metadata, "Method": method}}

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
    workflow.connect([
        (inputnode, warp_t1w, [("moving", "in_file"), ("forward_transform", "transform")]),
        (warp_t1w, ds_t1w, [("out_file", "in_file")]),
        (inputnode, ds_t1w, [("report", "json_files")]),
        (inputnode, ds_forward, [("forward_transform", "in_file")]),
        (inputnode, ds_inverse, [("inverse_transform", "in_file"), ("report", "json_files")]),
    ])
    if deformable(method):
        jacobian = pe.Node(JacobianStats(reference=str(fixed.path)), name="jacobian")
        ds_jacobian = pe.Node(DerivativesSink(
            entities={**described, "space": space}, suffix="jacobian", extension=".nii.gz", **sink
        ), name="ds_jacobian")
        workflow.connect([
            (inputnode, jacobian, [("forward_transform", "transform")]),
            (jacobian, ds_jacobian, [("out_file", "in_file"), ("out_stats", "json_files")]),
        ])
    merge = _merge_reports(workflow, inputnode, jacobian if deformable(method) else None)
    workflow.connect(merge, "out", ds_forward, "json_files")
    if labels is not None:
        _add_overlap(workflow, inputnode, labels=labels, fixed=fixed, entities=described, seg=seg, sink=sink,
                     transform=True, merge=merge)
    return workflow


def _merge_reports(workflow: pe.Workflow, inputnode: pe.Node, jacobian: pe.Node | None) -> pe.Node:
    """The registration report and (deformable methods) the Jacobian statistics, as one list."""
    from nipype.interfaces.utility import Merge

    merge = pe.Node(Merge(2), name="merge_reports")
    workflow.connect(inputnode, "report", merge, "in1")
    if jacobian is not None:
        workflow.connect(jacobian, "out_stats", merge, "in2")
    return merge


def _add_overlap(
    workflow: pe.Workflow,
    inputnode: pe.Node | None,
    *,
    labels: Path,
    fixed: FixedImage,
    entities: dict,
    seg: str,
    sink: dict,
    transform: bool,
    merge: pe.Node | None = None,
) -> None:
    """Warp the label map (through ``inputnode``'s forward transform when ``transform``, else
    scanner coordinates), measure its overlap with the fixed labels and file both."""
    warp_labels = pe.Node(ApplyTransform(in_file=str(labels), reference=str(fixed.labels), interpolation="nearest"),
                          name="warp_labels")
    overlap = pe.Node(LabelOverlap(fixed_labels=str(fixed.labels)), name="overlap")
    if fixed.lut is not None:
        overlap.inputs.lut = str(fixed.lut)
    ds_overlap = pe.Node(DerivativesSink(
        entities={**entities, "seg": seg}, suffix="overlap", extension=".tsv", **sink
    ), name="ds_overlap")
    workflow.connect([
        (warp_labels, overlap, [("out_file", "warped_labels")]),
        (overlap, ds_overlap, [("out_table", "in_file")]),
    ])
    if transform:
        ds_dseg = pe.Node(DerivativesSink(
            entities={**entities, "space": fixed.space, "seg": seg}, suffix="dseg", extension=".nii.gz", **sink
        ), name="ds_dseg")
        workflow.connect([
            (inputnode, warp_labels, [("forward_transform", "transform")]),
            (warp_labels, ds_dseg, [("out_file", "in_file")]),
            (merge, ds_overlap, [("out", "json_files")]),
        ])


def _init_original_wf(
    *, entities: dict, fixed: FixedImage, output_dir: Path, labels: Path, seg: str, metadata: dict
) -> pe.Workflow:
    """The "original" overlap: labels resampled through scanner coordinates, no transform."""
    workflow = pe.Workflow(name="evaluate_original_wf")
    sink = {"base_directory": str(output_dir), "metadata": {**metadata, "Method": "original"}}
    _add_overlap(workflow, None, labels=labels, fixed=fixed, entities={**entities, "desc": "original"}, seg=seg,
                 sink=sink, transform=False)
    return workflow
