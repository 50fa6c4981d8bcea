"""Compact transform files: each field on the grid that fits it, float32 and compressed, and
antspyx applies them as it applies the same field on the fixed image's grid."""
from __future__ import annotations

import ants
import h5py
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bidsreg import itk
from bidsreg.data import DEFAULT_MODEL
from bidsreg.demo.dataset import LABELS_DESC, write_demo_dataset
from bidsreg.image import Grid, Volume, load_grid, load_volume, save_volume
from bidsreg.methods.cnn import register_pair
from bidsreg.nn.model import RegistrationModel
from bidsreg.methods.base import Context, build_config
from bidsreg.methods.table import TABLE
from bidsreg.transform import FIELD_STEP_MM, Transform, output_transform

from .grids import SHAPE, grid_affine, smooth_field


def test_a_coarser_grid_covers_the_same_box_in_the_same_orientation():
    affine = grid_affine(spacing=(1.0, 1.2, 0.9), signs=(-1, 1, 1), degrees=15)
    grid = Grid(SHAPE, affine)
    coarse = grid.at_spacing(2.0)
    assert np.allclose(np.linalg.norm(coarse.affine[:3, :3], axis=0), 2.0)
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    assert np.allclose(coarse.affine[:3, :3] / 2.0, directions)
    centre = lambda g: g.affine[:3, :3] @ ((np.array(g.shape) - 1) / 2) + g.affine[:3, 3]  # noqa: E731
    assert np.allclose(centre(coarse), centre(grid))
    # Every outer face of the fine grid lies inside the coarse one, by less than a coarse voxel.
    extent = np.array(SHAPE) * np.linalg.norm(affine[:3, :3], axis=0)
    assert np.all(np.array(coarse.shape) * 2.0 >= extent) and np.all(np.array(coarse.shape) * 2.0 < extent + 2.0)
    assert grid.at_spacing(np.linalg.norm(affine[:3, :3], axis=0)[0]) is not grid  # anisotropic: a new grid
    cubic = Grid(SHAPE, grid_affine(spacing=(2.0, 2.0, 2.0)))
    assert cubic.at_spacing(2.0) is cubic
    with pytest.raises(ValueError, match="positive"):
        grid.at_spacing(0.0)


def test_fields_are_stored_as_compressed_float32_and_read_back(tmp_path, monkeypatch):
    affine = grid_affine()
    field = smooth_field(SHAPE, affine)
    assert field.size % 1000  # several chunks, the last one partial
    monkeypatch.setattr(itk, "FIELD_CHUNK", 1000)
    path = tmp_path / "xfm.h5"
    itk.write_composite(path, np.eye(4), field, affine)
    with h5py.File(path, "r") as stored:
        kinds = {stored[f"TransformGroup/{k}/TransformType"][0].decode(): stored[f"TransformGroup/{k}"]
                 for k in stored["TransformGroup"]}
        parameters = kinds["DisplacementFieldTransform_double_3_3"]["TransformParameters"]
        assert parameters.dtype == np.float32 and parameters.compression == "gzip" and parameters.shuffle
        assert parameters.chunks == (1000,)
        assert kinds["AffineTransform_double_3_3"]["TransformParameters"].dtype == np.float64
    _, read, grid = itk.read_composite(path)
    assert np.array_equal(read, field) and np.allclose(grid, affine)
    assert not list(tmp_path.glob(".*"))  # no scratch file left behind


