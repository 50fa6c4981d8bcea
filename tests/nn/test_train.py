"""Training in memory (bidsreg.nn.train): configuration, the save callback, resuming from a payload."""
from __future__ import annotations

import pytest
import torch

from bidsreg.image import load_volume
from bidsreg.nn.train import TrainConfig, same_run, train, training_data


@pytest.fixture(scope="module")
def volumes(phantom_files) -> list:
    return [load_volume(phantom_files["fixed"]), load_volume(phantom_files["moving"])]


def test_train_config_round_trips_through_a_dict(make_config):
    config = make_config(diffeomorphic=True, max_rotation=5.0, fixed_max_translation=1.0)
    values = config.to_dict()
    assert values["encoder"] == [8, 16, 16, 16] and values["preprocess"]["spacing"] == 4.0
    assert TrainConfig.from_dict(values) == config


@pytest.mark.parametrize(
    "changes, word",
    [
        (dict(affine_steps=-1), "affine_steps"),
        (dict(deformable_steps=-5), "deformable_steps"),
        (dict(checkpoint_every=0), "checkpoint_every"),
        (dict(smoothness=-0.1), "smoothness"),
    ],
)
def test_train_config_rejects_bad_values(changes, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(**changes)


def test_train_needs_two_images(volumes, make_config):
    with pytest.raises(ValueError, match="at least 2"):
        train(volumes[:1], make_config(), device="cpu", progress=False)


def test_save_is_called_every_few_steps_and_at_the_end(volumes, make_config):
    saved = []
    payload = train(volumes, make_config(affine_steps=3, deformable_steps=2), device="cpu", progress=False,
                    save=lambda p: saved.append((p["training"]["steps"], p["training"]["complete"])))
    assert saved == [(2, False), (4, False), (5, True)] and payload["training"]["complete"]
    assert payload["training"]["data"] == training_data(volumes)


def test_a_payload_resumes_to_the_uninterrupted_run(volumes, make_config):
    config = make_config()
    whole = train(volumes, config, device="cpu", progress=False)
    part = train(volumes, config, device="cpu", progress=False, until=4)
    assert same_run(part, config, volumes) and not part["training"]["complete"]
    resumed = train(volumes, config, device="cpu", progress=False, resume=part)
    for net in ("affine", "deformable"):
        for key, value in whole["state"][net].items():
            assert torch.equal(value, resumed["state"][net][key]), key
    assert train(volumes, config, device="cpu", progress=False, resume=resumed) is resumed
    assert not same_run(part, make_config(seed=3), volumes) and not same_run(part, config, volumes[::-1])
    with pytest.raises(ValueError, match="another configuration"):
        train(volumes, make_config(seed=3), device="cpu", progress=False, resume=part)


def test_a_training_starts_from_the_weights_of_another_and_records_them(volumes, make_config):
    displacement = make_config(diffeomorphic=False, affine_steps=2, deformable_steps=1)
    initial = train(volumes, displacement, device="cpu", progress=False)
    config = make_config(diffeomorphic=True, affine_steps=0, deformable_steps=0, seed=1)
    started = train(volumes, config, device="cpu", progress=False, initial=initial)
    for net in ("affine", "deformable"):  # no step: the weights are the initial ones
        for key, value in initial["state"][net].items():
            assert torch.equal(value, started["state"][net][key]), key
    record = started["training"]["initial"]
    assert record["steps"] == 3 and record["config"] == displacement.to_dict() and "history" not in record
    assert started["networks"]["deformable"]["diffeomorphic"]
    assert same_run(started, config, volumes, initial) and not same_run(started, config, volumes)
    tuned = make_config(diffeomorphic=True, affine_steps=2, deformable_steps=2, seed=1)
    part = train(volumes, tuned, device="cpu", progress=False, initial=initial, until=2)
    resumed = train(volumes, tuned, device="cpu", progress=False, initial=initial, resume=part)
    whole = train(volumes, tuned, device="cpu", progress=False, initial=initial)
    for key, value in whole["state"]["deformable"].items():
        assert torch.equal(value, resumed["state"]["deformable"][key]), key
    assert resumed["training"]["initial"] == record
    with pytest.raises(ValueError, match="initial weights"):
        train(volumes, tuned, device="cpu", progress=False, resume=part)


def test_initial_weights_of_other_widths_are_refused(volumes, make_config):
    initial = train(volumes, make_config(affine_steps=1, deformable_steps=0), device="cpu", progress=False)
    with pytest.raises(ValueError, match="other widths"):
        train(volumes, make_config(encoder=(8, 16, 16, 8)), device="cpu", progress=False, initial=initial)
