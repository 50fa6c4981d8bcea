"""The Demons baseline (bidsreg.demons): antspyx Affine then SimpleITK fast symmetric forces
Demons, read back in bidsreg's frames; checked on the phantom against its known deformation and
against SimpleITK's own resampling through the written composite transform."""
from __future__ import annotations

import numpy as np
import pytest

from bidsreg.demons import DemonsConfig, demons_register
from bidsreg.image import load_volume
from bidsreg.itk import write_composite
from bidsreg.metrics import overlap_table, summarise
from bidsreg.transforms import apply_transform

pytestmark = pytest.mark.slow
QUICK = DemonsConfig(shrink_factors=(2, 1), iterations=(30, 15))


@pytest.fixture(scope="module")
def pair(phantom, tmp_path_factory) -> dict:
    """Fixed phantom, a moved and deformed copy (sub-02's map of conftest) and its labels."""
    from conftest import SUBJECT_MAPS

    root = tmp_path_factory.mktemp("demons")
    affine = phantom.affine()
    world_map = SUBJECT_MAPS["02"]
    files = {
        "fixed": phantom.write(root / "fixed.nii.gz", phantom.image(affine), affine),
        "moving": phantom.write(root / "moving.nii.gz", phantom.image(affine, world_map=world_map, deformed=True), affine),
        "moving_labels": phantom.write(root / "moving_dseg.nii.gz",
                                       phantom.labels(affine, world_map=world_map, deformed=True), affine),
    }
    return {**files, "fixed_labels": phantom.labels(affine), "result": demons_register(files["fixed"], files["moving"], QUICK)}


def _dice(pair, affine, displacement=None) -> float:
    fixed = load_volume(pair["fixed"])
    warped = apply_transform(load_volume(pair["moving_labels"], labels=True), fixed.shape, fixed.affine, affine,
                             displacement, interpolation="nearest")
    return summarise(overlap_table(warped, pair["fixed_labels"], spacing=fixed.spacing))["dice"]


def test_demons_improves_on_its_affine_start(pair):
    result = pair["result"]
    original, affine, demons = _dice(pair, np.eye(4)), _dice(pair, result.affine), _dice(pair, result.affine, result.displacement)
    # antspyx Affine moves a little between runs (random metric sampling); Demons always adds to it
    assert original < affine and demons > affine + 0.03 and demons > 0.8, (original, affine, demons)
    assert result.parameters["filter"] == "FastSymmetricForcesDemonsRegistrationFilter"
    assert result.parameters["affine_start"]["type_of_transform"] == "Affine" and result.seconds > 0


def test_inverse_field_undoes_the_forward_one(pair):
    from bidsreg.transforms import map_points, map_points_inverse

    result = pair["result"]
    fixed = load_volume(pair["fixed"])
    voxels = np.argwhere(fixed.data > 0.3 * fixed.data.max())[::50]
    points = voxels @ fixed.affine[:3, :3].T + fixed.affine[:3, 3]
    kwargs = dict(reference_affine=result.reference_affine)
    moved = map_points(points, result.affine, result.displacement, **kwargs)
    back = map_points_inverse(moved, result.affine, result.inverse_displacement, **kwargs)
    assert np.percentile(np.linalg.norm(back - points, axis=1), 95) < 0.5  # mm, 3 mm voxels


def test_composite_file_warps_like_simpleitk(pair, tmp_path):
    import SimpleITK as sitk

    result = pair["result"]
    path = tmp_path / "demons_xfm.h5"
    write_composite(path, result.affine, result.displacement, result.reference_affine)
    fixed_image, moving_image = sitk.ReadImage(pair["fixed"]), sitk.ReadImage(pair["moving"])
    theirs = sitk.GetArrayFromImage(sitk.Resample(moving_image, fixed_image, sitk.ReadTransform(str(path)),
                                                  sitk.sitkLinear, 0.0, sitk.sitkFloat32)).transpose(2, 1, 0)
    fixed, moving = load_volume(pair["fixed"]), load_volume(pair["moving"])
    ours = apply_transform(moving, fixed.shape, fixed.affine, result.affine, result.displacement)
    inside = fixed.data > 0.1 * fixed.data.max()
    assert np.corrcoef(ours[inside], theirs[inside])[0, 1] > 0.999


@pytest.mark.parametrize("changes", [dict(shrink_factors=(2, 1), iterations=(10,)), dict(field_sigma=0.0),
                                     dict(shrink_factors=(0,), iterations=(5,))])
def test_bad_demons_parameters(changes):
    with pytest.raises(ValueError):
        DemonsConfig(**changes)