def test_output_transform_keeps_or_moves_the_field_grid(tmp_path):
    fixed_affine = grid_affine(spacing=(1.0, 1.0, 1.0), signs=(-1, 1, 1), degrees=10)
    fixed = tmp_path / "fixed.nii.gz"
    save_volume(fixed, np.ones(SHAPE, dtype=np.float32), fixed_affine)
    native = Grid((12, 14, 11), grid_affine(spacing=(2.0, 2.0, 2.0)))
    field = smooth_field(native.shape, native.affine)
    transform = Transform(np.eye(4), field, -field, native.affine)
    compact = output_transform(transform, fixed, None)
    assert compact.field_grid.shape == native.shape and np.array_equal(compact.field_affine, native.affine)
    for rounded, computed in ((compact.displacement, field), (compact.inverse_displacement, -field)):
        assert rounded.dtype == np.float32 and np.abs(rounded - computed).max() <= FIELD_STEP_MM / 2
        assert np.array_equal(rounded / FIELD_STEP_MM, np.round(rounded / FIELD_STEP_MM))  # exact multiples
    full = output_transform(transform, fixed, None, "full")
    assert full.field_grid.shape == SHAPE and np.allclose(full.field_affine, fixed_affine)
    assert np.array_equal(full.displacement, transform.on_grid(load_grid(fixed)).displacement)  # not rounded
    coarse = output_transform(transform, fixed, 3.0)
    assert coarse.field_grid.shape == load_grid(fixed).at_spacing(3.0).shape
    assert np.array_equal(coarse.displacement, transform.on_grid(coarse.field_grid).rounded(FIELD_STEP_MM).displacement)
    affine_only = Transform(np.eye(4))
    assert output_transform(affine_only, fixed, 2.0, "full") is affine_only
    with pytest.raises(ValueError, match="compact or full"):
        output_transform(transform, fixed, None, "half")
    with pytest.raises(ValueError, match="positive"):
        transform.rounded(0.0)


def test_rounded_fields_are_written_in_a_fraction_of_the_bytes(tmp_path):
    """Rounded to FIELD_STEP_MM, a smooth float32 field leaves its low mantissa bits zero, and the
    shuffle and deflate filters store it in fewer bytes (here, a small field with a few bits
    above the step, 70 %; the OASIS ANTs fields, a quarter: ``benchmarks/results/
    compact_transforms_rounded.md``); it reads back exactly."""
    affine = grid_affine()
    field = smooth_field(SHAPE, affine) * 5
    transform = Transform(np.eye(4), field, -field, affine)
    rounded = transform.rounded(FIELD_STEP_MM)
    sizes = {}
    for name, version in (("computed", transform), ("rounded", rounded)):
        version.write(tmp_path / f"{name}.h5")
        sizes[name] = (tmp_path / f"{name}.h5").stat().st_size
    assert sizes["rounded"] < 0.75 * sizes["computed"], sizes
    assert np.array_equal(Transform.read(tmp_path / "rounded.h5").displacement, rounded.displacement)


def oblique_las(volume: Volume, spacing: float, nearest: bool = False) -> Volume:
    """The image's content at the same world coordinates on an oblique LAS grid of ``spacing`` mm
    (turned by 15° about an axis between R and A, first axis reversed), large enough to hold it."""
    rotation = Rotation.from_rotvec(np.deg2rad(15.0) * np.array([1.0, 1.0, 0.0]) / np.sqrt(2)).as_matrix()
    sizes = np.linalg.norm(volume.affine[:3, :3], axis=0)
    shape = tuple(int(np.ceil(1.25 * n * s / spacing)) for n, s in zip(volume.shape, sizes))
    centre = volume.affine[:3, :3] @ ((np.array(volume.shape) - 1) / 2) + volume.affine[:3, 3]
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-spacing, spacing, spacing])
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return Volume(Transform(np.eye(4)).apply(volume, Grid(shape, affine), nearest=nearest), affine)


