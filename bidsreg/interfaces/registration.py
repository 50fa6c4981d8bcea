"""The Nipype interface of every registration method (of :data:`bidsreg.methods.table.TABLE`).

Each method writes the same outputs, so that every branch of the participant workflow feeds
the same apply and metrics nodes: ``forward_transform`` (ITK composite ``.h5``, fixed -> moving
points: warps the moving image onto the fixed one), ``inverse_transform`` (moving -> fixed
points: brings fixed-space images such as atlas labels onto the moving image) and ``report``
(JSON: method, seconds of the registration itself, peak memory, parameters, and for a field the
grid it is written on: see :func:`bidsreg.transform.output_transform`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

__all__ = ["Registration"]


class _RegistrationInputSpec(BaseInterfaceInputSpec):
    fixed = File(exists=True, mandatory=True, desc="fixed image (NIfTI)")
    moving = File(exists=True, mandatory=True, desc="moving image (NIfTI)")
    method = traits.Str(mandatory=True, desc="a method of bidsreg.methods.table.TABLE")
    stage = traits.Str(desc="the stage of the method to run (default: the method itself)")
    parameters = traits.Dict(traits.Str, traits.Any, desc="its configuration's parameters (default: its defaults)")
    parameter_files = InputMultiObject(File(exists=True), desc="files the parameters name (their content is part of "
                                                               "this step's cache key: a retrained model reruns it)")
    start_transform = File(exists=True, desc="forward transform (.h5) of the stage this one starts from")
    start_report = File(exists=True, desc="report of that stage (its seconds count too)")
    seed = traits.Int(0, usedefault=True, desc="random seed")
    num_threads = traits.Int(1, usedefault=True, desc="CPU threads")
    device = traits.Enum("auto", "cpu", "cuda", usedefault=True, desc="torch device of the networks")
    output_resolution = traits.Enum("compact", "full", usedefault=True,
                                    desc="grid of the fields written: the method's own (compact) or the fixed image's")


class _RegistrationOutputSpec(TraitedSpec):
    forward_transform = File(exists=True, desc="ITK composite, fixed -> moving points")
    inverse_transform = File(exists=True, desc="ITK composite, moving -> fixed points")
    report = File(exists=True, desc="JSON: method, seconds, peak memory, parameters")


class Registration(SimpleInterface):
    """Run one stage of a registration method and write its transform pair and report."""

    input_spec = _RegistrationInputSpec
    output_spec = _RegistrationOutputSpec

    def _run_interface(self, runtime):
        import numpy as np
        from nibabel.affines import voxel_sizes

        from ..atomic import atomic_output
        from ..methods.base import Context, RegistrationResult, build_config
        from ..methods.table import TABLE
        from ..profiling import measure
        from ..transform import Transform, output_transform

        if self.inputs.method not in TABLE:
            raise ValueError(f"unknown method {self.inputs.method!r}; choose from {', '.join(TABLE)}")
        method = TABLE[self.inputs.method]
        stages = {stage.name: stage for stage in method.stages}
        name = self.inputs.stage or method.name
        if name not in stages:
            raise ValueError(f"the {method.name} method has no stage {name!r}; its stages: {', '.join(stages)}")
        stage = stages[name]
        config = build_config(method.config, dict(self.inputs.parameters or {}))
        context = Context(seed=self.inputs.seed, threads=self.inputs.num_threads, device=self.inputs.device)
        start = {}
        if self.inputs.start_transform:
            report = json.loads(Path(self.inputs.start_report).read_text())
            start["start"] = RegistrationResult(Transform.read(self.inputs.start_transform), report["seconds"],
                                                report["parameters"])
        with measure() as usage:
            result = stage.register(self.inputs.fixed, self.inputs.moving, config, context, **start)
        cwd = os.getcwd()
        self._results.update(forward_transform=os.path.join(cwd, "forward_xfm.h5"),
                             inverse_transform=os.path.join(cwd, "inverse_xfm.h5"),
                             report=os.path.join(cwd, "registration.json"))
        transform = output_transform(result.transform, self.inputs.fixed, method.field_spacing,
                                     self.inputs.output_resolution)
        transform.write(self._results["forward_transform"], self._results["inverse_transform"])
        report = {"method": stage.name, "seconds": round(float(result.seconds), 3),
                  "peak_memory_mb": round(usage.peak_memory_mb, 1), "parameters": result.parameters}
        if transform.deformable:
            grid = transform.field_grid
            report["field_grid"] = {"resolution": self.inputs.output_resolution, "shape": list(grid.shape),
                                    "spacing_mm": np.round(voxel_sizes(grid.affine), 4).tolist()}
        with atomic_output(self._results["report"]) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        return runtime
