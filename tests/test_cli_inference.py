"""``semseg predict``, ``semseg export`` and ``semseg drivable`` end to end on tiny inputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from semseg.checkpoint import Checkpoint
from semseg.cli import main
from semseg.data.synthetic import render_scene
from semseg.inference.drivable import extract_drivable
from semseg.inference.predictor import Predictor
from semseg.inference.tta import InferenceOptions

from .inference_support import random_image, read_video, tiny_checkpoint, write_image, write_video


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two images named x.png in two folders, one in a third, and a 5-frame video."""
    root = tmp_path_factory.mktemp("inputs")
    write_image(root / "a" / "x.png", render_scene(30, 64, 80)[0])
    write_image(root / "b" / "x.png", render_scene(31, 48, 64)[0])
    write_image(root / "c" / "y.jpg", render_scene(32, 64, 80)[0])
    write_video(root / "clip.avi", [render_scene(s, 64, 80)[0] for s in range(5)], fps=9.0)
    return root


def run(*args: str) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


FP32_TORCH = ("--backend", "torch", "--precision", "fp32")
"""What ``Predictor.from_checkpoint`` runs: the outputs compared with it must come from it
(``auto`` may pick bf16 or another engine, whose top classes differ near ties)."""


def test_predict_images_folders_globs_and_video(checkpoint, inputs, tmp_path):
    out = tmp_path / "out"
    result = run(
        "predict", "--checkpoint", checkpoint, inputs / "a", f"{inputs}/b/*.png",
        inputs / "c" / "y.jpg", inputs / "clip.avi", "--out", out, "--batch-size", "2",
        "--probabilities", "--confidence", "--alpha", "0.7", *FP32_TORCH,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 of 4 inputs segmented" in result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        [f"{stem}_{kind}" for stem in ("x", "x_1", "y") for kind in
         ("labels.png", "overlay.png", "probabilities.npz", "confidence.png")]
        + ["clip_overlay.avi"]
    )  # fmt: skip
    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    second = np.array(Image.open(inputs / "b" / "x.png"))
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "x_1_labels.png")), predictor.predict(second).labels
    )
    frames, fps = read_video(out / "clip_overlay.avi")
    assert len(frames) == 5 and frames[0].shape[0] == 64 and fps == pytest.approx(9.0)


def test_tiling_and_tta_options_reach_the_predictor(checkpoint, inputs, tmp_path):
    result = run(
        "predict", "--checkpoint", checkpoint, inputs / "a" / "x.png", "--out", tmp_path,
        "--tile-size", "32", "40", "--overlap", "0.5", "--window", "uniform", "--hflip",
        "--scales", "0.5,1", "--tile-batch-size", "3", *FP32_TORCH,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    options = InferenceOptions(
        tile_size=(32, 40), overlap=0.5, window="uniform", hflip=True, scales=(0.5, 1.0),
        tile_batch_size=3,
    )  # fmt: skip
    expected = Predictor.from_checkpoint(checkpoint, "cpu", options).predict(
        np.array(Image.open(inputs / "a" / "x.png"))
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "x_labels.png")), expected.labels
    )


def test_failures_are_listed_and_the_exit_code_is_non_zero(checkpoint, inputs, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"nope")
    tiny = write_image(tmp_path / "tiny.png", random_image(0, 3, 3))
    result = run(
        "predict", "--checkpoint", checkpoint, broken, inputs / "c" / "y.jpg", bad_video, tiny,
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"failed: {broken}: cannot decode image" in result.output
    assert f"failed: {bad_video}: cannot decode video" in result.output
    assert f"failed: {tiny}: image is 3x3 pixels" in result.output
    assert "3 of 4 inputs failed" in result.output
    assert (tmp_path / "out" / "y_labels.png").is_file()


def test_output_that_would_overwrite_an_input_is_refused(checkpoint, tmp_path):
    folder = tmp_path / "pictures"
    write_image(folder / "s.png", render_scene(33, 64, 80)[0])
    first = run("predict", "--checkpoint", checkpoint, folder, "--out", folder)
    assert first.exit_code == 0, first.output
    again = run("predict", "--checkpoint", checkpoint, folder, "--out", folder)
    assert again.exit_code == 1
    assert "s_labels.png: output would overwrite the input" in again.output
    assert "Traceback" not in again.output


def test_a_missing_checkpoint_or_input_is_named(checkpoint, tmp_path):
    result = run("predict", "--checkpoint", tmp_path / "none.pt", checkpoint, "--out", tmp_path)
    assert result.exit_code == 1 and "none.pt: checkpoint not found" in result.output
    result = run("predict", "--checkpoint", checkpoint, tmp_path / "gone.png", "--out", tmp_path)
    assert result.exit_code == 1 and "gone.png: no such file" in result.output


def test_bad_scales_are_a_usage_error(checkpoint, inputs, tmp_path):
    result = run("predict", "--checkpoint", checkpoint, inputs / "a", "--out", tmp_path,
                 "--scales", "1,big")  # fmt: skip
    assert result.exit_code == 2 and "'1,big'" in result.output


def test_export_then_predict_with_the_onnx_file(checkpoint, inputs, tmp_path):
    model = tmp_path / "tiny.onnx"
    result = run("export", "--checkpoint", checkpoint, "--out", model)
    assert result.exit_code == 0, result.output
    assert "argmax agreement 100.0000%" in result.output
    result = run("predict", "--checkpoint", model, inputs / "a", "--out", tmp_path / "out",
                 "--backend", "onnxruntime", "--precision", "fp32")  # fmt: skip
    assert result.exit_code == 0, result.output
    image = np.array(Image.open(inputs / "a" / "x.png"))
    expected = Predictor.from_checkpoint(checkpoint, "cpu").predict(image).labels
    onnx_labels = np.asarray(Image.open(tmp_path / "out" / "x_labels.png"))
    assert (onnx_labels == expected).mean() >= 0.9999


def test_a_decompression_bomb_in_a_folder_is_reported_and_the_rest_segmented(
    checkpoint, tmp_path, png_claiming
):
    folder = tmp_path / "in"
    write_image(folder / "a.png", render_scene(33, 64, 80)[0])
    bomb = png_claiming(folder / "b.png", 60000, 60000)
    write_image(folder / "c.png", render_scene(34, 48, 64)[0])
    out = tmp_path / "out"
    result = run("predict", "--checkpoint", checkpoint, folder, "--out", out)
    assert result.exit_code == 1
    assert f"failed: {bomb}: refused before decoding" in result.output
    assert "2 of 3 inputs segmented" in result.output and "DecompressionBombError" not in (
        result.output
    )
    assert {p.name for p in out.iterdir()} == {
        "a_labels.png", "a_overlay.png", "c_labels.png", "c_overlay.png"
    }  # fmt: skip
    result = run("predict", "--checkpoint", checkpoint, folder / "c.png", "--out", out,
                 "--max-pixels", 48 * 64 - 1)  # fmt: skip
    assert result.exit_code == 1 and "over the limit of 3,071 pixels" in result.output


def test_drivable_default_road_and_named_classes(checkpoint, inputs, tmp_path):
    result = run("drivable", "--checkpoint", checkpoint, inputs / "a", "--out", tmp_path / "road")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "road" / "x_drivable.json").read_text())
    assert record["classes"] == ["Road"]
    assert len(record["boundary"]) == 80
    result = run("drivable", "--checkpoint", checkpoint, inputs / "a", "--out", tmp_path / "two",
                 "--classes", "road, 4")  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "two" / "x_drivable.json").read_text())
    assert record["classes"] == ["Road", "Pavement"]
    assert {p.name for p in (tmp_path / "two").iterdir()} == {
        "x_drivable.png", "x_drivable.json", "x_drivable_overlay.png"
    }  # fmt: skip


