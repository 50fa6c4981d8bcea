"""The ANTs baselines (bidsreg.methods.ants) read back in bidsreg's frames agree with antspyx itself."""
from __future__ import annotations

import numpy as np
import pytest

from bidsreg.image import load_volume
from bidsreg.methods.ants import (AffineConfig, SyNConfig, register_affine, register_syn, register_syn_quick,
                                 too_coarse_for_scripts)
from bidsreg.methods.base import Context
from bidsreg.transform import Transform

ants = pytest.importorskip("ants")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["antsaffine", "antssyn"])
def test_transforms_warp_like_ants_apply_transforms(phantom_files, method, tmp_path):
    fixed, moving = phantom_files["fixed"], phantom_files["deformed"]
    if method == "antssyn":
        result = register_syn(fixed, moving, SyNConfig((100, 50, 0), (20, 10, 0)), Context(seed=1))
    else:
        result = register_affine(fixed, moving, AffineConfig((100, 50, 0)), Context(seed=1))
    assert result.seconds > 0 and result.parameters["type_of_transform"] == ("SyN" if method == "antssyn" else "Affine")
    assert result.transform.deformable == (method == "antssyn")
    fixed_vol, moving_vol = load_volume(fixed), load_volume(moving)
    ours = result.transform.apply(moving_vol, fixed_vol.grid)
    # antspyx's own warping, with the transforms of a second identical (seeded) run
    reg = ants.registration(ants.image_read(fixed), ants.image_read(moving),
                            type_of_transform=result.parameters["type_of_transform"],
                            aff_iterations=(100, 50, 0), aff_shrink_factors=(4, 2, 1), aff_smoothing_sigmas=(2, 1, 0),
                            reg_iterations=(20, 10, 0), outprefix=f"{tmp_path}/r_")
    theirs = ants.apply_transforms(ants.image_read(fixed), ants.image_read(moving), reg["fwdtransforms"]).numpy()
    inside = fixed_vol.data > 0.1 * fixed_vol.data.max()
    assert np.corrcoef(ours[inside], theirs[inside])[0, 1] > 0.995
    # and it registers: closer to the fixed image than the moving image was
    before = np.corrcoef(Transform(np.eye(4)).apply(moving_vol, fixed_vol.grid)[inside], fixed_vol.data[inside])[0, 1]
    assert np.corrcoef(ours[inside], fixed_vol.data[inside])[0, 1] > before


def test_the_quick_script_registers_with_the_scripts_settings(phantom_files):
    """antssynquick runs antspyx's antsRegistrationSyNQuick[s] (rigid, affine, SyN) and its result
    warps the moving image closer to the fixed one than antspyx Affine alone; its inverse field
    undoes the forward one (antssynfull runs the same code with the full script, in the app tests)."""
    fixed, moving = phantom_files["fixed"], phantom_files["deformed"]
    result = register_syn_quick(fixed, moving, context=Context(seed=1))  # one thread: repeatable
    assert result.parameters["type_of_transform"] == "antsRegistrationSyNQuick[s]" and result.transform.deformable
    fixed_vol, moving_vol = load_volume(fixed), load_volume(moving)
    inside = fixed_vol.data > 0.1 * fixed_vol.data.max()
    affine = register_affine(fixed, moving, AffineConfig((100, 50, 0)), Context(seed=1)).transform
    scores = [np.corrcoef(t.apply(moving_vol, fixed_vol.grid)[inside], fixed_vol.data[inside])[0, 1]
              for t in (affine, result.transform)]
    assert scores[1] > scores[0] > 0.9
    points = np.argwhere(inside)[::50] @ fixed_vol.affine[:3, :3].T + fixed_vol.affine[:3, 3]
    back = result.transform.map_points_inverse(result.transform.map_points(points))
    assert np.percentile(np.linalg.norm(back - points, axis=1), 95) < 0.5  # mm, 3 mm voxels


def test_the_scripts_settings_are_said_not_to_suit_coarse_images():
    assert too_coarse_for_scripts((160, 192, 160)) is None  # a 1 mm brain: 20 voxels at shrink 8
    why = too_coarse_for_scripts((40, 48, 40))  # the 3 mm phantom
    assert "leaves 5 voxels across this 40x48x40 image" in why and "prefer antssyn" in why
