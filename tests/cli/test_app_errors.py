"""Bad input: a one-line error naming the file and the fix, the BIDS-Apps exit code, and earlier
outputs left intact (every check runs before any output is written)."""
from __future__ import annotations

import gzip
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
import torch

from bidsreg import exit_codes
from bidsreg.cli.run import main

SENTINEL = '{"earlier": "output"}'


@pytest.fixture()
def dataset(bids_dataset, tmp_path) -> Path:
    """A copy of the phantom dataset to break."""
    return Path(shutil.copytree(bids_dataset, tmp_path / "bids"))


@pytest.fixture()
def out(tmp_path) -> Path:
    """An output folder holding an earlier output that a failed run must not touch."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "dataset_description.json").write_text(SENTINEL)
    return folder


@pytest.fixture()
def model(tmp_path, trained_model) -> Path:
    return Path(trained_model.source)


def _run(capsys, bids: Path, out: Path, *options: str, level: str = "participant") -> tuple[int, str]:
    code = main([str(bids), str(out), level, "--skip-bids-validation", *options])
    error = capsys.readouterr().err.strip().splitlines()
    return code, error[-1] if error else ""


def _labels(bids: Path) -> list[str]:
    return ["--labels", str(bids / "derivatives/manual"), "--labels-desc", "phantom"]


def _unchanged(out: Path) -> bool:
    return (out / "dataset_description.json").read_text() == SENTINEL and not (out / "sub-02").exists()


def test_not_a_bids_dataset(capsys, tmp_path, out):
    (tmp_path / "empty").mkdir()
    code, line = _run(capsys, tmp_path / "empty", out, "--fixed", "sub-01")
    assert code == exit_codes.VALIDATION_FAILED and "not a BIDS dataset" in line and _unchanged(out)


def test_the_validator_runs_by_default(capsys, tmp_path, out):
    bids = tmp_path / "bad"
    (bids / "sub-01/anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    (bids / "sub-01/anat/sub-01_T1w.nii.gz").write_bytes(b"not a nifti")
    code = main([str(bids), str(out), "participant", "--fixed", "sub-01"])  # no --skip-bids-validation
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == exit_codes.VALIDATION_FAILED and "sub-01_T1w.nii.gz" in line and _unchanged(out)


def test_subject_without_t1w(capsys, dataset, out, model):
    (dataset / "sub-03/anat/sub-03_T1w.nii.gz").unlink()
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(model))
    assert code == exit_codes.INPUT_MISSING and "sub-03: no T1w image" in line and _unchanged(out)


def test_participant_label_matching_nothing(capsys, dataset, out, model):
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--participant-label", "09", "--model", str(model))
    assert code == exit_codes.NO_FILES and "sub-09" in line and _unchanged(out)


def test_fixed_subject_without_labels_when_overlaps_are_asked(capsys, dataset, out, model):
    (dataset / "derivatives/manual/sub-01/anat/sub-01_desc-phantom_dseg.nii.gz").unlink()
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(model), *_labels(dataset))
    assert code == exit_codes.INPUT_MISSING and "sub-01_T1w.nii.gz: the fixed image has no label map" in line
    assert _unchanged(out)


def test_label_map_on_another_grid(capsys, dataset, out, model):
    path = dataset / "derivatives/manual/sub-02/anat/sub-02_desc-phantom_dseg.nii.gz"
    nb.save(nb.Nifti1Image(np.ones((20, 24, 20), np.int16), np.diag([6.0, 6.0, 6.0, 1.0])), path)
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(model), *_labels(dataset))
    assert code == exit_codes.BAD_INPUT and str(path) in line and "another grid" in line and _unchanged(out)


@pytest.mark.parametrize("output", ["same", "inside"])
def test_output_dir_equal_to_or_inside_the_bids_dir(capsys, dataset, output):
    target = dataset if output == "same" else dataset / "sub-01" / "bidsreg"
    with pytest.raises(SystemExit) as info:
        main([str(dataset), str(target), "participant", "--fixed", "sub-01"])
    assert info.value.code == exit_codes.USAGE and "inside" in capsys.readouterr().err
    assert not (dataset / "sub-01" / "bidsreg").exists()


def test_output_dir_in_the_bids_dirs_derivatives_is_a_derivatives_dataset_the_inputs_ignore(capsys, dataset):
    """Where fMRIPrep users put derivatives: the validator passes, and a rerun does not take
    bidsreg's own warped T1w images for inputs."""
    out = dataset / "derivatives" / "bidsreg"
    argv = [str(dataset), str(out), "participant", "--fixed", "sub-01", "--methods", "antsaffine",
            "--ants-affine-iterations", "20", "10", *_labels(dataset)]
    assert main(argv) == exit_codes.OK  # validated: the outputs do not trouble the validator
    warped = sorted(p.name for p in out.glob("sub-*/anat/*_T1w.nii.gz"))
    assert warped == [f"sub-0{s}_space-sub01_desc-antsaffine_T1w.nii.gz" for s in (2, 3)]
    capsys.readouterr()
    assert main(argv) == exit_codes.OK
    assert "registering 2 image(s) to sub-01" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("sub-*/anat/*_T1w.nii.gz")) == warped


