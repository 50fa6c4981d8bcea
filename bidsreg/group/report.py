"""The group level: tables (TSV), figures (PNG) and one self-contained ``report.html``."""
from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from ..atomic import atomic_output
from ..bids.derivatives import parse_name, sidecar_path
from ..data import DEFAULT_MODEL, REPORT_TEMPLATE
from ..errors import MissingInputError
from ..methods.table import TABLE
from ..provenance import versions as package_versions
from .collect import collect
from .figures import method_boxplot, overlay, region_profile
from .requests import REQUEST_COLUMNS, describe, read_requests, reconcile
from .tables import cnn_stages, label_table, method_table, ordered_methods, qc_flags, shared_images, wilcoxon_table

__all__ = ["run_group"]

LOGGER = logging.getLogger("bidsreg")
#: The most images the report shows overlays of.
MAX_OVERLAYS = 5
#: The most rows of a QC list in the report (the TSV tables hold them all).
MAX_LISTED = 20
_IDENTITY = ["subject", "session", "run"]
#: Sidecar parameters naming the software (and its version) that ran a method.
_VERSION_KEYS = ("antspyx", "simpleitk", "elastix")


def _write_tsv(table: pd.DataFrame, path: Path) -> None:
    with atomic_output(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")


def _mean_sd(table: pd.DataFrame, measure: str, digits: int) -> pd.Series:
    mean, sd = table[f"{measure}_mean"], table[f"{measure}_sd"]
    return pd.Series([
        "" if pd.isna(m) else (f"{m:.{digits}f}" if pd.isna(s) else f"{m:.{digits}f} ± {s:.{digits}f}")
        for m, s in zip(mean, sd)
    ], index=table.index)


def _display(methods: pd.DataFrame) -> pd.DataFrame:
    """The method table as the original work shows it: mean ± sd strings."""
    shown = methods[["seg", "method", "n"]].copy()
    for measure, title, digits in (("dice", "Dice", 3), ("jaccard", "Jaccard", 3), ("hd95", "HD95 (mm)", 2),
                                   ("dsc30", "DSC30", 3), ("folding_percent", "% folding", 3), ("sdlogj", "SDlogJ", 3),
                                   ("seconds", "seconds / subject", 1), ("peak_memory_mb", "peak MB", 0)):
        shown[title] = _mean_sd(methods, measure, digits)
    return shown


def _display_stages(stages: pd.DataFrame) -> pd.DataFrame:
    """The CNN-stage table with readable columns: mean ± sd strings."""
    if stages.empty:
        return stages
    shown = stages[["seg", "stage", "method", "n"]].copy()
    for measure, title in (("dice", "Dice"), ("jaccard", "Jaccard")):
        shown[title] = _mean_sd(stages, measure, 3)
    return shown


def _fixed_images(output_dir: Path, subjects: pd.DataFrame) -> list[str]:
    """The fixed images as the participant runs were given them (``sub-01``, or a file's path),
    from the transforms' sidecars (``SpatialReference``), with the space label of the
    derivatives' names; the space labels alone where no sidecar says."""
    named = {}
    for path in sorted(output_dir.glob("sub-*/**/anat/*_from-T1w_*_xfm.json")):
        sidecar = json.loads(path.read_text())
        if sidecar.get("SpatialReference") and sidecar.get("Space"):
            named.setdefault(sidecar["Space"], sidecar["SpatialReference"])
    return [f"{named[space]} (space-{space})" if space in named else f"space-{space}"
            for space in sorted(subjects["space"].dropna().unique())]


def _overlay_images(subjects: pd.DataFrame) -> list[tuple]:
    """The images (subject, session, run) the report shows overlays of: all of them up to
    :data:`MAX_OVERLAYS`, else those with the lowest mean Dice over the methods (what QC looks
    at first)."""
    registered = subjects[subjects["method"] != "original"]
    means = registered.groupby(_IDENTITY, dropna=False)["dice"].mean()
    order = means.sort_values(na_position="last", kind="stable") if means.notna().any() else means.sort_index()
    return list(order.index[:MAX_OVERLAYS])


def _overlays(output_dir: Path, figures: Path, subjects: pd.DataFrame) -> list[Path]:
    """Before/after overlays of every method side by side, with the fixed label outlines, for
    the images of :func:`_overlay_images`."""
    from ..image import load_volume
    from ..transform import Transform

    out, volumes = [], {}  # one fixed image (and label map) for every subject, usually: read once

    def volume(path: str, labels: bool = False):
        if path not in volumes:
            volumes[path] = load_volume(path, labels=labels)
        return volumes[path]

    for key in _overlay_images(subjects):
        identity = {entity: value for entity, value in zip(_IDENTITY, key) if pd.notna(value) and value != ""}
        warped = {}
        for path in sorted(output_dir.glob(f"sub-{identity['subject']}/**/anat/*_T1w.nii.gz")):
            entities = parse_name(path.name)
            if all(entities.get(entity) == identity.get(entity) for entity in _IDENTITY) and "desc" in entities:
                warped[entities["desc"]] = path
        warped = {method: warped[method] for method in ordered_methods(warped)}
        name = "_".join(f"{entity[:3]}-{value}" for entity, value in identity.items())
        if not warped:
            continue
        sidecar = json.loads(sidecar_path(next(iter(warped.values()))).read_text())
        fixed_path, sources = sidecar.get("FixedImage"), sidecar.get("Sources", [])
        if not fixed_path or not sources or not Path(fixed_path).is_file() or not Path(sources[0]).is_file():
            LOGGER.warning("%s: no overlay (its fixed or source image is no longer where the sidecars say)", name)
            continue
        fixed = volume(fixed_path)
        labels_path = next((json.loads(p.read_text()).get("FixedLabels") for p in
                            sorted(output_dir.glob(f"sub-{identity['subject']}/**/anat/{name}_*_overlap.json"))), None)
        fixed_labels = volume(labels_path, labels=True).data if labels_path and Path(labels_path).is_file() else None
        moving = {"before": Transform(np.eye(4)).apply(load_volume(sources[0]), fixed.grid)}
        moving.update({method: load_volume(path).data for method, path in warped.items()})
        target = figures / f"{name}_overlay.png"
        overlay(fixed.data, moving, target, f"{name}: fixed (green) and moving (magenta)"
                + (", fixed label outlines (yellow)" if fixed_labels is not None else ""), fixed_labels)
        out.append(target)
    return out


def _sorted_regions(per_label: pd.DataFrame) -> pd.DataFrame:
    """The per-region table, each label set's regions from the lowest mean Dice over the
    methods to the highest (the order of the per-region figure)."""
    if per_label.empty:
        return per_label
    methods = [c for c in per_label.columns if c not in ("seg", "label", "name", "original")]
    mean = per_label[methods].mean(axis=1)
    return per_label.assign(_mean=mean).sort_values(["seg", "_mean"], kind="stable").drop(columns="_mean")


def _worst(subjects: pd.DataFrame, count: int = MAX_LISTED) -> pd.DataFrame:
    """The ``count`` registrations with the lowest Dice: what QC looks at first."""
    registered = subjects[(subjects["method"] != "original") & subjects["dice"].notna()]
    columns = [c for c in ("subject", "session", "run", "method", "seg", "dice") if registered[c].notna().any()]
    return registered.nsmallest(count, "dice")[columns]


def _figure(path: Path) -> dict:
    """A PNG figure to embed: its name and base64 data."""
    return {"name": path.name, "data": base64.b64encode(path.read_bytes()).decode("ascii")}


def _table(table: pd.DataFrame, digits: int = 3) -> Markup:
    """A table as HTML (pandas escapes its cells)."""
    if table.empty:
        return Markup("<p>(none)</p>")
    return Markup(table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.{digits}g}" if abs(v) < 1e-3 else f"{v:.{digits}f}",
                         border=0, classes="table"))


