"""The CLI's engine options: auto by default (and saying what it chose), explicit backends
and precisions, a clear error for a missing package, NNCF export, ``semseg info``."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semseg.cli import main
from semseg.data.synthetic import render_scene
from semseg.hardware import describe_machine
from semseg.inference.backends import backend_installed

from .inference_support import tiny_checkpoint, write_image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return write_image(tmp_path_factory.mktemp("in") / "scene.png", render_scene(40, 64, 80)[0])


def run(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_predict_chooses_by_default_and_says_what(checkpoint, image, tmp_path):
    # The second run finds the probe cached, so its choice is the only line it prints
    # beside the progress bar: that line must still stand on a line of its own.
    for attempt in ("first", "cached"):
        result = run("predict", "--checkpoint", checkpoint, image, "--out", tmp_path / attempt)
        assert result.exit_code == 0, result.output
        chosen = [line for line in result.output.splitlines() if line.startswith("auto: ")]
        assert chosen, f"{attempt} run: {result.output}"
        assert chosen[-1].split()[1] in ("torch", "onnxruntime", "openvino")
        labels = np.asarray(Image.open(tmp_path / attempt / "scene_labels.png"))
        assert labels.shape == (64, 80)


def test_bf16_and_openvino_from_the_command_line(checkpoint, image, tmp_path):
    if not describe_machine().bf16_instructions:
        pytest.skip("this CPU has no bf16 arithmetic")
    runs = {
        "torch-fp32": ("--backend", "torch", "--precision", "fp32"),
        "torch-bf16": ("--backend", "torch", "--precision", "bf16"),
    }
    if backend_installed("openvino"):
        runs["openvino-bf16"] = ("--backend", "openvino", "--precision", "bf16")
    maps = {}
    for name, options in runs.items():
        result = run("predict", "--checkpoint", checkpoint, image, "--out", tmp_path / name,
                     *options)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "auto:" not in result.output  # nothing to choose
        maps[name] = np.asarray(Image.open(tmp_path / name / "scene_labels.png"))
    for name, labels in maps.items():
        assert (labels == maps["torch-fp32"]).mean() >= 0.99, name


def test_a_missing_backend_is_one_line_naming_the_install(checkpoint, image, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    result = run("predict", "--checkpoint", checkpoint, image, "--out", tmp_path,
                 "--backend", "openvino")  # fmt: skip
    assert result.exit_code == 1
    assert "--backend openvino needs the Python package 'openvino'" in result.output
    assert "pip install 'semseg[openvino]'" in result.output and "Traceback" not in result.output


def test_export_with_openvino_quantizes_with_nncf_and_checks_there(checkpoint, tmp_path):
    pytest.importorskip("nncf")
    model = tmp_path / "int8.onnx"
    result = run("export", "--checkpoint", checkpoint, "--out", model, "--quantize",
                 "--calibration-size", "2", "--backend", "openvino")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "int8 onnx (nncf, calibrated on 2 images)" in result.output
    checker = "openvino" if describe_machine().openvino_int8 else "onnxruntime"
    assert f"{checker} fp32 vs PyTorch fp32 on 360x480" in result.output
    assert ("checking with onnxruntime instead" in result.output) == (checker == "onnxruntime")


def test_info_names_the_cpu_flags_versions_and_auto(checkpoint):
    machine = describe_machine()
    result = run("info", "--checkpoint", checkpoint, "--size", "64", "80")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"CPU: {machine.cpu_model} ({machine.cpus} logical CPUs, {machine.system})"
    assert lines[1] == f"instruction sets: {machine.flag_summary()}"
    for flag in ("AVX2", "AVX-512", "AVX-512 BF16", "AVX-512 VNNI", "AMX-BF16"):
        assert f"{flag} {'yes' if machine.flags[flag] else 'no'}" in lines[1]
    assert lines[3].startswith("versions: Python") and "torch " in lines[3]
    assert "onnxruntime" in lines[3] and "openvino" in lines[3]
    candidates = next(line for line in lines if line.startswith("auto candidates for checkpoints"))
    assert ("torch bf16" in candidates) == machine.bf16_instructions
    training = next(line for line in lines if line.startswith("auto training precision"))
    expected = "the faster of fp32 and bf16" if machine.bf16_instructions else "fp32"
    assert training.split(": ")[1].startswith(expected)
    assert lines[-1].startswith(f"for {checkpoint} at 64x80: auto: ")
