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
from .figures import method_boxplot, overlay, region_boxplot
from .requests import REQUEST_COLUMNS, describe, read_requests, reconcile
from .tables import cnn_stages, label_table, method_table, ordered_methods, qc_flags, shared_images, wilcoxon_table

__all__ = ["run_group"]

LOGGER = logging.getLogger("bidsreg")
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


def _overlays(output_dir: Path, figures: Path, subjects: pd.DataFrame) -> list[Path]:
    """A before/after overlay per subject, for the CNN when it ran (else the first method)."""
    from ..image import load_volume
    from ..transform import Transform

    registered = [m for m in ordered_methods(subjects["method"].unique()) if m not in ("original", "cnnaffine")]
    if not registered:
        return []
    method = "cnn" if "cnn" in registered else registered[0]
    out, fixed_images = [], {}  # one fixed image for every subject, usually: read it once
    for warped in sorted(output_dir.glob(f"sub-*/**/anat/*_desc-{method}_T1w.nii.gz")):
        sidecar = json.loads(sidecar_path(warped).read_text())
        fixed_path, sources = sidecar.get("FixedImage"), sidecar.get("Sources", [])
        if not fixed_path or not sources or not Path(fixed_path).is_file() or not Path(sources[0]).is_file():
            LOGGER.warning("%s: no overlay (its fixed or source image is no longer where the sidecar says)", warped)
            continue
        if fixed_path not in fixed_images:
            fixed_images[fixed_path] = load_volume(fixed_path)
        fixed, moving, after = fixed_images[fixed_path], load_volume(sources[0]), load_volume(warped)
        before = Transform(np.eye(4)).apply(moving, fixed.grid)
        entities = parse_name(warped.name)
        name = "_".join(f"{key[:3]}-{entities[key]}" for key in ("subject", "session", "run") if key in entities)
        target = figures / f"{name}_desc-{method}_overlay.png"
        overlay(fixed.data, before, after.data, target, f"{name}: fixed (green) and moving (magenta), {method}")
        out.append(target)
    return out


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
    fixed = ", ".join(sorted(subjects["space"].dropna().unique())) or "the fixed image"
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
        region_boxplot(labels, figures / "dice_per_region.png")
        images += [figures / "dice_per_method.png", figures / "dice_per_region.png"]
    overlays = _overlays(output_dir, figures, subjects)
    versions = package_versions()
    flagged = qc[qc["qc"] != "ok"]
    unstripped = subjects[(subjects["method"] != "original") & (subjects["skull_stripped"] != True)]  # noqa: E712
    environment = Environment(loader=FileSystemLoader(REPORT_TEMPLATE.parent), autoescape=select_autoescape(["html"]))
    page = environment.get_template(REPORT_TEMPLATE.name).render(
        n_images=len(subjects[["subject", "session", "run"]].drop_duplicates()),
        methods=ordered_methods(subjects["method"].unique()),
        spaces=sorted(subjects["space"].dropna().unique()),
        unstripped=sorted({f"sub-{s}" for s in unstripped["subject"]}),
        tables={"stages": _table(stages), "methods": _table(_display(methods)), "tests": _table(tests),
                "flagged": _table(flagged) if not flagged.empty else "", "labels": _table(per_label),
                "missing": _table(missing) if not missing.empty else ""},
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