@pytest.fixture(scope="module")
def oblique_pair(tmp_path_factory):
    """Two demo brains: the fixed one (and its labels) stored on an oblique LAS 1.5 mm grid."""
    folder = tmp_path_factory.mktemp("compact")
    root = write_demo_dataset(folder / "demo", n_subjects=2)
    paths = {}
    for role, subject in (("fixed", "01"), ("moving", "02")):
        image = load_volume(root / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz")
        labels = load_volume(root / "derivatives" / "labels" / f"sub-{subject}" / "anat"
                             / f"sub-{subject}_desc-{LABELS_DESC}_dseg.nii.gz", labels=True)
        if role == "fixed":
            image, labels = oblique_las(image, 1.5), oblique_las(labels, 1.5, nearest=True)
        for kind, volume in (("", image), ("_labels", labels)):
            paths[role + kind] = folder / f"{role}{kind}.nii.gz"
            save_volume(paths[role + kind], volume.data, volume.affine)
    return paths


def warped_both_ways(paths: dict, forward, inverse) -> dict:
    def warp(reference, image, transform, nearest):
        return ants.apply_transforms(ants.image_read(str(paths[reference])), ants.image_read(str(paths[image])),
                                     [str(transform)], interpolator="nearestNeighbor" if nearest else "linear").numpy()
    return {"image": warp("fixed", "moving", forward, False), "labels": warp("fixed_labels", "moving_labels", forward, True),
            "inverse_image": warp("moving", "fixed", inverse, False),
            "inverse_labels": warp("moving_labels", "fixed_labels", inverse, True)}


@pytest.mark.slow
def test_antspyx_applies_the_compact_cnn_transform_as_the_full_one(oblique_pair, tmp_path):
    """The CNN's transform written on its 2 mm network grid and on the fixed image's oblique LAS
    grid: antspyx warps images (r > 0.999) and labels (99 % of the voxels) the same way with
    either, in both directions, from a file several times smaller.

    Forward, the fixed grid's field holds the network field's values at the voxels it is applied
    to; in the inverse direction it is applied between its nodes, an interpolation of an
    interpolation, and flips labels at borders: 98.9 % of the labelled voxels agree here (2 mm
    moving grid, dense small labels).
    """
    model = RegistrationModel.from_checkpoint(DEFAULT_MODEL, "cpu")
    transform = register_pair(oblique_pair["fixed"], oblique_pair["moving"], model, inverse=True).transform
    fixed_grid = load_grid(oblique_pair["fixed"])
    assert transform.field_grid.shape != fixed_grid.shape  # the network grid, not the fixed one
    compact, full = compare_compact_and_full(oblique_pair, transform, None, tmp_path)
    for key in ("labels", "inverse_labels"):
        same = compact[key] == full[key]
        labelled = (compact[key] != 0) | (full[key] != 0)
        assert same.mean() >= 0.99 and labelled.sum() > 1000 and same[labelled].mean() >= 0.985, key


@pytest.mark.slow
def test_antspyx_applies_the_rounded_antssyn_field_as_the_computed_one(oblique_pair, tmp_path):
    """antspyx SyN's field stays on the fixed image's grid (no coarser grid keeps its labels):
    written compact, rounded to FIELD_STEP_MM, it warps as the field it computed does, both ways
    (no more than the labels of the voxels within 0.001 mm of a voxel boundary flip), from a file
    less than half the size."""
    method = TABLE["antssyn"]
    [stage] = method.stages
    transform = stage.register(str(oblique_pair["fixed"]), str(oblique_pair["moving"]), build_config(method.config, {}),
                               Context(seed=0, threads=2)).transform
    assert method.field_spacing is None and transform.field_grid.shape == load_grid(oblique_pair["fixed"]).shape
    compact, full = compare_compact_and_full(oblique_pair, transform, method.field_spacing, tmp_path, ratio=2.0)
    for key in ("labels", "inverse_labels"):
        labelled = (compact[key] != 0) | (full[key] != 0)
        assert labelled.sum() > 1000 and (compact[key] == full[key])[labelled].mean() >= 0.999, key


def compare_compact_and_full(paths: dict, transform: Transform, spacing: float | None, folder, ratio: float = 2.5):
    """The four antspyx warps (:func:`warped_both_ways`) with the transform as
    ``--output-resolution compact`` and ``full`` write it; checks that the compact files are
    ``ratio`` times smaller, the warped images correlate (r > 0.999) and the warp is a real
    registration's (the labels moved); returns the compact and full warps."""
    files = {}
    for name in ("compact", "full"):
        files[name] = (folder / f"{name}_xfm.h5", folder / f"{name}_inverse_xfm.h5")
        output_transform(transform, paths["fixed"], spacing, name).write(*files[name])
    sizes = {name: sum(f.stat().st_size for f in pair) for name, pair in files.items()}
    assert sizes["compact"] < sizes["full"] / ratio, sizes
    compact, full = (warped_both_ways(paths, *files[name]) for name in ("compact", "full"))
    brains = {"image": load_volume(paths["fixed"]).data > 0.05, "inverse_image": load_volume(paths["moving"]).data > 0.05}
    for key, brain in brains.items():
        assert np.corrcoef(compact[key][brain], full[key][brain])[0, 1] > 0.999, key
    assert (full["inverse_labels"] != load_volume(paths["moving_labels"], labels=True).data).mean() > 0.01
    return compact, full
