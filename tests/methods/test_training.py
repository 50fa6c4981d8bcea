"""Training a network method's checkpoint from files (bidsreg.methods.training) on the phantom pair."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bidsreg.image import load_volume
from bidsreg.methods.cnn import register_pair
from bidsreg.methods.training import train_model, write_checkpoint
from bidsreg.nn.affine_stage import global_world_map
from bidsreg.nn.checkpoint import FORMAT, VERSION, build_networks, load_checkpoint
from bidsreg.nn.grid import NetworkGrid, PreprocessConfig, prepare_image, translation
from bidsreg.nn.model import RegistrationModel
from bidsreg.transform import Transform


def assert_same_weights(a: dict, b: dict) -> None:
    for net in ("affine", "deformable"):
        assert a["state"][net].keys() == b["state"][net].keys()
        for key, value in a["state"][net].items():
            assert torch.equal(value, b["state"][net][key]), f"{net}.{key} differs"


@pytest.fixture(scope="module")
def images(phantom_files) -> list[str]:
    return [phantom_files["fixed"], phantom_files["moving"]]


@pytest.fixture(scope="module")
def reference(images, make_config, tmp_path_factory) -> dict:
    """An uninterrupted tiny training: 3 affine then 3 deformable steps."""
    return train_model(images, tmp_path_factory.mktemp("ref") / "ref.pt", make_config(), device="cpu", progress=False)


# ---------------------------------------------------------------- configuration and augmentation


# ---------------------------------------------------------------- checkpoint contents


def test_finished_checkpoint_loads_safely_and_carries_its_configuration(reference, images, make_config, tmp_path):
    path = tmp_path / "model.pt"
    payload = train_model(images, path, make_config(), device="cpu", progress=False)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == VERSION
    assert set(raw["networks"]) == {"affine", "deformable"}
    assert raw["networks"]["affine"] == {"features": [8, 16, 16], "hidden": 256, "norm": True, "pool": 2, "passes": 2}
    assert raw["networks"]["deformable"]["encoder"] == [8, 16, 16, 16]
    assert raw["preprocess"] == PreprocessConfig(spacing=4.0).to_dict()
    training = raw["training"]
    assert training["config"] == make_config().to_dict()
    assert training["data"] == {"n_images": 2, "images": [Path(p).name for p in images]}
    assert training["seed"] == 0 and training["complete"] is True and training["steps"] == 6
    assert [len(training["history"][k]) for k in ("affine", "deformable")] == [3, 3]
    assert 0 < training["seconds"] < 600
    assert "resume" not in raw  # no optimiser state in a finished model
    assert_same_weights(raw, payload)
    affine_net, deformable_net = build_networks(raw)
    assert not affine_net.training and not deformable_net.training
    for key, value in affine_net.state_dict().items():
        assert torch.equal(value, raw["state"]["affine"][key])
    model = RegistrationModel.from_checkpoint(path, device="cpu")
    assert model.preprocess == PreprocessConfig(spacing=4.0) and model.window == 9


def test_training_a_finished_checkpoint_returns_it_unchanged(reference, images, make_config, tmp_path):
    path = tmp_path / "model.pt"
    first = train_model(images, path, make_config(), device="cpu", progress=False)
    before = path.read_bytes()
    again = train_model(images, path, make_config(), device="cpu", progress=False)
    assert path.read_bytes() == before
    assert_same_weights(first, again)


# ---------------------------------------------------------------- determinism and resume


def test_same_seed_gives_identical_weights(reference, images, make_config, tmp_path):
    again = train_model(images, tmp_path / "again.pt", make_config(), device="cpu", progress=False)
    assert_same_weights(reference, again)
    assert again["training"]["history"] == reference["training"]["history"]


def test_other_seed_gives_other_weights(reference, images, make_config, tmp_path):
    other = train_model(images, tmp_path / "other.pt", make_config(seed=1), device="cpu", progress=False)
    assert not torch.equal(other["state"]["affine"]["out.weight"], reference["state"]["affine"]["out.weight"])


@pytest.mark.parametrize("until", [1, 2, 4, 5])
def test_resumed_training_equals_uninterrupted(reference, images, make_config, tmp_path, until):
    """Stop after ``until`` steps (in the affine or in the deformable stage), then resume."""
    path = tmp_path / "run.pt"
    partial = train_model(images, path, make_config(), device="cpu", progress=False, until=until)
    assert partial["training"]["complete"] is False and partial["resume"]["step"] == until
    on_disk = torch.load(path, weights_only=True)
    assert on_disk["resume"]["step"] == until and not on_disk["training"]["complete"]
    resumed = train_model(images, path, make_config(), device="cpu", progress=False)
    assert resumed["training"]["complete"] is True
    assert_same_weights(reference, resumed)
    assert resumed["training"]["history"] == reference["training"]["history"]
    assert resumed["training"]["seconds"] >= partial["training"]["seconds"]


def test_periodic_checkpoints_are_resumable(images, make_config, tmp_path, monkeypatch):
    """A run killed after a periodic checkpoint (every 2 steps) continues from it exactly."""
    import shutil

    from bidsreg.methods import training

    config = make_config(affine_steps=3, deformable_steps=2)
    saved = []

    def keep_copies(path, payload):
        write_checkpoint(path, payload)
        copy = tmp_path / f"step{payload['training']['steps']}.pt"
        shutil.copy(path, copy)
        saved.append(copy.name)

    monkeypatch.setattr(training, "write_checkpoint", keep_copies)
    full = train_model(images, tmp_path / "full.pt", config, device="cpu", progress=False)
    monkeypatch.undo()
    assert saved == ["step2.pt", "step4.pt", "step5.pt"]
    for step in (2, 4):
        path = tmp_path / f"resume{step}.pt"
        shutil.copy(tmp_path / f"step{step}.pt", path)
        resumed = train_model(images, path, config, device="cpu", progress=False)
        assert_same_weights(full, resumed)


@pytest.mark.parametrize(
    "changes", [dict(learning_rate=1e-2), dict(seed=7), dict(preprocess=PreprocessConfig(spacing=4.0, margin=2.0))]
)
def test_resuming_with_another_configuration_raises(images, make_config, tmp_path, changes):
    path = tmp_path / "run.pt"
    train_model(images, path, make_config(), device="cpu", progress=False, until=1)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="another configuration"):
        train_model(images, path, make_config(**changes), device="cpu", progress=False)
    assert path.read_bytes() == before


def test_resuming_with_other_images_raises(images, phantom_files, make_config, tmp_path):
    path = tmp_path / "run.pt"
    train_model(images, path, make_config(), device="cpu", progress=False, until=1)
    with pytest.raises(ValueError, match="other images"):
        train_model([images[0], phantom_files["deformed"]], path, make_config(), device="cpu", progress=False)


def test_checkpoints_are_written_atomically(tmp_path):
    path = tmp_path / "sub" / "model.pt"
    write_checkpoint(path, {"x": torch.ones(2)})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    assert zipfile.is_zipfile(io.BytesIO(path.read_bytes()))
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT and torch.equal(loaded["x"], torch.ones(2))


# ---------------------------------------------------------------- learning: stage 1 recovers an affine


@pytest.mark.slow
def test_stage_one_recovers_a_known_affine(phantom, phantom_files, known_map, make_config, affine_training, tmp_path):
    """8° rotation, 4 mm shift and 5 % scaling, recovered to within 2 mm (half a grid voxel,
    2/3 of an image voxel) everywhere in the brain by 500 steps of stage 1 on the pair (no
    augmentation: it only has to learn both directions). Seeds 0-3 give 0.3-0.9 mm at most.

    On one torch thread, whatever ran before: a training is repeatable only for a given thread
    count, and the bound on the average of both directions after this brief training holds
    with one thread, not with two (the test depended on the order of the suite until the CNN
    interfaces stopped leaving their thread count behind)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _recover_known_affine(phantom, phantom_files, known_map, make_config, affine_training, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _recover_known_affine(phantom, phantom_files, known_map, make_config, affine_training, tmp_path):
    path = tmp_path / "affine.pt"
    config = make_config(**affine_training, deformable_steps=0)
    history = train_model([phantom_files["fixed"], phantom_files["moving"]], path, config, device="cpu", progress=False)
    losses = history["training"]["history"]["affine"]
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    model = RegistrationModel.from_checkpoint(path, device="cpu")
    cfg = model.preprocess
    points = phantom.brain_points()
    for fixed, moving, truth in (
        ("fixed", "moving", known_map),
        ("moving", "fixed", np.linalg.inv(known_map)),
    ):
        # The network in the direction and on the grid it was trained on.
        fixed_img, moving_img = (prepare_image(load_volume(phantom_files[key]), cfg) for key in (fixed, moving))
        grid = NetworkGrid.covering(fixed_img, cfg)
        com = translation(moving_img.centre - fixed_img.centre)
        with torch.no_grad():
            network = global_world_map(model.affine_net, grid, grid.resample(fixed_img), moving_img, com)
        true_points = Transform(truth).map_points(points)
        error = np.linalg.norm(Transform(network).map_points(points) - true_points, axis=1)
        start = np.linalg.norm(Transform(com).map_points(points) - true_points, axis=1)
        assert start.mean() > 2.0  # the centre of mass alone is not enough
        assert error.max() < 2.0, (fixed, error.max())
        # register_pair() averages both directions; the reverse one reads a grid framed on the
        # other image, which this brief training never saw, so only a looser bound holds.
        result = register_pair(phantom_files[fixed], phantom_files[moving], model)
        both = np.linalg.norm(result.transform.map_points(points) - true_points, axis=1)
        assert both.mean() < 0.5 * start.mean(), (fixed, both.mean(), start.mean())


def test_training_logs_a_line_every_few_steps(images, make_config, tmp_path):
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.INFO)
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    logger, handler = logging.getLogger("bidsreg"), Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        train_model(images, tmp_path / "m.pt", make_config(), device="cpu", progress=False, log_every=2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [line for line in handler.lines if line.startswith("training step")]
    assert [line.split()[2] for line in lines] == ["2/6", "4/6", "6/6"]
    assert "(affine)" in lines[0] and "(deformable)" in lines[-1] and "mean loss" in lines[0]


def test_a_fine_tuning_from_a_checkpoint_is_recorded_in_its_card(reference, images, make_config, tmp_path):
    from bidsreg.methods.model_card import write_model_card

    path, config = tmp_path / "tuned.pt", make_config(affine_steps=1, deformable_steps=1, seed=2)
    tuned = train_model(images, path, config, device="cpu", progress=False, initial=reference)
    on_disk = load_checkpoint(path)
    assert on_disk["training"]["initial"]["steps"] == reference["training"]["steps"] == 6
    card = write_model_card(path, tuned, "phantom", [])
    initial = json.loads(card.read_text())["Training"]["InitialWeights"]
    assert initial["Steps"] == 6 and initial["Field"] == "velocity" and initial["Images"] == 2
    with pytest.raises(ValueError, match="other initial weights"):
        train_model(images, path, config, device="cpu", progress=False)
