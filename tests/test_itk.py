"""ITK/ANTs transform files: LPS conversion, round trips, and interoperability with ANTs.

The interoperability tests warp a synthetic head with a known transform twice, once with
bidsreg and once with antsApplyTransforms (antspyx) reading the files bidsreg wrote, and
require the two to agree; files written with a deliberately wrong convention must not.
"""
from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest
import scipy.io
import SimpleITK as sitk

from bidsreg import itk
from bidsreg.fields import invert_displacement
from bidsreg.image import Volume, save_volume
from bidsreg.transform import Transform

from .grids import SHAPE, grid_affine

try:
    import ants
except ImportError:  # the cross-checks need antspyx; the rest of the module does not
    ants = None

needs_ants = pytest.mark.skipif(ants is None, reason="antspyx is not installed")

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """(3, 3) right-handed rotation about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.deg2rad(degrees)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def oblique_grid(shape, spacing, signs, centre, axis, degrees) -> np.ndarray:
    """Voxel -> RAS+ affine with axis ``signs`` (e.g. LAS), tilted, centred on ``centre``."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(axis, degrees) @ np.diag(np.multiply(signs, spacing))
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine


def world_grid(shape, affine) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def random_affine(rng: np.random.Generator) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation(rng.normal(size=3), 12) * rng.uniform(0.9, 1.1, size=3)
    affine[:3, 3] = rng.uniform(-10, 10, size=3)
    return affine


# ---------------------------------------------------------------------------------------------
# LPS conversion


