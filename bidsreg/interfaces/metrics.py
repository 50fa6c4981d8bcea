"""Nipype interfaces of the accuracy and regularity measures (bidsreg.metrics does the maths)."""
from __future__ import annotations

import json
import os

import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec

from ..atomic import atomic_output

__all__ = ["JacobianStats", "LabelOverlap"]


class _OverlapInputSpec(BaseInterfaceInputSpec):
    warped_labels = File(exists=True, mandatory=True, desc="moving label map on the fixed grid")
    fixed_labels = File(exists=True, mandatory=True, desc="fixed label map")
    lut = File(exists=True, desc="BIDS dseg.tsv lookup table (label names)")


class _OverlapOutputSpec(TraitedSpec):
    out_table = File(exists=True, desc="TSV, one row per label of the fixed map")


class LabelOverlap(SimpleInterface):
    """Klein et al. (2009) overlap measures and HD95 per label."""

    input_spec = _OverlapInputSpec
    output_spec = _OverlapOutputSpec

    def _run_interface(self, runtime):
        from ..image import load_volume
        from ..metrics import overlap_table, read_lut

        warped = load_volume(self.inputs.warped_labels, labels=True)
        fixed = load_volume(self.inputs.fixed_labels, labels=True)
        lut = read_lut(self.inputs.lut) if self.inputs.lut else None
        table = overlap_table(warped.data, fixed.data, spacing=fixed.spacing, lut=lut)
        self._results["out_table"] = os.path.join(os.getcwd(), "overlap.tsv")
        with atomic_output(self._results["out_table"]) as tmp:
            table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
        return runtime


class _JacobianInputSpec(BaseInterfaceInputSpec):
    transform = File(exists=True, mandatory=True, desc="forward ITK composite (.h5) with a field")
    reference = File(exists=True, mandatory=True, desc="fixed image (its non-zero voxels are the brain)")
    mask = File(exists=True, desc="fixed brain mask (default: the reference's non-zero voxels)")


class _JacobianOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="Jacobian determinant on the fixed grid")
    out_stats = File(exists=True, desc="JSON: FoldingPercent, SDlogJ, JacobianMin, JacobianMax")


class JacobianStats(SimpleInterface):
    """Jacobian determinant of a deformable transform and its folding/SDlogJ in the fixed brain."""

    input_spec = _JacobianInputSpec
    output_spec = _JacobianOutputSpec

    def _run_interface(self, runtime):
        from ..image import load_volume, save_volume
        from ..metrics import jacobian_stats, world_jacobian_determinant
        from ..transform import Transform

        transform = Transform.read(self.inputs.transform)
        if not transform.deformable:
            raise ValueError(f"{self.inputs.transform}: an affine transform has no Jacobian map to measure")
        reference = load_volume(self.inputs.mask if self.inputs.mask else self.inputs.reference, labels=bool(self.inputs.mask))
        # The map as it is applied to the fixed grid's voxels, whatever grid its field is stored on.
        field_affine = reference.affine
        displacement = transform.on_grid(reference.grid).displacement
        det = world_jacobian_determinant(displacement, field_affine).astype(np.float32)
        stats = jacobian_stats(det, reference.data > 0)
        cwd = os.getcwd()
        self._results["out_file"] = os.path.join(cwd, "jacobian.nii.gz")
        self._results["out_stats"] = os.path.join(cwd, "jacobian.json")
        save_volume(self._results["out_file"], det, field_affine)
        names = {"folding_percent": "FoldingPercent", "sdlogj": "SDlogJ", "jacobian_min": "JacobianMin", "jacobian_max": "JacobianMax"}
        with atomic_output(self._results["out_stats"]) as tmp:
            tmp.write_text(json.dumps({names[k]: round(v, 6) for k, v in stats.items()}, indent=2) + "\n")
        return runtime
