"""Nipype interfaces of the registration methods.

Each method writes the same outputs, so that every branch of the participant workflow feeds
the same apply and metrics nodes: ``forward_transform`` (ITK composite ``.h5``, fixed -> moving
points: warps the moving image onto the fixed one), ``inverse_transform`` (moving -> fixed
points: brings fixed-space images such as atlas labels onto the moving image) and ``report``
(JSON: method, seconds of the registration itself, peak memory, parameters).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager

import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..atomic import atomic_output
from ..itk import read_composite, write_composite
from ..methods import TABLE, build_config, resolve
from ..profiling import Usage, measure

__all__ = ["REGISTRATIONS", "CNNGlobal", "CNNLocal", "CNNOneStage", "MethodRegistration"]


class _RegistrationInputSpec(BaseInterfaceInputSpec):
    fixed = File(exists=True, mandatory=True, desc="fixed image (NIfTI)")
    moving = File(exists=True, mandatory=True, desc="moving image (NIfTI)")
    num_threads = traits.Int(1, usedefault=True, desc="CPU threads")


class _RegistrationOutputSpec(TraitedSpec):
    forward_transform = File(exists=True, desc="ITK composite, fixed -> moving points")
    inverse_transform = File(exists=True, desc="ITK composite, moving -> fixed points")
    report = File(exists=True, desc="JSON: method, seconds, peak memory, parameters")


class _CNNInputSpec(_RegistrationInputSpec):
    model = File(exists=True, mandatory=True, desc="bidsreg checkpoint")
    device = traits.Enum("auto", "cpu", "cuda", usedefault=True, desc="torch device")
    instance_steps = traits.Int(0, usedefault=True, desc="instance optimisation steps (0: off)")


class _CNNLocalInputSpec(_CNNInputSpec):
    global_transform = File(exists=True, mandatory=True, desc="forward transform of the global stage (.h5)")
    global_report = File(exists=True, mandatory=True, desc="report of the global stage (its seconds count too)")


def _write_outputs(
    results: dict,
    method: str,
    affine: np.ndarray,
    displacement: np.ndarray | None,
    inverse_displacement: np.ndarray | None,
    reference: np.ndarray | None,
    usage: Usage,
    parameters: dict,
    seconds: float | None = None,
) -> None:
    """Write the transform pair and the JSON report in the working directory; fill ``results``.

    ``seconds`` replaces ``usage.seconds`` when the step's own time is known better (ANTs'
    registration alone, or both CNN stages).
    """
    cwd = os.getcwd()
    results["forward_transform"] = os.path.join(cwd, "forward_xfm.h5")
    results["inverse_transform"] = os.path.join(cwd, "inverse_xfm.h5")
    results["report"] = os.path.join(cwd, "registration.json")
    write_composite(results["forward_transform"], affine, displacement, reference)
    write_composite(results["inverse_transform"], affine, inverse_displacement, reference, inverse=True)
    report = {
        "method": method,
        "seconds": round(float(usage.seconds if seconds is None else seconds), 3),
        "peak_memory_mb": round(usage.peak_memory_mb, 1),
        "parameters": parameters,
    }
    with atomic_output(results["report"]) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


def _cnn_parameters(inputs) -> dict:
    return {"model": os.path.basename(inputs.model), "device": inputs.device, "instance_steps": inputs.instance_steps}


@contextmanager
def _network(inputs):
    """The model, with torch on ``num_threads`` threads until the block ends (a node run in
    the calling process must not change its thread count for what runs next)."""
    import torch

    from ..registration import RegistrationModel

    before = torch.get_num_threads()
    torch.set_num_threads(inputs.num_threads)
    try:
        yield RegistrationModel.from_checkpoint(inputs.model, inputs.device)
    finally:
        torch.set_num_threads(before)


class CNNGlobal(SimpleInterface):
    """Stage 1: the global (affine) network, inverse-consistent (``cnnaffine``)."""

    input_spec = _CNNInputSpec
    output_spec = _RegistrationOutputSpec

    def _run_interface(self, runtime):
        from ..registration import register_global

        with _network(self.inputs) as model, measure() as usage:
            result = register_global(self.inputs.fixed, self.inputs.moving, model,
                                     global_instance_steps=self.inputs.instance_steps)
        _write_outputs(self._results, "cnnaffine", result.affine, None, None, None, usage, _cnn_parameters(self.inputs))
        return runtime


class CNNLocal(SimpleInterface):
    """Stage 2: the deformable network from the global stage's affine (``cnn``)."""

    input_spec = _CNNLocalInputSpec
    output_spec = _RegistrationOutputSpec

    def _run_interface(self, runtime):
        from ..registration import register

        affine, _, _ = read_composite(self.inputs.global_transform)
        with open(self.inputs.global_report) as handle:
            global_seconds = json.load(handle)["seconds"]
        with _network(self.inputs) as model, measure() as usage:
            result = register(self.inputs.fixed, self.inputs.moving, model, affine=affine, inverse=True,
                              local_instance_steps=self.inputs.instance_steps)
        _write_outputs(  # seconds of both stages: what the user waits for
            self._results, "cnn", result.affine, result.displacement, result.inverse_displacement,
            result.fixed_affine, usage, _cnn_parameters(self.inputs), seconds=global_seconds + usage.seconds,
        )
        return runtime


class CNNOneStage(SimpleInterface):
    """The deformable network alone, from the centre-of-mass alignment (``voxelmorph``)."""

    input_spec = _CNNInputSpec
    output_spec = _RegistrationOutputSpec

    def _run_interface(self, runtime):
        from ..registration import register

        with _network(self.inputs) as model, measure() as usage:
            result = register(self.inputs.fixed, self.inputs.moving, model, inverse=True,
                              local_instance_steps=self.inputs.instance_steps)
        _write_outputs(self._results, "voxelmorph", result.affine, result.displacement, result.inverse_displacement,
                       result.fixed_affine, usage, _cnn_parameters(self.inputs))
        return runtime


class _MethodInputSpec(_RegistrationInputSpec):
    method = traits.Enum(*(name for name, m in TABLE.items() if m.function), mandatory=True, desc="bidsreg method")
    parameters = traits.Dict(traits.Str, traits.Any, desc="the method's parameters (see bidsreg.methods.OPTIONS)")
    seed = traits.Int(0, usedefault=True, desc="random seed")


class MethodRegistration(SimpleInterface):
    """A registration function of the method table (the ANTs, B-spline and Demons baselines)."""

    input_spec = _MethodInputSpec
    output_spec = _RegistrationOutputSpec

    def _run_interface(self, runtime):
        method = TABLE[self.inputs.method]
        parameters = dict(self.inputs.parameters)
        config = (build_config(method.name, parameters),) if method.config else ()
        keywords = {} if method.config else parameters
        with measure() as usage:
            result = resolve(method.function)(
                self.inputs.fixed, self.inputs.moving, *config, seed=self.inputs.seed, threads=self.inputs.num_threads,
                **method.keywords, **keywords,
            )
        _write_outputs(  # seconds of the registration itself, without reading the images
            self._results, method.name, result.affine, result.displacement, result.inverse_displacement,
            result.reference_affine, usage, result.parameters, seconds=result.seconds,
        )
        return runtime


#: Every registration interface (the progress lines of the app pick their nodes by it).
REGISTRATIONS = (CNNGlobal, CNNLocal, CNNOneStage, MethodRegistration)