#: How the methods text names what a local network predicts (its sidecar's ``field``).
_FIELD_TEXT = {"velocity": "stationary velocity field integrated by scaling and squaring (a diffeomorphism, "
                           "with the exact inverse)",
               "displacement": "displacement field"}


def _model_text(name: str) -> str:
    """How the methods text names the checkpoint: the shipped default weights are said to be so."""
    if name == DEFAULT_MODEL.name:
        return (f"{name}, the default weights shipped with bidsreg, trained without labels on synthetic brains "
                "made from the MNI152 template; see its model card")
    return name


def _method_sentence(method: str, parameters: dict, versions: dict) -> str:
    """A method's sentence (:attr:`bidsreg.methods.table.Method.text`) filled from its sidecar parameters."""
    settings = ", ".join(f"{key}={json.dumps(value)}" for key, value in parameters.items()
                         if key not in _VERSION_KEYS and not isinstance(value, dict))
    version = next((str(parameters[key]) for key in _VERSION_KEYS if key in parameters), "")
    return TABLE[method].text.format(
        name=method, version=version or versions.get("antspyx", ""), kind=parameters.get("type_of_transform", ""),
        model=_model_text(parameters.get("model", "")), parameters=settings or "default parameters",
        field=_FIELD_TEXT.get(parameters.get("field"), _FIELD_TEXT["displacement"]),
    )


