"""Checkpoints: the typed round trip, atomic writes, clear errors for bad files, old formats
and foreign weights."""

import os

import pytest
import torch

from semseg.checkpoint import FORMAT, VERSION, Checkpoint, CheckpointError
from semseg.labels import CAMVID
from semseg.models import create_model


def _checkpoint(model_name="unet", **arguments):
    torch.manual_seed(0)
    model = create_model(model_name, CAMVID.num_classes, **arguments)
    checkpoint = Checkpoint(
        model_name=model_name,
        model_args=arguments,
        labels=CAMVID,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        state_dict=model.state_dict(),
        recipe={"seed": 3},
        training={"epoch": 2, "global_step": 10},
    )
    return checkpoint, model


def test_round_trip_keeps_every_field_and_rebuilds_the_same_model(tmp_path):
    checkpoint, model = _checkpoint(base_channels=4, depth=2)
    checkpoint.save(tmp_path / "a.pt")
    assert checkpoint.path == tmp_path / "a.pt"
    loaded = Checkpoint.load(tmp_path / "a.pt")
    assert (loaded.model_name, loaded.model_args) == ("unet", {"base_channels": 4, "depth": 2})
    assert loaded.labels == CAMVID and loaded.ignore_index == 255
    assert loaded.mean == (0.485, 0.456, 0.406) and loaded.std == (0.229, 0.224, 0.225)
    assert loaded.recipe == {"seed": 3} and loaded.training == {"epoch": 2, "global_step": 10}
    assert not loaded.is_onnx and loaded.version == VERSION
    x = torch.randn(1, 3, 32, 48)
    assert torch.equal(model.eval()(x), loaded.build_model()(x))
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary left behind


def test_the_file_is_plain_data_in_the_documented_layout(tmp_path):
    checkpoint, _ = _checkpoint(base_channels=4, depth=2)
    checkpoint.save(tmp_path / "a.pt")
    data = torch.load(tmp_path / "a.pt", weights_only=True)
    assert (data["format"], data["version"]) == (FORMAT, VERSION)
    assert data["model"]["name"] == "unet" and data["ignore_index"] == 255
    assert data["labels"] == CAMVID.to_dict()
    assert data["normalisation"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_sha256_is_that_of_the_file(tmp_path):
    import hashlib

    checkpoint, _ = _checkpoint(base_channels=4, depth=2)
    checkpoint.save(tmp_path / "a.pt")
    expected = hashlib.sha256((tmp_path / "a.pt").read_bytes()).hexdigest()
    assert Checkpoint.load(tmp_path / "a.pt").sha256() == expected


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    first, _ = _checkpoint(base_channels=4, depth=2)
    first.save(path)
    second, _ = _checkpoint(base_channels=4, depth=2)
    second.training = {"epoch": 3}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        second.save(path)
    assert Checkpoint.load(path).training["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bad_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        Checkpoint.load(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt: cannot read checkpoint"):
        Checkpoint.load(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a semseg checkpoint"):
        Checkpoint.load(foreign)
    truncated = tmp_path / "truncated.pt"
    torch.save({"format": FORMAT, "version": VERSION, "model": {"name": "unet"}}, truncated)
    with pytest.raises(CheckpointError, match="truncated.pt: entry .* missing or invalid"):
        Checkpoint.load(truncated)


def test_another_format_version_says_how_to_convert(tmp_path):
    checkpoint, _ = _checkpoint(base_channels=4, depth=2)
    data = checkpoint.to_dict() | {"version": VERSION + 1}
    torch.save(data, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=r"new.pt: checkpoint format version 2.*re-save"):
        Checkpoint.load(tmp_path / "new.pt")


def test_weights_of_another_model_are_refused(tmp_path):
    checkpoint, _ = _checkpoint(base_channels=4, depth=2)
    checkpoint.model_args = {"base_channels": 8, "depth": 2}  # claims another shape
    checkpoint.save(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="x.pt: weights do not fit this model"):
        Checkpoint.load(tmp_path / "x.pt").build_model()
