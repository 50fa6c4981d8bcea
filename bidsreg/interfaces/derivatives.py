"""Nipype interface that files a result into the BIDS derivatives dataset, with its sidecar."""
from __future__ import annotations

import json
import os
import shutil

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..atomic import atomic_output

__all__ = ["DerivativesSink"]


class _SinkInputSpec(BaseInterfaceInputSpec):
    base_directory = Directory(mandatory=True, desc="the derivatives dataset (output_dir)")
    in_file = File(exists=True, mandatory=True, desc="file to file")
    entities = traits.Dict(mandatory=True, desc="pybids entities of the name (subject, session, space, desc, ...)")
    suffix = traits.Str(mandatory=True, desc="T1w, xfm, dseg, jacobian, overlap")
    extension = traits.Str(mandatory=True, desc=".nii.gz, .h5, .tsv")
    metadata = traits.Dict(desc="sidecar fields")
    json_files = InputMultiObject(File(exists=True), desc="JSON objects merged into the sidecar, in order")


class _SinkOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the file in the derivatives dataset")
    out_sidecar = File(exists=True, desc="its JSON sidecar")


class DerivativesSink(SimpleInterface):
    """Copy (or hard-link) ``in_file`` to its BIDS derivatives name, atomically, and write its
    JSON sidecar; it always runs, so a file deleted from the output is written again on rerun."""

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        from ..bids.derivatives import derivative_path

        entities, suffix = self.inputs.entities, self.inputs.suffix
        target = derivative_path(self.inputs.base_directory, entities, suffix, self.inputs.extension)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as tmp:
            try:
                os.link(self.inputs.in_file, tmp)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(self.inputs.in_file, tmp)
        sidecar = dict(self.inputs.metadata) if self.inputs.metadata else {}
        for path in self.inputs.json_files or []:
            with open(path) as handle:
                sidecar.update(json.load(handle))
        sidecar_file = derivative_path(self.inputs.base_directory, entities, suffix, ".json")
        with atomic_output(sidecar_file) as tmp:
            tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        self._results["out_file"] = str(target)
        self._results["out_sidecar"] = str(sidecar_file)
        return runtime
