"""The one-stage ``voxelmorph`` method (bidsreg.methods.voxelmorph)."""
from __future__ import annotations

import numpy as np
import pytest

from bidsreg.data import DEFAULT_MODEL
from bidsreg.methods.base import Context
from bidsreg.methods.training import train_model
from bidsreg.methods.voxelmorph import VoxelMorphConfig, register


@pytest.fixture(scope="module")
def one_stage(phantom_files, make_config, tmp_path_factory):
    path = tmp_path_factory.mktemp("voxelmorph") / "one_stage.pt"
    train_model([phantom_files["fixed"], phantom_files["deformed"]], path,
                make_config(affine_steps=0, deformable_steps=3, global_stage=False, diffeomorphic=False), device="cpu", progress=False)
    return path


def test_it_registers_from_the_centres_of_mass_with_a_field_and_its_inverse(phantom_files, one_stage):
    result = register(phantom_files["fixed"], phantom_files["moving"], VoxelMorphConfig(one_stage), Context())
    transform = result.transform
    assert transform.deformable and transform.inverse_displacement is not None
    np.testing.assert_allclose(transform.affine[:3, :3], np.eye(3))  # a translation: no affine network
    assert result.parameters == {"model": one_stage.name, "device": "auto", "field": "displacement"}
    assert result.seconds > 0


def test_a_two_stage_checkpoint_is_refused(phantom_files):
    with pytest.raises(ValueError, match="two-stage"):
        register(phantom_files["fixed"], phantom_files["moving"], VoxelMorphConfig(DEFAULT_MODEL), Context())
