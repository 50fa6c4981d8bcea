"""The baselines that refine antspyx Affine (bidsreg.methods.refine): bidsreg.methods.demons
(SimpleITK fast symmetric forces Demons) and bidsreg.methods.bspline (elastix B-spline free-form
deformation), read back in bidsreg's frames; checked on the phantom against its known deformation
and against SimpleITK's own resampling through the written composite transform."""
from __future__ import annotations

import shutil
from functools import partial

import numpy as np
import pytest

from bidsreg.image import load_volume
from bidsreg.methods import bspline, demons
from bidsreg.methods.base import RegistrationResult
from bidsreg.methods.bspline import BSplineConfig, bspline_field
from bidsreg.methods.demons import DemonsConfig, demons_field
from bidsreg.methods.refine import refine_affine
from bidsreg.metrics import overlap_table, summarise
from bidsreg.transform import Transform

pytestmark = pytest.mark.slow
#: Each method with its field estimator, a configuration for the phantom's 3 mm voxels, and what
#: its sidecar names.
METHODS = {
    "demons": (demons.register, demons_field, DemonsConfig(shrink_factors=(2, 1), iterations=(30, 15)), {},
               ("filter", "FastSymmetricForcesDemonsRegistrationFilter")),
    "bspline": (bspline.register, bspline_field, BSplineConfig(grid_spacing=24.0, shrink_factors=(2, 1),
                                                               iterations=(200, 200)),
                {"seed": 0, "threads": 1}, ("transform", "BSplineTransform (order 3)")),
}


@pytest.fixture(scope="module", params=[
    "demons", pytest.param("bspline", marks=pytest.mark.skipif(shutil.which("elastix") is None,
                                                               reason="elastix is not installed (apt-get install elastix)")),
])
def pair(phantom, tmp_path_factory, request) -> dict:
    """Fixed phantom, a moved and deformed copy (sub-02's map of conftest) and its labels; the
    method's result, and its refinement of the known affine (antspyx Affine on the 3 mm phantom
    sometimes lands below the scanner alignment, which would test antspyx, not the refinement)."""
    from tests.conftest import SUBJECT_MAPS

    register, field, config, extra, named = METHODS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    affine = phantom.affine()
    world_map = SUBJECT_MAPS["02"]
    files = {
        "fixed": phantom.write(root / "fixed.nii.gz", phantom.image(affine), affine),
        "moving": phantom.write(root / "moving.nii.gz", phantom.image(affine, world_map=world_map, deformed=True), affine),
        "moving_labels": phantom.write(root / "moving_dseg.nii.gz",
                                       phantom.labels(affine, world_map=world_map, deformed=True), affine),
    }
    known = RegistrationResult(Transform(world_map), 0.0)
    refined = refine_affine(files["fixed"], files["moving"], partial(field, config=config, **extra), start=known)
    return {**files, "fixed_labels": phantom.labels(affine), "result": register(files["fixed"], files["moving"], config),
            "refined": refined, "named": named}


def _dice(pair, transform: Transform) -> float:
    fixed = load_volume(pair["fixed"])
    warped = transform.apply(load_volume(pair["moving_labels"], labels=True), fixed.grid, nearest=True)
    return summarise(overlap_table(warped, pair["fixed_labels"], spacing=fixed.spacing))["dice"]


def test_improves_on_its_affine_start(pair):
    transform = pair["refined"].transform
    original, affine, refined = (_dice(pair, Transform(np.eye(4))), _dice(pair, Transform(transform.affine)),
                                 _dice(pair, transform))
    assert original < affine and refined > affine + 0.03 and refined > 0.8, (original, affine, refined)


def test_the_whole_method_registers_and_says_what_ran(pair):
    result = pair["result"]
    assert _dice(pair, result.transform) > _dice(pair, Transform(np.eye(4))) + 0.1
    key, value = pair["named"]
    assert result.parameters[key] == value
    assert result.parameters["affine_start"]["type_of_transform"] == "Affine" and result.seconds > 0


def test_inverse_field_undoes_the_forward_one(pair):
    transform = pair["result"].transform
    fixed = load_volume(pair["fixed"])
    voxels = np.argwhere(fixed.data > 0.3 * fixed.data.max())[::50]
    points = voxels @ fixed.affine[:3, :3].T + fixed.affine[:3, 3]
    back = transform.map_points_inverse(transform.map_points(points))
    assert np.percentile(np.linalg.norm(back - points, axis=1), 95) < 0.5  # mm, 3 mm voxels


def test_composite_file_warps_like_simpleitk(pair, tmp_path):
    import SimpleITK as sitk

    transform = pair["result"].transform
    path = tmp_path / "refined_xfm.h5"
    transform.write(path)
    fixed_image, moving_image = sitk.ReadImage(pair["fixed"]), sitk.ReadImage(pair["moving"])
    theirs = sitk.GetArrayFromImage(sitk.Resample(moving_image, fixed_image, sitk.ReadTransform(str(path)),
                                                  sitk.sitkLinear, 0.0, sitk.sitkFloat32)).transpose(2, 1, 0)
    fixed, moving = load_volume(pair["fixed"]), load_volume(pair["moving"])
    ours = transform.apply(moving, fixed.grid)
    inside = fixed.data > 0.1 * fixed.data.max()
    assert np.corrcoef(ours[inside], theirs[inside])[0, 1] > 0.999


@pytest.mark.parametrize("config, changes", [
    (DemonsConfig, dict(shrink_factors=(2, 1), iterations=(10,))), (DemonsConfig, dict(field_sigma=0.0)),
    (DemonsConfig, dict(shrink_factors=(0,), iterations=(5,))), (BSplineConfig, dict(grid_spacing=0.0)),
    (BSplineConfig, dict(shrink_factors=(), iterations=())), (BSplineConfig, dict(iterations=(0, 1, 1))), (BSplineConfig, dict(samples=0)),
])
def test_bad_parameters(config, changes):
    with pytest.raises(ValueError):
        config(**changes)
