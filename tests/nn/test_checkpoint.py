"""Checkpoints that load without running code (bidsreg.nn.checkpoint)."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bidsreg.nn.checkpoint import FORMAT, VERSION, load_checkpoint, save_checkpoint



class SideEffect:
    """Unpickling this object creates ``target`` (``open(target, "w")``)."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_side_effect_payload_really_runs_when_unpickled_unsafely(tmp_path):
    """Sanity check of the payload used below: plain pickle does create the file."""
    target = tmp_path / "ran.txt"
    pickle.loads(pickle.dumps(SideEffect(target))).close()
    assert target.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["pickle", "torch"])
def test_load_checkpoint_refuses_code_and_does_not_run_it(tmp_path, container):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "version": VERSION, "networks": SideEffect(target)}
    if container == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    refusal = "would run code: refused" if container == "torch" else "not a torch checkpoint file"  # refused unread
    with pytest.raises(ValueError, match=refusal) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not target.exists()


def test_load_checkpoint_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ValueError, match="not a torch checkpoint file"):
        load_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_checkpoint_random_pickle(tmp_path):
    path = tmp_path / "list.pt"
    path.write_bytes(pickle.dumps([1, 2.0, "three", {"four": 4}]))
    with pytest.raises(ValueError, match=str(path)):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "payload",
    [
        {"state": {"w": torch.zeros(3)}},
        {"format": "someone-else", "version": VERSION},
        [torch.zeros(2)],
    ],
    ids=["no-tag", "other-tag", "not-a-dict"],
)
def test_load_checkpoint_plain_torch_file_without_the_tag(tmp_path, payload):
    path = tmp_path / "plain.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="not a bidsreg checkpoint"):
        load_checkpoint(path)


def test_load_checkpoint_other_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "version": VERSION + 1}, path)
    with pytest.raises(ValueError, match="version"):
        load_checkpoint(path)


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_load_checkpoint_truncated_torch_file(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"networks": {}, "x": torch.arange(1000)})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_checkpoint(path)


def test_load_checkpoint_empty_file(tmp_path):
    path = tmp_path / "model.pt"
    path.touch()
    with pytest.raises(ValueError, match="the file is empty"):
        load_checkpoint(path)


def test_save_checkpoint_tags_the_payload():
    buffer = io.BytesIO()
    save_checkpoint(buffer, {"x": torch.ones(2)})
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert loaded["format"] == FORMAT and loaded["version"] == VERSION and torch.equal(loaded["x"], torch.ones(2))