def test_drivable_area_thresholds_are_fractions_of_the_image(checkpoint, inputs, tmp_path):
    image = np.array(Image.open(inputs / "a" / "x.png"))
    labels = Predictor.from_checkpoint(checkpoint, "cpu").predict(image).labels
    bottom_left = int(labels[-1, 0])  # a class whose region touches the bottom row
    masks = []
    for hole, island in ((0.0, 0.0), (0.0, 1.0)):
        out = tmp_path / f"{hole}-{island}"
        result = run("drivable", "--checkpoint", checkpoint, inputs / "a", "--out", out,
                     "--classes", bottom_left, "--hole-fraction", hole,
                     "--island-fraction", island)  # fmt: skip
        assert result.exit_code == 0, result.output
        masks.append(np.asarray(Image.open(out / "x_drivable.png")) > 0)
        expected = extract_drivable(labels, [bottom_left], hole, island)
        np.testing.assert_array_equal(masks[-1], expected.mask)
    assert masks[0].any() and (masks[0] != masks[1]).any()
    result = run("drivable", "--checkpoint", checkpoint, inputs / "a", "--out", tmp_path / "x",
                 "--hole-fraction", "2")  # fmt: skip
    assert result.exit_code == 2 and "--hole-fraction" in result.output


def test_drivable_without_a_road_class_asks_for_classes(checkpoint, inputs, tmp_path):
    stored = Checkpoint.load(checkpoint)
    stored.labels = dataclasses.replace(stored.labels, names=tuple(f"class{i}" for i in range(8)))
    renamed = tmp_path / "renamed.pt"
    stored.save(renamed)
    result = run("drivable", "--checkpoint", renamed, inputs / "a", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "no class named Road" in result.output and "--classes" in result.output
    result = run("drivable", "--checkpoint", renamed, inputs / "a", "--out", tmp_path / "out",
                 "--classes", "Lawn")  # fmt: skip
    assert result.exit_code == 1 and "unknown class 'Lawn'" in result.output


def test_quantized_export_calibrates_on_the_training_split(checkpoint, inputs, tmp_path):
    model = tmp_path / "int8.onnx"
    result = run("export", "--checkpoint", checkpoint, "--out", model, "--quantize",
                 "--calibration-size", "2", "--no-check")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "int8 onnx (onnxruntime, calibrated on 2 images)" in result.output
    result = run("export", "--checkpoint", checkpoint, "--out", model, "--quantize",
                 "--calibration", inputs / "a", "--no-check")  # fmt: skip
    assert "calibrated on 1 images" in result.output
    result = run("predict", "--checkpoint", model, inputs / "a", "--out", tmp_path / "out",
                 "--backend", "onnxruntime", "--precision", "fp32")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run("export", "--checkpoint", checkpoint, "--out", model, "--calibration", "x")
    assert result.exit_code == 2 and "only with --quantize" in result.output


def test_threads_reach_torch(checkpoint, inputs, tmp_path, monkeypatch):
    requested: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", requested.append)
    result = run("predict", "--checkpoint", checkpoint, inputs / "a", "--out", tmp_path,
                 "--threads", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert requested == [1]
