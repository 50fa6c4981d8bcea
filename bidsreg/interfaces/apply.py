"""Nipype interfaces that resample images: apply a transform file, apply a brain mask."""
from __future__ import annotations

import os

import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

__all__ = ["ApplyTransform", "MaskImage"]


class _ApplyInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image or label map to warp")
    reference = File(exists=True, mandatory=True, desc="image whose grid the output takes")
    transform = File(exists=True, desc="forward ITK composite (.h5); none: scanner coordinates alone")
    interpolation = traits.Enum("linear", "nearest", usedefault=True, desc="nearest for label maps")


class _OutFileSpec(TraitedSpec):
    out_file = File(exists=True)


class ApplyTransform(SimpleInterface):
    """Warp ``in_file`` onto the grid of ``reference`` through a forward transform file."""

    input_spec = _ApplyInputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):
        from ..image import load_volume, save_volume
        from ..transform import Transform

        labels = self.inputs.interpolation == "nearest"
        moving = load_volume(self.inputs.in_file, labels=labels)
        reference = load_volume(self.inputs.reference, labels=True) if labels else load_volume(self.inputs.reference)
        transform = Transform.read(self.inputs.transform) if self.inputs.transform else Transform(np.eye(4))
        warped = transform.apply(moving, reference.grid, nearest=labels)
        self._results["out_file"] = os.path.join(os.getcwd(), "warped.nii.gz")
        save_volume(self._results["out_file"], warped, reference.affine)
        return runtime


class _MaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w image")
    mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")


class MaskImage(SimpleInterface):
    """Zero ``in_file`` outside a brain mask (the networks expect brain-extracted images)."""

    input_spec = _MaskInputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):
        from ..image import load_volume, same_grid, save_volume

        image, mask = load_volume(self.inputs.in_file), load_volume(self.inputs.mask, labels=True)
        if not same_grid(image, mask):
            raise ValueError(f"{self.inputs.mask}: not on the grid of {self.inputs.in_file}; use the mask made for this image")
        self._results["out_file"] = os.path.join(os.getcwd(), "brain.nii.gz")
        save_volume(self._results["out_file"], np.where(mask.data > 0, image.data, 0).astype(np.float32), image.affine)
        return runtime