def test_ras_to_lps_affine_hand_case():
    # RAS map: x' = y + 1 (R), y' = -x + 2 (A), z' = z + 3 (S).
    ras = np.array([[0, 1, 0, 1], [-1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=float)
    # In LPS (L = -R, P = -A): L' = -(y + 1) = P - 1, P' = -(-x + 2) = -L - 2, S' = S + 3.
    lps = np.array([[0, 1, 0, -1], [-1, 0, 0, -2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_allclose(itk.ras_to_lps_affine(ras), lps)
    np.testing.assert_allclose(itk.lps_to_ras_affine(lps), ras)
    point_ras = np.array([10.0, 20.0, 30.0, 1.0])
    np.testing.assert_allclose(lps @ (FLIP @ point_ras), FLIP @ (ras @ point_ras))


def test_ras_to_lps_vectors():
    vectors = np.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]], dtype=np.float32)
    lps = itk.ras_to_lps_vectors(vectors)
    np.testing.assert_array_equal(lps, [[-1.0, 2.0, 3.0], [-0.5, 0.0, -1.0]])
    assert lps.dtype == np.float32
    np.testing.assert_array_equal(itk.lps_to_ras_vectors(lps), vectors)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        itk.ras_to_lps_vectors(np.zeros((4, 2)))


def test_affine_validation():
    with pytest.raises(ValueError, match="4, 4"):
        itk.ras_to_lps_affine(np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        itk.ras_to_lps_affine(np.diag([1.0, 0.0, 1.0, 1.0]))


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("suffix", [".mat", ".txt"])
def test_affine_round_trip(tmp_path, suffix):
    affine = random_affine(np.random.default_rng(1))
    path = tmp_path / f"affine{suffix}"
    itk.write_affine(path, affine)
    np.testing.assert_allclose(itk.read_affine(path), affine, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_write_affine_mat_layout(tmp_path):
    affine = random_affine(np.random.default_rng(2))
    itk.write_affine(tmp_path / "affine.mat", affine)
    content = scipy.io.loadmat(tmp_path / "affine.mat")
    lps = FLIP @ affine @ FLIP
    parameters = content["AffineTransform_double_3_3"].ravel()
    np.testing.assert_allclose(parameters[:9].reshape(3, 3), lps[:3, :3])
    centre = content["fixed"].ravel()
    np.testing.assert_allclose(parameters[9:] + centre - lps[:3, :3] @ centre, lps[:3, 3])


def test_read_affine_antsregistration_mat(tmp_path):
    # antsRegistration writes float32 parameters with a non-zero centre of rotation:
    # x' = M (x - c) + c + t, all LPS.
    matrix = np.array([[0.98, 0.05, 0.0], [-0.05, 0.98, 0.02], [0.0, -0.02, 1.01]])
    translation, centre = np.array([4.0, -2.0, 1.5]), np.array([25.0, -30.0, 12.0])
    scipy.io.savemat(
        tmp_path / "0GenericAffine.mat",
        {
            "AffineTransform_float_3_3": np.r_[matrix.ravel(), translation][:, None].astype(np.float32),
            "fixed": centre[:, None].astype(np.float32),
        },
        format="4",
    )
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + centre - matrix @ centre
    read = itk.read_affine(tmp_path / "0GenericAffine.mat")
    np.testing.assert_allclose(read, FLIP @ lps @ FLIP, atol=1e-4)


@needs_ants
def test_ants_reads_written_affine(tmp_path):
    affine = random_affine(np.random.default_rng(3))
    itk.write_affine(tmp_path / "affine.mat", affine)
    transform = ants.read_transform(str(tmp_path / "affine.mat"))
    point_ras = np.array([12.0, -34.0, 56.0])
    mapped_lps = transform.apply_to_point(tuple(point_ras * [-1, -1, 1]))
    expected = affine[:3, :3] @ point_ras + affine[:3, 3]
    np.testing.assert_allclose(np.multiply(mapped_lps, [-1, -1, 1]), expected, atol=1e-4)


def test_affine_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.mat or \.txt"):
        itk.write_affine(tmp_path / "affine.nii", np.eye(4))
    with pytest.raises(ValueError, match="no such file"):
        itk.read_affine(tmp_path / "missing.mat")
    (tmp_path / "junk.txt").write_text("not a transform\n")
    with pytest.raises(ValueError, match="not an ITK transform"):
        itk.read_affine(tmp_path / "junk.txt")


def small_field(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    reference = oblique_grid((7, 8, 6), (2.0, 1.5, 2.5), (-1, 1, 1), [5.0, -3.0, 8.0], [1, 2, 3], 7)
    return rng.normal(scale=3.0, size=(7, 8, 6, 3)).astype(np.float32), reference


def test_displacement_round_trip(tmp_path):
    displacement, reference = small_field(np.random.default_rng(4))
    path = tmp_path / "warp.nii.gz"
    itk.write_displacement(path, displacement, reference)
    img = nb.load(path)
    assert img.shape == (7, 8, 6, 1, 3)
    assert int(img.header["intent_code"]) == 1007
    raw = np.asarray(img.dataobj)[..., 0, :]
    np.testing.assert_allclose(raw, displacement * [-1, -1, 1], atol=1e-6)  # stored LPS
    read, read_reference = itk.read_displacement(path)
    np.testing.assert_allclose(read, displacement, atol=1e-5)
    np.testing.assert_allclose(read_reference, reference, atol=1e-5)
    # ITK sees the same grid, in LPS.
    field = sitk.ReadImage(str(path))
    np.testing.assert_allclose(field.GetOrigin(), (FLIP @ reference)[:3, 3], atol=1e-4)


def test_displacement_errors(tmp_path):
    with pytest.raises(ValueError, match="X, Y, Z, 3"):
        itk.write_displacement(tmp_path / "warp.nii.gz", np.zeros((4, 4, 4)), np.eye(4))
    save_volume(tmp_path / "image.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"\(X, Y, Z, 1, 3\)"):
        itk.read_displacement(tmp_path / "image.nii.gz")


@pytest.mark.parametrize("inverse", [False, True])
def test_composite_round_trip(tmp_path, inverse):
    rng = np.random.default_rng(5)
    displacement, reference = small_field(rng)
    affine = random_affine(rng)
    path = tmp_path / "xfm.h5"
    itk.write_composite(path, affine, displacement, reference, inverse=inverse)
    read_affine, read_displacement, read_reference = itk.read_composite(path, inverse=inverse)
    np.testing.assert_allclose(read_affine, affine, atol=1e-5)
    np.testing.assert_allclose(read_displacement, displacement, atol=1e-5)
    np.testing.assert_allclose(read_reference, reference, atol=1e-5)
    with pytest.raises(ValueError, match="displacement field"):
        itk.read_composite(path, inverse=not inverse)


def test_composite_affine_only(tmp_path):
    affine = random_affine(np.random.default_rng(6))
    itk.write_composite(tmp_path / "xfm.h5", affine)
    read_affine, displacement, reference = itk.read_composite(tmp_path / "xfm.h5")
    np.testing.assert_allclose(read_affine, affine, atol=1e-5)
    assert displacement is None and reference is None
    with pytest.raises(ValueError, match="reference_affine"):
        itk.write_composite(tmp_path / "bad.h5", affine, np.zeros((3, 3, 3, 3)))


def test_composite_point_map_matches_itk(tmp_path):
    """ITK's own point map of the written file is T(x) = A(x + d(x)) and T^-1 as documented."""
    rng = np.random.default_rng(7)
    displacement, reference = small_field(rng)
    affine = random_affine(rng)
    itk.write_composite(tmp_path / "fwd.h5", affine, displacement, reference)
    itk.write_composite(tmp_path / "inv.h5", affine, displacement, reference, inverse=True)
    # Voxel centres: no interpolation, so the expected value is exact.
    index = np.array([[3, 4, 2], [1, 6, 4], [5, 2, 1]])
    points = index @ reference[:3, :3].T + reference[:3, 3]
    d = displacement[tuple(index.T)]
    expected = (points + d) @ affine[:3, :3].T + affine[:3, 3]
    forward = sitk.ReadTransform(str(tmp_path / "fwd.h5"))
    got = [forward.TransformPoint(tuple(FLIP[:3, :3] @ p)) for p in points]
    np.testing.assert_allclose(np.array(got) @ FLIP[:3, :3], expected, atol=1e-4)
    # Inverse: y = A z  ->  z + w(z) with w = displacement here.
    moving_points = points @ affine[:3, :3].T + affine[:3, 3]
    inverse = sitk.ReadTransform(str(tmp_path / "inv.h5"))
    got = [inverse.TransformPoint(tuple(FLIP[:3, :3] @ p)) for p in moving_points]
    np.testing.assert_allclose(np.array(got) @ FLIP[:3, :3], points + d, atol=1e-4)


def test_nitransforms_reads_composite(tmp_path):
    nitransforms = pytest.importorskip("nitransforms")
    rng = np.random.default_rng(8)
    displacement, reference = small_field(rng)
    affine = random_affine(rng)
    itk.write_composite(tmp_path / "xfm.h5", affine, displacement, reference)
    chain = nitransforms.manip.load(str(tmp_path / "xfm.h5"), fmt="itk")
    points = world_grid((7, 8, 6), reference)[1:6:2, 2:7:2, 1:5:2].reshape(-1, 3)
    expected = Transform(affine, displacement, field_affine=reference).map_points(points)
    np.testing.assert_allclose(chain.map(points), expected, atol=1e-4)


def test_composite_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.h5"):
        itk.write_composite(tmp_path / "xfm.mat", np.eye(4))
    itk.write_affine(tmp_path / "affine.txt", np.eye(4))
    np.testing.assert_allclose(itk.read_composite(tmp_path / "affine.txt")[0], np.eye(4))


# ---------------------------------------------------------------------------------------------
# Interoperability with antsApplyTransforms

BRAIN_CENTRE = np.array([2.0, -10.0, 8.0])
BRAIN_RADII = np.array([38.0, 44.0, 34.0])
BLOB = BRAIN_CENTRE + np.array([18.0, 14.0, -10.0])


def head(world: np.ndarray) -> np.ndarray:
    """A smooth ellipsoidal 'brain' with texture, two dark 'ventricles' and a bright blob."""
    q = world - BRAIN_CENTRE
    radius = np.sqrt(((q / BRAIN_RADII) ** 2).sum(-1))
    brain = 1.0 / (1.0 + np.exp(-25.0 * (1.0 - radius)))
    texture = 0.6 + 0.2 * np.sin(q[..., 0] / 6.0) * np.cos(q[..., 1] / 8.0) + 0.15 * np.sin(
        q[..., 2] / 5.0 + q[..., 0] / 11.0
    )
    ventricles = sum(
        np.exp(-(((q - [side, 2.0, 6.0]) / [5.0, 14.0, 6.0]) ** 2).sum(-1)) for side in (-9.0, 9.0)
    )
    blob = 3.0 * np.exp(-((world - BLOB) ** 2).sum(-1) / (2 * 2.5**2))
    return (brain * (texture - 0.5 * ventricles) + blob).astype(np.float32)


def known_displacement(world: np.ndarray) -> np.ndarray:
    """A smooth field of ~5 mm amplitude (|grad| < 0.5), RAS+ mm."""
    q = world - BRAIN_CENTRE
    return np.stack(
        [
            4.0 * np.sin(2 * np.pi * q[..., 1] / 90 + 0.8) + 1.5 * np.cos(2 * np.pi * q[..., 2] / 70),
            4.0 * np.sin(2 * np.pi * q[..., 2] / 80 + 1.9) + 1.5 * np.sin(2 * np.pi * q[..., 0] / 75),
            4.0 * np.cos(2 * np.pi * q[..., 0] / 100 + 0.4),
        ],
        axis=-1,
    ).astype(np.float32)


def blob_centroid(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS+ mm centroid of the bright blob (values above every brain intensity)."""
    weights = np.clip(data - 1.4, 0.0, None)
    index = np.argwhere(weights > 0)
    centre = (index * weights[tuple(index.T)][:, None]).sum(0) / weights.sum()
    return affine[:3, :3] @ centre + affine[:3, 3]


def correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Moving (LAS, oblique), fixed grid (RAS, 2.5 mm), a known transform and its files."""
    folder = tmp_path_factory.mktemp("interop")
    moving_shape = (48, 52, 44)
    moving_affine = oblique_grid(
        moving_shape, (2.0, 1.9, 2.1), (-1, 1, 1), BRAIN_CENTRE, [0.3, 1, 0.2], degrees=4
    )
    moving = Volume(head(world_grid(moving_shape, moving_affine)), moving_affine)
    fixed_shape = (44, 46, 40)
    fixed_affine = oblique_grid(
        fixed_shape, (2.5, 2.5, 2.5), (1, 1, 1), BRAIN_CENTRE + [3, -2, 1], [0, 0, 1], degrees=0
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation([1.0, 2.0, 1.0], 10)
    affine[:3, 3] = BRAIN_CENTRE - affine[:3, :3] @ BRAIN_CENTRE + np.array([2.0, -2.0, 1.0]) * 5 / 3
    displacement = known_displacement(world_grid(fixed_shape, fixed_affine))
    inverse_displacement = invert_displacement(displacement, fixed_affine)
    transform = Transform(affine, displacement, inverse_displacement, fixed_affine)

    warped = transform.apply(moving, Volume(np.zeros(fixed_shape), fixed_affine).grid)
    paths = {name: str(folder / name) for name in ("moving.nii.gz", "fixed.nii.gz")}
    save_volume(paths["moving.nii.gz"], moving.data, moving_affine)
    save_volume(paths["fixed.nii.gz"], warped, fixed_affine)
    files = {
        "xfm.h5": lambda p: itk.write_composite(p, affine, displacement, fixed_affine),
        "inverse_xfm.h5": lambda p: itk.write_composite(
            p, affine, inverse_displacement, fixed_affine, inverse=True
        ),
        "affine.mat": lambda p: itk.write_affine(p, affine),
        "warp.nii.gz": lambda p: itk.write_displacement(p, displacement, fixed_affine),
        "inverse_warp.nii.gz": lambda p: itk.write_displacement(p, inverse_displacement, fixed_affine),
        # Deliberately wrong conventions, which the criteria below must reject.
        "wrong_ras_field.h5": lambda p: itk.write_composite(
            p, affine, itk.ras_to_lps_vectors(displacement), fixed_affine
        ),
        "wrong_order.h5": lambda p: itk.write_composite(
            p, np.linalg.inv(affine), displacement, fixed_affine, inverse=True
        ),
        "wrong_ras_warp.nii.gz": lambda p: itk.write_displacement(
            p, itk.ras_to_lps_vectors(displacement), fixed_affine
        ),
        "wrong_inverse_order.h5": lambda p: itk.write_composite(
            p, np.linalg.inv(affine), inverse_displacement, fixed_affine
        ),
    }
    for name, write in files.items():
        paths[name] = str(folder / name)
        write(paths[name])
    return {
        "moving": moving,
        "fixed": Volume(warped, fixed_affine),
        "affine": affine,
        "displacement": displacement,
        "inverse_displacement": inverse_displacement,
        "transform": transform,
        "paths": paths,
    }


def ants_warp(scene, reference: str, image: str, transforms: list[str], **kwargs) -> np.ndarray:
    paths = scene["paths"]
    return ants.apply_transforms(
        ants.image_read(paths[reference]),
        ants.image_read(paths[image]),
        transformlist=[paths[name] for name in transforms],
        **kwargs,
    ).numpy()


def agreement(got: np.ndarray, expected: Volume) -> tuple[float, float, float]:
    """Correlation inside the brain, blob centroid distance (mm) and largest difference there."""
    brain = expected.data > 0.3
    offset = blob_centroid(got, expected.affine) - blob_centroid(expected.data, expected.affine)
    distance = np.linalg.norm(offset)
    difference = float(np.abs(got - expected.data)[brain].max())
    return correlation(got, expected.data, brain), float(distance), difference


def agrees(corr: float, distance: float) -> bool:
    """The acceptance criterion: correlation > 0.99 inside the brain, blob within 1 mm."""
    return corr > 0.99 and distance < 1.0


def test_bidsreg_warp_matches_ground_truth(scene):
    """bidsreg alone: the blob lands where T says, and the inverse brings it back."""
    fixed = scene["fixed"]
    centroid = blob_centroid(fixed.data, fixed.affine)
    moved = scene["transform"].map_points(centroid[None])[0]
    assert np.linalg.norm(moved - BLOB) < 1.0
    moving = scene["moving"]
    back = scene["transform"].apply_inverse(fixed, moving.grid)
    assert np.linalg.norm(blob_centroid(back, moving.affine) - BLOB) < 1.0
    assert correlation(back, moving.data, moving.data > 0.3) > 0.98


# Each case: the right files, and files with one convention wrong (with their whichtoinvert;
# antspyx inverts a leading .mat by itself unless told otherwise).
FORWARD_CASES = {
    "h5-vs-ras-field": (["xfm.h5"], ["wrong_ras_field.h5"], None),
    "h5-vs-swapped-order": (["xfm.h5"], ["wrong_order.h5"], None),
    "warp+mat-vs-ras-warp": (
        ["warp.nii.gz", "affine.mat"], ["wrong_ras_warp.nii.gz", "affine.mat"], None
    ),
    "warp+mat-vs-swapped-order": (
        ["warp.nii.gz", "affine.mat"], ["affine.mat", "warp.nii.gz"], [False, False]
    ),
}
INVERSE_CASES = {
    "h5-vs-swapped-order": (["inverse_xfm.h5"], None, ["wrong_inverse_order.h5"], None),
    "mat+warp-vs-swapped-order": (
        ["affine.mat", "inverse_warp.nii.gz"],
        [True, False],
        ["inverse_warp.nii.gz", "affine.mat"],
        [False, True],
    ),
}


@needs_ants
@pytest.mark.parametrize("case", FORWARD_CASES.values(), ids=FORWARD_CASES.keys())
def test_ants_forward_matches_bidsreg(scene, case):
    """antsApplyTransforms -r fixed -i moving -t <files> reproduces bidsreg's warp."""
    transforms, wrong, wrong_which = case
    corr, distance, difference = agreement(
        ants_warp(scene, "fixed.nii.gz", "moving.nii.gz", transforms), scene["fixed"]
    )
    assert agrees(corr, distance) and difference < 1e-3, (corr, distance, difference)
    bad = ants_warp(scene, "fixed.nii.gz", "moving.nii.gz", wrong, whichtoinvert=wrong_which)
    wrong_corr, wrong_distance, _ = agreement(bad, scene["fixed"])
    assert not agrees(wrong_corr, wrong_distance), (wrong_corr, wrong_distance)


@needs_ants
@pytest.mark.parametrize("case", INVERSE_CASES.values(), ids=INVERSE_CASES.keys())
def test_ants_inverse_matches_bidsreg(scene, case):
    """antsApplyTransforms -r moving -i fixed -t <inverse files> reproduces bidsreg's inverse warp."""
    transforms, whichtoinvert, wrong, wrong_which = case
    moving, fixed = scene["moving"], scene["fixed"]
    expected = Volume(scene["transform"].apply_inverse(fixed, moving.grid), moving.affine)
    got = ants_warp(scene, "moving.nii.gz", "fixed.nii.gz", transforms, whichtoinvert=whichtoinvert)
    corr, distance, difference = agreement(got, expected)
    assert agrees(corr, distance) and difference < 1e-3, (corr, distance, difference)
    bad = ants_warp(scene, "moving.nii.gz", "fixed.nii.gz", wrong, whichtoinvert=wrong_which)
    wrong_corr, wrong_distance, _ = agreement(bad, expected)
    assert not agrees(wrong_corr, wrong_distance), (wrong_corr, wrong_distance)


def test_resample_field_onto_a_finer_oblique_grid():
    source = grid_affine(spacing=(2.0, 2.0, 2.0))
    # A field linear in world mm is reproduced exactly by trilinear interpolation.
    gradient = np.array([[0.02, -0.01, 0.03], [0.0, 0.05, -0.02], [0.01, 0.0, 0.04]])
    field = (world_grid(SHAPE, source) @ gradient.T + [1.0, -2.0, 0.5]).astype(np.float32)
    target = grid_affine(spacing=(1.0, 1.0, 1.0), signs=(-1, 1, 1), degrees=15)
    shape = (30, 36, 27)
    out = itk.resample_field(field, source, shape, target)
    assert out.shape == shape + (3,) and out.dtype == np.float32
    world = world_grid(shape, target)
    voxels = (world - source[:3, 3]) / 2.0
    inside = np.all((voxels >= 0) & (voxels <= np.array(SHAPE) - 1), axis=-1)
    assert inside.mean() > 0.5 and not inside.all()
    np.testing.assert_allclose(out[inside], (world @ gradient.T + [1.0, -2.0, 0.5])[inside], atol=1e-4)
    # Outside, never zero: within half a voxel of the grid the border voxels extend (ITK's
    # [-0.5, n - 0.5)); beyond, the nearest voxel's vector.
    band = np.all((voxels >= -0.5) & (voxels < np.array(SHAPE) - 0.5), axis=-1) & ~inside
    assert band.any() and (~inside & ~band).any()
    clamped = np.clip(voxels[band], 0, np.array(SHAPE) - 1) * 2.0 + source[:3, 3]
    np.testing.assert_allclose(out[band], clamped @ gradient.T + [1.0, -2.0, 0.5], atol=1e-4)
    beyond = ~inside & ~band
    nearest = np.clip(np.floor(voxels[beyond] + 0.5), 0, np.array(SHAPE) - 1) * 2.0 + source[:3, 3]
    np.testing.assert_allclose(out[beyond], nearest @ gradient.T + [1.0, -2.0, 0.5], atol=1e-4)
