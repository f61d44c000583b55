"""Inference backends against fp32 PyTorch on a real-sized input (1x3x360x480) with a small
trained U-Net (``tests/fixtures/parity_unet.pt``): bf16, ONNX Runtime, OpenVINO, NNCF int8;
and the errors for what is missing or cannot run."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from semseg.checkpoint import Checkpoint
from semseg.data.synthetic import render_scene
from semseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from semseg.hardware import CPU_FLAGS, Machine, describe_machine
from semseg.inference import backends
from semseg.inference.auto import candidate_engines
from semseg.inference.backends import Engine, ModelSource, OpenVinoModel, TorchModel, build_engine
from semseg.inference.export import export_onnx
from semseg.inference.fuse import FusedConv2d, fuse_conv_bn, onednn_fusion_available
from semseg.inference.onnx_model import OnnxModel
from semseg.labels import LabelSet
from semseg.models import create_model
from semseg.optional import MissingDependencyError

FIXTURE = Path(__file__).parent / "fixtures" / "parity_unet.pt"
HEIGHT, WIDTH = 360, 480

# fp32 engines sum in other orders: logits of this model are O(10), so they differ by
# float32 rounding times the accumulation length.
FP32_LOGITS = 1e-3
# bf16 keeps 8 significant bits (relative error 2^-9 per rounding), so logits move by ~0.1-0.2
# here and pixels whose top two classes are that close flip; measured on this model: 99.82%
# agreement, max |probability difference| 0.055, mean 0.00045.
BF16_AGREEMENT, BF16_MAX_PROBABILITY, BF16_MEAN_PROBABILITY = 0.995, 0.1, 0.002
# int8 rounds weights and activations to 256 levels: measured 98.9% agreement (NNCF), mean
# |probability difference| 0.0026.
INT8_AGREEMENT, INT8_MEAN_PROBABILITY = 0.98, 0.01


@pytest.fixture(scope="module")
def trained():
    stored = torch.load(FIXTURE, weights_only=True)
    model = create_model(stored["name"], len(stored["labels"]["names"]), **stored["arguments"])
    model.load_state_dict(stored["state_dict"])
    return stored, model.eval()


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    """The fixture as a checkpoint and its fp32 ONNX export."""
    pytest.importorskip("onnxruntime")
    stored, _ = trained
    folder = tmp_path_factory.mktemp("backends")
    checkpoint = folder / "parity.pt"
    Checkpoint(
        model_name=stored["name"],
        model_args=stored["arguments"],
        labels=LabelSet.from_dict(stored["labels"]),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        state_dict=stored["state_dict"],
    ).save(checkpoint)
    return checkpoint, export_onnx(checkpoint, folder / "fp32.onnx")


@pytest.fixture(scope="module")
def int8_file(files):
    """NNCF int8 export calibrated on 4 synthetic scenes."""
    pytest.importorskip("nncf")
    calibration = [render_scene(seed, 96, 128)[0] for seed in range(100, 104)]
    return export_onnx(files[0], files[0].with_name("int8.onnx"), calibration=calibration,
                       quantizer="nncf")  # fmt: skip


@pytest.fixture(scope="module")
def scene():
    """(1, 3, 360, 480) normalised synthetic road scene, not seen in training."""
    image = render_scene(2000, HEIGHT, WIDTH)[0]
    return to_tensor(image, IMAGENET_MEAN, IMAGENET_STD)[None]


@pytest.fixture(scope="module")
def reference(trained, scene):
    with torch.inference_mode():
        return trained[1](scene)


def agreement(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return float((logits.argmax(1) == reference.argmax(1)).float().mean())


def probability_difference(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (logits.float().softmax(1) - reference.softmax(1)).abs()


def assert_bf16_parity(logits: torch.Tensor, reference: torch.Tensor) -> None:
    assert logits.dtype == torch.float32 and logits.shape == reference.shape
    assert agreement(logits, reference) >= BF16_AGREEMENT
    difference = probability_difference(logits, reference)
    assert difference.max() <= BF16_MAX_PROBABILITY
    assert difference.mean() <= BF16_MEAN_PROBABILITY
    assert not torch.equal(logits, reference)  # bf16 really ran


def test_the_fixture_model_is_trained(trained, reference):
    """Parity means something only when top classes have margins: the fixture predicts
    several classes with spread logits."""
    assert trained[0]["pixel_accuracy"] > 0.7
    assert reference.argmax(1).unique().numel() >= 6
    assert reference.abs().max() > 5


def test_torch_fp32_is_the_fused_channels_last_model(trained, scene, reference):
    model = TorchModel(trained[1])
    logits = model(scene)
    assert torch.allclose(logits, reference, atol=FP32_LOGITS)
    assert model.module.training is False
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.module.modules())
    assert trained[1].training is False and isinstance(trained[1], torch.nn.Module)


def test_torch_bf16_matches_fp32(trained, scene, reference):
    assert_bf16_parity(TorchModel(trained[1], "bf16")(scene), reference)


def test_onnxruntime_fp32_matches_torch(files, scene, reference):
    logits = OnnxModel(files[1])(scene)
    assert torch.allclose(logits, reference, atol=FP32_LOGITS)


def test_onnxruntime_workers_do_not_spin_after_a_call(files):
    """Spinning workers would take the cores from the pre- and post-processing between
    calls; the session runs with the threads asked for and spinning off."""
    options = OnnxModel(files[1], threads=2).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2


def test_openvino_fp32_matches_torch(files, scene, reference):
    pytest.importorskip("openvino")
    logits = OpenVinoModel(files[1], "fp32")(scene)
    assert torch.allclose(logits, reference, atol=FP32_LOGITS)


def test_openvino_bf16_matches_fp32(files, scene, reference):
    pytest.importorskip("openvino")
    if not describe_machine().bf16_instructions:
        pytest.skip("this CPU has no bf16 arithmetic")
    assert_bf16_parity(OpenVinoModel(files[1], "bf16")(scene), reference)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_nncf_int8_is_close_to_fp32(int8_file, scene, reference, backend):
    pytest.importorskip(backend)
    if backend == "openvino" and not describe_machine().openvino_int8:
        pytest.skip("OpenVINO refuses int8 files on CPUs without AMX-INT8 or AVX-VNNI")
    source = ModelSource("int8", "k", None, lambda: int8_file, int8=True)
    logits = build_engine(source, Engine(backend))(scene)
    assert agreement(logits, reference) >= INT8_AGREEMENT
    assert probability_difference(logits, reference).mean() <= INT8_MEAN_PROBABILITY
    metadata = OnnxModel(int8_file).session.get_modelmeta().custom_metadata_map
    assert "NNCF" in metadata["quantization"]


def test_a_missing_backend_names_the_package_and_the_command(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with pytest.raises(MissingDependencyError) as error:
        OpenVinoModel(files[1])
    assert str(error.value) == (
        "--backend openvino needs the Python package 'openvino', which is not installed: "
        "pip install 'semseg[openvino]' (or pip install openvino)"
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'semseg\[export\]'"):
        OnnxModel(files[1])


def test_openvino_refuses_bf16_it_would_not_run(files, int8_file):
    pytest.importorskip("openvino")
    flags = dict.fromkeys(CPU_FLAGS, False)
    old = Machine("old CPU", flags, 2, 2, {}, "Linux")
    with pytest.raises(ValueError, match="old CPU has neither: use --precision fp32"):
        OpenVinoModel(files[1], "bf16", machine=old)
    with pytest.raises(ValueError, match="int8 model runs its other layers in fp32"):
        OpenVinoModel(int8_file, "bf16", machine=replace(old, flags={**flags, "AMX-INT8": True}))


def test_openvino_refuses_int8_where_it_was_measured_wrong(files, int8_file):
    """On AMD EPYCs (Zen 2, AVX2 only; Zen 4, AVX-512 VNNI) OpenVINO's int8 U-Net gave 48% of
    fp32's labels, where ONNX Runtime ran the same file to 99%: OpenVINO refuses int8 files
    without AMX-INT8 or AVX-VNNI."""
    pytest.importorskip("openvino")
    flags = dict.fromkeys(CPU_FLAGS, False)
    avx2 = Machine("AVX2 CPU", {**flags, "AVX2": True}, 2, 2, {}, "Linux")
    with pytest.raises(
        ValueError, match=r"AVX2 CPU lacks: run this file with --backend onnxruntime"
    ):
        OpenVinoModel(int8_file, machine=avx2)
    for vnni in ("AVX-VNNI", "AMX-INT8"):
        assert replace(avx2, flags={**avx2.flags, vnni: True}).openvino_int8
    zen4 = replace(avx2, flags={**avx2.flags, "AVX-512": True, "AVX-512 VNNI": True})
    assert not zen4.openvino_int8  # measured wrong there too
    assert OpenVinoModel(files[1], machine=avx2).int8 is False  # fp32 files run anywhere
    source = ModelSource("int8", "k", None, lambda: int8_file, int8=True)
    assert Engine("openvino") not in candidate_engines(
        avx2, "auto", "auto", source, torch.device("cpu")
    )
    with pytest.raises(ValueError, match="use --backend onnxruntime"):
        candidate_engines(avx2, "openvino", "auto", source, torch.device("cpu"))


def test_engine_names_what_cannot_be():
    assert str(Engine("torch", "bf16", compiled=True)) == "torch bf16 compiled"
    with pytest.raises(ValueError, match="only the torch backend compiles"):
        Engine("openvino", "fp32", compiled=True)
    with pytest.raises(ValueError, match="onnxruntime runs fp32"):
        Engine("onnxruntime", "bf16")
    with pytest.raises(ValueError, match="runs PyTorch checkpoints"):
        build_engine(ModelSource("x.onnx", "k", None, Path), Engine("torch"))


def test_bf16_weights_stored_once_compute_what_autocast_computes(trained, scene, monkeypatch):
    """TorchModel keeps convolution weights in bf16 instead of letting autocast cast them at
    every call; the numbers must be autocast's own, and with the oneDNN activation fusion
    autocast's up to where the one bf16 rounding of each fused output falls."""
    reference = fuse_conv_bn(trained[1]).to(memory_format=torch.channels_last)  # fp32, folded
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(scene.contiguous(memory_format=torch.channels_last)).float()
    fused = TorchModel(trained[1], "bf16")
    assert all(p.dtype == torch.float32 for p in trained[1].parameters())  # source untouched
    if onednn_fusion_available(torch.bfloat16):
        convs = [m for m in fused.module.modules() if isinstance(m, (nn.Conv2d, FusedConv2d))]
        assert any(isinstance(m, FusedConv2d) for m in convs)
        assert all(m.weight.dtype == torch.bfloat16 for m in convs)
        logits = fused(scene)
        assert agreement(logits, expected) > 0.995
        torch.testing.assert_close(logits, expected, rtol=0.05, atol=0.05 * expected.abs().max())
    monkeypatch.setattr(backends, "onednn_fusion_available", lambda dtype: False)
    model = TorchModel(trained[1], "bf16")
    convs = [m for m in model.module.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert torch.equal(model(scene), expected)
