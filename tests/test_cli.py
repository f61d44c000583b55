"""The command line end to end on tiny synthetic runs."""

import json

import pytest
import torch
from click.testing import CliRunner

from semseg.checkpoint import Checkpoint
from semseg.cli import main
from semseg.models import list_models
from semseg.models.backbones import create_vgg

TINY = [
    "--set", "data.synthetic_train_size=8",
    "--set", "data.synthetic_val_size=3",
    "--set", "data.synthetic_image_size=[48,64]",
    "--set", "augment.crop_size=[48,64]",
    "--set", "model.base_channels=4",
    "--set", "model.depth=2",
    "--set", "train.batch_size=4",
    "--set", "train.epochs=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(main, ["train", "--recipe", "demo", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out


def test_train_prints_the_table_and_keeps_checkpoints(trained_run):
    assert (trained_run / "best.pt").is_file()
    assert (trained_run / "last.pt").is_file()


def test_evaluate_writes_json_with_the_documented_fields(trained_run, tmp_path):
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(
        main, ["evaluate", "--checkpoint", str(trained_run / "best.pt"), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    for key in ("miou", "pixel_accuracy", "mean_class_accuracy", "fw_iou"):
        assert 0.0 <= scores[key] <= 1.0
    assert set(scores["per_class_iou"]) == {
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "Car", "Pedestrian",
    }  # fmt: skip
    matrix = scores["confusion_matrix"]
    assert len(matrix) == 8 and all(len(row) == 8 for row in matrix)
    # 3 validation scenes of 48x64 pixels, none void
    assert sum(map(sum, matrix)) == 3 * 48 * 64
    assert "mIoU" in result.output and "Road" in result.output


def test_train_reports_bad_keys_without_traceback(tmp_path):
    result = CliRunner().invoke(
        main, ["train", "--recipe", "demo", "--out", str(tmp_path), "train.epoks=2"]
    )
    assert result.exit_code != 0
    assert "unknown key 'train.epoks'" in result.output
    assert "Traceback" not in result.output


def test_evaluate_names_a_missing_dataset(trained_run, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--checkpoint",
            str(trained_run / "best.pt"),
            "--format",
            "camvid",
            "--data",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code != 0
    assert "dataset folder not found" in result.output


def test_models_lists_the_registry():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert listed == list_models()


def test_stats_prints_both_weight_definitions():
    result = CliRunner().invoke(main, ["stats", "--split", "val"])
    assert result.exit_code == 0, result.output
    assert "w (images)" in result.output and "w (pixels)" in result.output
    assert "class_weights: [" in result.output


def test_train_prints_the_encoder_weights_report(tmp_path):
    state = create_vgg("vgg16", width_divisor=16).state_dict()
    weights = tmp_path / "vgg16.pth"
    torch.save({**state, "classifier.6.weight": torch.zeros(1000, 256)}, weights)
    tiny = [*TINY[:8], "train.batch_size=4", "train.epochs=1"]  # synthetic 48x64 scenes
    result = CliRunner().invoke(
        main,
        ["train", "--recipe", "demo", "--out", str(tmp_path / "run"), *tiny, "model.name=naive",
         "model.width_divisor=16", f"model.encoder_weights={weights}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"encoder weights from {weights}: loaded {len(state)} tensors, skipped 1, missing 0" in (
        result.output
    )
    assert "skipped classifier.6.weight: the model has no such entry" in result.output


def test_a_relative_data_path_is_found_from_another_folder(
    tmp_path, monkeypatch, make_camvid, random_pair
):
    make_camvid(
        {split: [random_pair(i, size=(32, 40)) for i in range(2)] for split in ("train", "val")}
    )
    monkeypatch.chdir(tmp_path)
    tiny = ["augment.crop_size=[32,40]", "model.base_channels=4", "model.depth=2",
            "train.batch_size=2", "train.epochs=1"]  # fmt: skip
    result = CliRunner().invoke(
        main, ["train", "--recipe", "demo", "--data", "camvid", "--out", "run", *tiny]
    )
    assert result.exit_code == 0, result.output
    assert Checkpoint.load(tmp_path / "run" / "best.pt").recipe["data"]["root"] == str(
        tmp_path / "camvid"
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", "../run/best.pt"])
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output