def test_a_filter_file_with_a_misspelt_entity_or_selecting_nothing(capsys, dataset, out, model, tmp_path):
    filters = tmp_path / "filters.json"
    filters.write_text('{"t1w": {"acqusition": "MPRAGE"}}')
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(model), "--bids-filter-file", str(filters))
    assert code == exit_codes.BAD_INPUT and str(filters) in line and "Did you mean ['acquisition']?" in line
    assert _unchanged(out)
    filters.write_text('{"t1w": {"acquisition": "MPRAGE"}}')
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(model), "--bids-filter-file", str(filters))
    assert code == exit_codes.NO_FILES and "matches the filters" in line and "change the filter file" in line
    assert _unchanged(out)


def test_a_labels_desc_that_does_not_exist_lists_those_that_do(capsys, dataset, out, model):
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(model),
                      "--labels", str(dataset / "derivatives/manual"), "--labels-desc", "Phantom")
    assert code == exit_codes.INPUT_MISSING and "--labels-desc phantom" in line and _unchanged(out)


@pytest.mark.parametrize("kind", ["corrupt", "4d", "nan"])
def test_unreadable_or_bad_nifti(capsys, dataset, out, model, kind):
    path = dataset / "sub-02/anat/sub-02_T1w.nii.gz"
    image = nb.load(path)
    data = np.asarray(image.dataobj, dtype=np.float32)
    if kind == "corrupt":
        path.write_bytes(gzip.compress(b"\x00" * 100))
    elif kind == "4d":
        nb.save(nb.Nifti1Image(np.stack([data, data], -1), image.affine), path)
    else:
        data[10, 10, 10] = np.nan
        nb.save(nb.Nifti1Image(data, image.affine), path)
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(model))
    assert code == exit_codes.BAD_INPUT and str(path) in line and _unchanged(out)


@pytest.mark.parametrize("level", ["participant", "train"])
def test_an_image_that_is_not_a_brain(capsys, dataset, out, model, level):
    """A failed skull strip (a 12 mm blob left of the brain) is refused before any output."""
    path = dataset / "sub-02/anat/sub-02_T1w.nii.gz"
    image = nb.load(path)
    data = np.zeros(image.shape, np.float32)
    data[10:14, 20:24, 15:19] = 500.0
    nb.save(nb.Nifti1Image(data, image.affine), path)
    options = ["--fixed", "sub-01", "--model", str(model)] if level == "participant" else ["--affine-steps", "1"]
    code, line = _run(capsys, dataset, out, *options, level=level)
    assert code == exit_codes.BAD_INPUT and str(path) in line and "too small for a brain" in line
    assert _unchanged(out) and not (out / "models").exists()


def test_unknown_method_and_unknown_level(capsys, dataset, out):
    with pytest.raises(SystemExit) as info:
        main([str(dataset), str(out), "participant", "--methods", "cnn,elastic"])
    err = capsys.readouterr().err
    assert info.value.code == exit_codes.USAGE and "elastic" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as info:
        main([str(dataset), str(out), "subject"])
    assert info.value.code == exit_codes.UNKNOWN_LEVEL and _unchanged(out)


class _Payload:  # a pickled object whose loading would run code
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("kind", ["not-torch", "other-dict", "pickle", "code"])
def test_a_checkpoint_that_is_not_bidsreg(capsys, dataset, out, tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "not-torch":
        path.write_text("hello")
    elif kind == "other-dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(_Payload()))
    else:
        torch.save({"format": "bidsreg-checkpoint", "version": 2, "networks": _Payload()}, path)
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(path))
    assert code == exit_codes.BAD_INPUT and str(path) in line and "bidsreg" in line and _unchanged(out)
    assert {"not-torch": "not a torch checkpoint file", "other-dict": "no 'bidsreg-checkpoint' tag",
            "pickle": "not a torch checkpoint file", "code": "would run code: refused"}[kind] in line
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["wrong-weights", "no-weights"])
def test_a_tagged_checkpoint_whose_weights_do_not_fit(capsys, dataset, out, model, tmp_path, damage):
    """Caught before any output by loading the weights into the networks, not mid-run."""
    payload = torch.load(model, weights_only=True)
    state = payload["state"]["deformable"]
    if damage == "wrong-weights":
        key = next(k for k, v in state.items() if v.ndim > 1)
        state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    else:
        del payload["state"]
    path = tmp_path / f"{damage}.pt"
    torch.save(payload, path)
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(path), "--methods", "cnn")
    assert code == exit_codes.BAD_INPUT and str(path) in line and "do not load" in line and _unchanged(out)


