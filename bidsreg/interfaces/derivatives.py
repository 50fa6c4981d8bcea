"""Nipype interfaces that file a result into the BIDS derivatives dataset: each file with its
sidecar into a staging folder (:class:`DerivativesSink`), then all of one result's files into
the dataset together (:class:`PublishDerivatives`), so that a result appears whole or not at all.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..atomic import atomic_output
from ..errors import OutputWriteError

__all__ = ["DerivativesSink", "PublishDerivatives"]


class _SinkInputSpec(BaseInterfaceInputSpec):
    base_directory = Directory(mandatory=True, desc="the derivatives dataset (output_dir)")
    in_file = File(exists=True, mandatory=True, desc="file to file")
    entities = traits.Dict(mandatory=True, desc="pybids entities of the name (subject, session, space, desc, ...)")
    suffix = traits.Str(mandatory=True, desc="T1w, xfm, dseg, jacobian, overlap")
    extension = traits.Str(mandatory=True, desc=".nii.gz, .h5, .tsv")
    metadata = traits.Dict(desc="sidecar fields")
    json_files = InputMultiObject(File(exists=True), desc="JSON objects merged into the sidecar, in order")
    staging = Directory(desc="write under this folder instead of base_directory, by the same relative name "
                             "(a PublishDerivatives node moves the files in)")


class _SinkOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the file in the derivatives dataset (or in the staging folder)")
    out_sidecar = File(exists=True, desc="its JSON sidecar")


class DerivativesSink(SimpleInterface):
    """Copy (or hard-link) ``in_file`` to its BIDS derivatives name, atomically, and write its
    JSON sidecar; it always runs, so a file deleted from the output is written again on rerun.
    A file that cannot be written raises :class:`~bidsreg.errors.OutputWriteError` (the file,
    the cause, what to do)."""

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        from ..bids.derivatives import derivative_path

        entities, suffix = self.inputs.entities, self.inputs.suffix
        root = self.inputs.staging if self.inputs.staging else self.inputs.base_directory
        target = derivative_path(root, entities, suffix, self.inputs.extension)
        sidecar = dict(self.inputs.metadata) if self.inputs.metadata else {}
        for path in self.inputs.json_files or []:
            with open(path) as handle:
                sidecar.update(json.load(handle))
        sidecar_file = derivative_path(root, entities, suffix, ".json")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(target) as tmp:
                try:
                    os.link(self.inputs.in_file, tmp)
                except OSError:  # another file system, or links not allowed
                    shutil.copyfile(self.inputs.in_file, tmp)
            with atomic_output(sidecar_file) as tmp:
                tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        except OSError as error:
            raise OutputWriteError(target, error) from None
        self._results["out_file"] = str(target)
        self._results["out_sidecar"] = str(sidecar_file)
        return runtime


class _PublishInputSpec(BaseInterfaceInputSpec):
    base_directory = Directory(mandatory=True, desc="the derivatives dataset (output_dir)")
    staging = Directory(mandatory=True, desc="where the sinks of one result wrote its files")
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="the staged files; the last one marks the result complete and moves last")


class _PublishOutputSpec(TraitedSpec):
    out_files = OutputMultiObject(File(exists=True), desc="the files in the derivatives dataset, in order")


class PublishDerivatives(SimpleInterface):
    """Move one result's staged files (a subject's method: warped image, transforms, Jacobian,
    labels, overlap table, sidecars) into the derivatives dataset, each by a rename on the same
    file system, the one that marks it complete (its overlap table, or its forward transform)
    last: a result is whole once that file is there, and until then the group level reports it
    missing and a rerun completes it."""

    input_spec = _PublishInputSpec
    output_spec = _PublishOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        staging, base = Path(self.inputs.staging), Path(self.inputs.base_directory)
        targets = []
        for staged in map(Path, self.inputs.in_files):
            target = base / staged.relative_to(staging)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
            except OSError as error:
                raise OutputWriteError(target, error) from None
            targets.append(str(target))
        self._results["out_files"] = targets
        return runtime
