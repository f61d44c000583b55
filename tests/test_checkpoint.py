"""Checkpoints: atomic writes, clear errors for bad files and foreign weights."""

import os

import pytest
import torch

from semseg.checkpoint import CheckpointError, build_model_from, load_checkpoint, save_checkpoint
from semseg.labels import CAMVID
from semseg.models import create_model


def _payload(model_name="unet", **arguments):
    model = create_model(model_name, CAMVID.num_classes, **arguments)
    return {
        "model": {"name": model_name, "arguments": arguments, "state_dict": model.state_dict()},
        "labels": CAMVID.to_dict(),
    }, model


def test_round_trip_rebuilds_the_same_model(tmp_path):
    payload, model = _payload(base_channels=4, depth=2)
    save_checkpoint(tmp_path / "a.pt", payload)
    rebuilt = build_model_from(load_checkpoint(tmp_path / "a.pt"))
    x = torch.randn(1, 3, 32, 48)
    model.eval()
    assert torch.equal(model(x), rebuilt(x))
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary left behind


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"value": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"value": 2})
    assert load_checkpoint(path)["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bad_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt: cannot read checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a semseg checkpoint"):
        load_checkpoint(foreign)


def test_weights_of_another_model_are_refused(tmp_path):
    payload, _ = _payload(base_channels=4, depth=2)
    payload["model"]["arguments"] = {"base_channels": 8, "depth": 2}  # claims another shape
    save_checkpoint(tmp_path / "x.pt", payload)
    with pytest.raises(CheckpointError, match="x.pt: weights do not fit this model"):
        build_model_from(load_checkpoint(tmp_path / "x.pt"), str(tmp_path / "x.pt"))
