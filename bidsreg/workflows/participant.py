"""The participant workflow: one T1w image registered to the fixed image with each method.

Every method's registration node writes the same pair of ITK composite transforms, and each
branch feeds the same evaluation sub-workflow (:func:`init_evaluate_wf`): warp the T1w
(linear) and the label map (nearest), measure the overlap with the fixed labels and the
Jacobian of deformable transforms, and file everything as BIDS derivatives.

A sketch for sub-10 with ``--methods cnn,antssyn`` and labels::

    cnn_global ──> evaluate_cnnaffine_wf
        └──> cnn_local ──> evaluate_cnn_wf
    ants_antssyn ──> evaluate_antssyn_wf
    (identity) ──> evaluate_original_wf  (labels through scanner coordinates: "original")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nipype.pipeline import engine as pe

from ..baselines import ANTS_TRANSFORMS
from ..bids.layout import FixedImage
from . import DEFORMABLE, METHODS
from ..interfaces.apply import ApplyTransform, MaskImage
from ..interfaces.derivatives import DerivativesSink
from ..interfaces.metrics import JacobianStats, LabelOverlap
from ..interfaces.registration import ANTsRegistration, CNNGlobal, CNNLocal

__all__ = ["RunSettings", "init_evaluate_wf", "init_participant_wf", "workflow_name"]

#: Peak memory (GB) of each registration of a 1 mm 256x256x160 pair (OASIS run of the README),
#: so that MultiProc (``--mem-gb``) does not start more of them than fit.
MEMORY_GB = {"cnnaffine": 1.8, "cnn": 2.5, "antsaffine": 1.8, "antssyn": 2.5}
#: Entities of an input T1w that its derivatives keep.
_KEPT = ("subject", "session", "acquisition", "ceagent", "reconstruction", "run")


@dataclass(frozen=True)
class RunSettings:
    """How the methods run (from the command line).

    Attributes
    ----------
    methods : tuple of str
        ``cnn``, ``antsaffine``, ``antssyn``; ``cnn`` also yields ``cnnaffine``.
    model : Path or None
        The checkpoint (needed with ``cnn``).
    seg : str
        ``seg-`` label of label maps and overlap tables (the ``--labels-desc``).
    device : str
    omp_nthreads : int
        Threads of each registration.
    seed : int
    affine_iterations, syn_iterations : tuple of int or None
        ANTs iterations per level (None: antspyx defaults).
    instance_steps : int
        Local instance optimisation of the CNN (0: off).
    """

    methods: tuple[str, ...]
    model: Path | None = None
    seg: str = "labels"
    device: str = "auto"
    omp_nthreads: int = 1
    seed: int = 0
    affine_iterations: tuple[int, ...] | None = None
    syn_iterations: tuple[int, ...] | None = None
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
    if "cnn" in settings.methods and settings.model is None:
        raise ValueError("the cnn method needs a model (a bidsreg checkpoint)")
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
    threads = settings.omp_nthreads
    if "cnn" in settings.methods:
        cnn = {"fixed": str(fixed.path), "model": str(settings.model), "device": settings.device, "num_threads": threads}
        stage1 = pe.Node(CNNGlobal(**cnn), name="cnn_global", n_procs=threads, mem_gb=MEMORY_GB["cnnaffine"])
        stage2 = pe.Node(CNNLocal(instance_steps=settings.instance_steps, **cnn), name="cnn_local", n_procs=threads,
                         mem_gb=MEMORY_GB["cnn"])
        connect_moving(stage1)
        connect_moving(stage2)
        workflow.connect([(stage1, stage2, [("forward_transform", "global_transform"), ("report", "global_report")])])
        branches["cnnaffine"], branches["cnn"] = stage1, stage2
    for method in ANTS_TRANSFORMS:
        if method in settings.methods:
            ants = pe.Node(
                ANTsRegistration(fixed=str(fixed.path), method=method, seed=settings.seed, num_threads=threads),
                name=f"ants_{method}",
                n_procs=threads,
                mem_gb=MEMORY_GB[method],
            )
            if settings.affine_iterations:
                ants.inputs.affine_iterations = list(settings.affine_iterations)
            if settings.syn_iterations:
                ants.inputs.syn_iterations = list(settings.syn_iterations)
            connect_moving(ants)
            branches[method] = ants

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
    if method in DEFORMABLE:
        jacobian = pe.Node(JacobianStats(reference=str(fixed.path)), name="jacobian")
        ds_jacobian = pe.Node(DerivativesSink(
            entities={**described, "space": space}, suffix="jacobian", extension=".nii.gz", **sink
        ), name="ds_jacobian")
        workflow.connect([
            (inputnode, jacobian, [("forward_transform", "transform")]),
            (jacobian, ds_jacobian, [("out_file", "in_file"), ("out_stats", "json_files")]),
        ])
    merge = _merge_reports(workflow, inputnode, jacobian if method in DEFORMABLE else None)
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