def test_no_model_anywhere_says_how_to_train_one(capsys, dataset, out, monkeypatch, tmp_path):
    from bidsreg.methods.table import TABLE

    for name in ("cnn", "cnnio"):  # an installation without the default weights
        method = TABLE[name]
        monkeypatch.setitem(TABLE, name, replace(method, network=replace(method.network, shipped=tmp_path / "none.pt")))
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01")
    assert code == exit_codes.INPUT_MISSING and "train" in line and "--model" in line and _unchanged(out)


def test_a_missing_model_file(capsys, dataset, out, tmp_path):
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--model", str(tmp_path / "none.pt"))
    assert code == exit_codes.INPUT_MISSING and "none.pt: --model file not found" in line and _unchanged(out)


def test_an_output_dir_that_cannot_be_created(capsys, dataset, tmp_path, model):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, line = _run(capsys, dataset, blocker / "out", "--fixed", "sub-01", "--model", str(model), "--methods", "cnn")
    assert code == exit_codes.CANNOT_CREATE_OUTPUT and "writable" in line


@pytest.mark.parametrize("labels", [True, False])
def test_what_will_not_be_measured_is_said_once_before_any_work(capsys, dataset, tmp_path, model, labels):
    """A moving image without a label map is named (it is registered, not measured); a run
    without --labels says once that nothing is measured. Both before any output (here the
    output folder cannot be made, the first write)."""
    (dataset / "derivatives/manual/sub-03/anat/sub-03_desc-phantom_dseg.nii.gz").unlink()
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code = main([str(dataset), str(blocker / "out"), "participant", "--skip-bids-validation", "--fixed", "sub-01",
                 "--model", str(model), "--methods", "cnn", *(_labels(dataset) if labels else [])])
    err = capsys.readouterr().err
    assert code == exit_codes.CANNOT_CREATE_OUTPUT
    missing = [line for line in err.splitlines() if "sub-03_T1w.nii.gz: no desc-phantom label map" in line]
    unmeasured = [line for line in err.splitlines() if "no --labels" in line]
    assert (len(missing), len(unmeasured)) == ((1, 0) if labels else (0, 1)), err


def test_group_without_participant_results(capsys, dataset, out):
    code, line = _run(capsys, dataset, out, level="group")
    assert code == exit_codes.INPUT_MISSING and "participant" in line and _unchanged(out)


def test_a_fixed_file_whose_name_makes_no_space_label(capsys, dataset, out, model, tmp_path):
    odd = tmp_path / "_T1w.nii.gz"
    shutil.copyfile(dataset / "sub-01/anat/sub-01_T1w.nii.gz", odd)
    code, line = _run(capsys, dataset, out, "--fixed", str(odd), "--model", str(model))
    assert code == exit_codes.BAD_INPUT and "rename it" in line and _unchanged(out)


def test_voxelmorph_without_a_one_stage_model(capsys, dataset, out):
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--methods", "cnn,voxelmorph")
    assert code == exit_codes.INPUT_MISSING and "bidsreg_voxelmorph.pt" in line and _unchanged(out)
    assert "train --methods voxelmorph" in line


def test_a_checkpoint_of_the_other_kind(capsys, dataset, out, model):
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--methods", "voxelmorph",
                      "--voxelmorph-model", str(model))
    assert code == exit_codes.BAD_INPUT and str(model) in line and "two-stage" in line and _unchanged(out)


def test_bspline_without_elastix(capsys, dataset, out, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    code, line = _run(capsys, dataset, out, "--fixed", "sub-01", "--methods", "bspline")
    assert code == exit_codes.INPUT_MISSING and "apt-get install elastix" in line and _unchanged(out)


@pytest.mark.parametrize("options", [["--demons-shrink-factors", "2", "1"], ["--bspline-iterations", "0", "0", "0"]])
def test_method_parameters_that_make_no_configuration(capsys, dataset, out, options):
    with pytest.raises(SystemExit) as info:
        main([str(dataset), str(out), "participant", "--methods", "demons,bspline", *options])
    assert info.value.code == exit_codes.USAGE and "method parameters" in capsys.readouterr().err and _unchanged(out)


def test_train_needs_a_network_method(capsys, dataset, out):
    code, line = _run(capsys, dataset, out, "--methods", "antssyn", level="train")
    assert code == exit_codes.BAD_INPUT and "cnn and/or cnnio and/or voxelmorph" in line and _unchanged(out)