def _boilerplate(output_dir: Path, subjects: pd.DataFrame, versions: dict) -> str:
    """A methods paragraph to cite, from what the sidecars say was run."""
    parameters = {}
    for path in sorted(output_dir.glob("sub-*/**/anat/*_from-T1w_*_xfm.json")):
        sidecar = json.loads(path.read_text())
        parameters.setdefault(sidecar.get("method"), sidecar.get("parameters", {}))
    fixed = ", ".join(_fixed_images(output_dir, subjects)) or "the fixed image"
    n = subjects[["subject", "session", "run"]].drop_duplicates().shape[0]
    text = [
        f"{n} T1-weighted image(s) were registered to {fixed} with bidsreg {versions.get('bidsreg', '')} "
        f"(Nipype {versions.get('nipype', '')}, PyTorch {versions.get('torch', '')}, pybids {versions.get('pybids', '')})."
    ]
    for method in ordered_methods(list(parameters)):
        if method in TABLE and TABLE[method].text:
            text.append(_method_sentence(method, parameters[method], versions))
    text.append(
        "Label overlap follows Klein et al. (2009) (target, mean/Dice, union/Jaccard, false negative and false "
        "positive), with the 95th percentile symmetric surface Hausdorff distance; regularity is the percentage of "
        "voxels with a non-positive Jacobian determinant and SDlogJ inside the fixed brain. Methods were compared "
        "with paired two-sided Wilcoxon signed-rank tests (SciPy)."
    )
    return " ".join(text)


def _rows_of(labels: pd.DataFrame, shared: pd.DataFrame) -> pd.DataFrame:
    """The per-label rows of the (image, method, label set) results in ``shared``."""
    if labels.empty:
        return labels
    keys = ["subject", "session", "run", "method", "seg"]
    kept = set(shared[keys].fillna("").itertuples(index=False, name=None))
    return labels[[key in kept for key in labels[keys].fillna("").itertuples(index=False, name=None)]]


