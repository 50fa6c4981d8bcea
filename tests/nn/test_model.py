"""A trained model loaded from its checkpoint (bidsreg.nn.model)."""
from __future__ import annotations

import pytest
import torch

from bidsreg.methods.training import write_checkpoint
from bidsreg.nn.grid import PreprocessConfig
from bidsreg.nn.model import RegistrationModel, resolve_device
from bidsreg.nn.train import train


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


@pytest.mark.parametrize("global_stage", [True, False], ids=["two-stage", "one-stage"])
def test_a_model_rebuilds_its_networks_and_settings(phantom, make_config, tmp_path, global_stage):
    config = make_config(affine_steps=2 if global_stage else 0, deformable_steps=1, smoothness=0.3,
                         global_stage=global_stage)
    payload = train([phantom.volume(), phantom.volume(world_map=None, deformed=True)], config, device="cpu",
                    progress=False)
    write_checkpoint(tmp_path / "model.pt", payload)
    model = RegistrationModel.from_checkpoint(tmp_path / "model.pt", device="cpu")
    assert model.global_stage is global_stage and model.smoothness == 0.3 and model.window == 9
    assert model.preprocess == PreprocessConfig(spacing=4.0) and model.source == str(tmp_path / "model.pt")
    assert not model.affine_net.training and not model.deformable_net.training
    for key, value in model.deformable_net.state_dict().items():
        assert torch.equal(value, payload["state"]["deformable"][key])