def run_group(output_dir: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Write ``output_dir/group/``: TSV tables, PNG figures and ``report.html``.

    The methods are compared on the images that have a result of each (paired); every result
    the participant runs were asked for (:mod:`bidsreg.group.requests`) must be there, unless
    ``allow_missing``: then the missing ones are listed in the QC table and the report.

    Raises
    ------
    MissingInputError
        When ``output_dir`` holds no participant results, or some requested results are
        missing and not ``allow_missing``.
    """
    output_dir = Path(output_dir)
    subjects, labels = collect(output_dir)
    if subjects.empty:
        raise MissingInputError(
            f"{output_dir}: no participant results (no sub-*/anat/*_xfm.h5 or *_overlap.tsv); "
            "run 'bidsreg BIDS_DIR OUTPUT_DIR participant' first"
        )
    requests = read_requests(output_dir)
    missing = pd.DataFrame(columns=list(REQUEST_COLUMNS))
    if requests is None:
        LOGGER.info("%s: no record of what the participant runs were asked for (outputs of an older bidsreg); "
                    "the tables use the results that are there", output_dir)
    else:
        subjects, missing = reconcile(subjects, requests)
        if not missing.empty and not allow_missing:
            raise MissingInputError(
                f"{output_dir}: {len(missing)} of the {len(requests)} requested results are missing "
                f"({describe(missing)}); rerun the participant command (it resumes), or pass --allow-missing "
                "to compare the methods on the images they share"
            )
        if not missing.empty:
            LOGGER.warning("%d requested result(s) missing (%s); the methods are compared on the images they share",
                           len(missing), describe(missing))
    group = output_dir / "group"
    figures = group / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    shared = shared_images(subjects)
    methods = method_table(shared)
    stages = cnn_stages(methods)
    per_label = label_table(_rows_of(labels, shared))
    tests = wilcoxon_table(subjects)
    qc = qc_flags(subjects)
    if not missing.empty:
        qc = pd.concat([qc, missing.assign(seg=None, dice=None, qc="missing: no result")[list(qc.columns)]],
                       ignore_index=True)
    for name, table in (("subjects", subjects), ("methods", methods), ("cnn_stages", stages), ("labels", per_label),
                        ("wilcoxon", tests), ("qc", qc)):
        _write_tsv(table, group / f"{name}.tsv")

    images = []
    if subjects["dice"].notna().any():
        method_boxplot(subjects, figures / "dice_per_method.png")
        region_profile(labels, figures / "dice_per_region.png")
        images += [figures / "dice_per_method.png", figures / "dice_per_region.png"]
    overlays = _overlays(output_dir, figures, subjects)
    versions = package_versions()
    flagged = qc[qc["qc"] != "ok"]
    unstripped = sorted({f"sub-{s}" for s in subjects[(subjects["method"] != "original")
                                                       & (subjects["skull_stripped"] != True)]["subject"]})  # noqa: E712
    environment = Environment(loader=FileSystemLoader(REPORT_TEMPLATE.parent), autoescape=select_autoescape(["html"]))
    page = environment.get_template(REPORT_TEMPLATE.name).render(
        n_images=len(subjects[["subject", "session", "run"]].drop_duplicates()),
        methods=ordered_methods(subjects["method"].unique()),
        fixed=_fixed_images(output_dir, subjects),
        unstripped=unstripped[:MAX_LISTED], more_unstripped=max(len(unstripped) - MAX_LISTED, 0),
        tables={"stages": _table(_display_stages(stages)), "methods": _table(_display(methods)), "tests": _table(tests),
                "flagged": _table(flagged.head(MAX_LISTED)) if not flagged.empty else "",
                "worst": _table(_worst(subjects)) if subjects["dice"].notna().any() else "",
                "labels": _table(_sorted_regions(per_label)),
                "missing": _table(missing.head(MAX_LISTED)) if not missing.empty else ""},
        more_flagged=max(len(flagged) - MAX_LISTED, 0), more_missing=max(len(missing) - MAX_LISTED, 0),
        left_out=len(subjects) - len(shared),
        figures=[_figure(p) for p in images],
        overlays=[_figure(p) for p in overlays],
        boilerplate=_boilerplate(output_dir, subjects, versions),
        versions=versions,
    )
    report = group / "report.html"
    with atomic_output(report) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return report
