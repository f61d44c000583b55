"""ONNX export: metadata, dynamic shapes, parity with PyTorch, mismatches named by file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from semseg.checkpoint import Checkpoint
from semseg.data.synthetic import SYNTHETIC_LABELS, render_scene
from semseg.data.transforms import to_tensor
from semseg.inference.export import compare_onnx, export_onnx
from semseg.inference.onnx_model import OnnxModel, OnnxModelError
from semseg.inference.predictor import Predictor
from semseg.labels import LabelSet
from semseg.models import create_model

from .inference_support import tiny_checkpoint

# Float32 PyTorch and ONNX Runtime kernels sum in different orders; logits of the tiny model
# are O(1), so differences stay near float32 epsilon times the accumulation length.
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def onnx_path(checkpoint, tmp_path_factory):
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_metadata_carries_classes_colours_and_normalisation(onnx_path, checkpoint):
    props = {p.key: json.loads(p.value) for p in onnx.load(onnx_path).metadata_props}
    stored = Checkpoint.load(checkpoint)
    assert props["class_names"] == list(SYNTHETIC_LABELS.names)
    assert props["class_colours"] == [list(c) for c in SYNTHETIC_LABELS.colours]
    assert tuple(props["mean"]) == stored.mean
    assert tuple(props["std"]) == stored.std
    assert props["output_stride"] == 4
    assert props["model"]["name"] == "unet"
    assert props["recipe"] == stored.recipe


def test_an_onnx_file_loads_into_the_same_checkpoint_shape(onnx_path, checkpoint):
    stored, exported = Checkpoint.load(checkpoint), Checkpoint.load(onnx_path)
    assert exported.is_onnx and exported.state_dict is None
    assert (exported.model_name, exported.model_args) == (stored.model_name, stored.model_args)
    assert exported.labels.names == stored.labels.names
    assert exported.labels.colours == stored.labels.colours
    assert (exported.mean, exported.std) == (stored.mean, stored.std)
    assert exported.recipe == stored.recipe and exported.output_stride == 4


def test_batch_height_and_width_are_dynamic(onnx_path):
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 80), (3, 3, 37, 53)]:
        (logits,) = session.run(None, {"image": np.zeros(shape, dtype=np.float32)})
        assert logits.shape == (shape[0], 8, *shape[2:])


def test_real_sized_input_matches_pytorch(onnx_path, checkpoint):
    """On a 360x480 scene: logits within LOGIT_TOLERANCE, argmax agreement >= 99.99%."""
    stored = Checkpoint.load(checkpoint)
    images = torch.stack(
        [to_tensor(render_scene(seed, 360, 480)[0], stored.mean, stored.std) for seed in (0, 1)]
    )
    with torch.no_grad():
        expected = stored.build_model()(images).numpy()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"image": images.numpy()})
    assert np.abs(actual - expected).max() < LOGIT_TOLERANCE
    assert (actual.argmax(1) == expected.argmax(1)).mean() >= 0.9999


def test_compare_onnx_reports_parity(onnx_path, checkpoint):
    parity = compare_onnx(checkpoint, onnx_path, render_scene(2, 360, 480)[0])
    assert parity.max_abs_difference < LOGIT_TOLERANCE
    assert parity.argmax_agreement >= 0.9999


def test_onnx_predictor_matches_the_checkpoint_predictor(onnx_path, checkpoint):
    image = render_scene(3, 360, 480)[0]
    from_onnx = Predictor.from_checkpoint(onnx_path)
    assert from_onnx.labels.names == SYNTHETIC_LABELS.names
    assert from_onnx.output_stride == 4
    onnx_prediction = from_onnx.predict(image)
    torch_prediction = Predictor.from_checkpoint(checkpoint, "cpu").predict(image)
    np.testing.assert_allclose(
        onnx_prediction.probabilities, torch_prediction.probabilities, atol=1e-5
    )
    assert (onnx_prediction.labels == torch_prediction.labels).mean() >= 0.9999


def test_onnx_runs_on_the_cpu_only(onnx_path):
    with pytest.raises(ValueError, match="CPU"):
        Predictor.from_checkpoint(onnx_path, device="cuda")


def _with_other_classes(checkpoint, path):
    """A copy of ``checkpoint`` whose model has 3 classes."""
    stored = Checkpoint.load(checkpoint)
    stored.labels = LabelSet(("road", "car", "other"), ((1, 1, 1), (2, 2, 2), (3, 3, 3)))
    stored.state_dict = create_model("unet", 3, **stored.model_args).state_dict()
    stored.save(path)
    return path


def test_a_checkpoint_onnx_class_mismatch_names_the_onnx_file(onnx_path, checkpoint, tmp_path):
    other = _with_other_classes(checkpoint, tmp_path / "other.pt")
    with pytest.raises(OnnxModelError, match=rf"{onnx_path}: 8 classes .* 3 classes .*other.pt"):
        compare_onnx(other, onnx_path, render_scene(0, 64, 80)[0])


def test_metadata_that_disagrees_with_the_network_names_the_file(onnx_path, tmp_path):
    proto = onnx.load(onnx_path)
    for prop in proto.metadata_props:
        if prop.key == "class_names":
            prop.value = json.dumps(["a", "b"])
        elif prop.key == "class_colours":
            prop.value = json.dumps([[0, 0, 0], [1, 1, 1]])
    edited = tmp_path / "edited.onnx"
    onnx.save(proto, edited)
    with pytest.raises(OnnxModelError, match=rf"{edited}: metadata lists 2 classes .* 8 channels"):
        OnnxModel(edited)


def test_an_onnx_file_without_semseg_metadata_is_refused(tmp_path):
    plain = tmp_path / "plain.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["logits"])],
        "plain",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    opset = [onnx.helper.make_opsetid("", 17)]
    onnx.save(onnx.helper.make_model(graph, opset_imports=opset, ir_version=8), plain)
    with pytest.raises(OnnxModelError, match=rf"{plain}: no semseg metadata"):
        Predictor.from_checkpoint(plain)


def test_a_corrupt_or_missing_onnx_file_is_named(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf")
    with pytest.raises(OnnxModelError, match=rf"{corrupt}: cannot load"):
        OnnxModel(corrupt)
    with pytest.raises(OnnxModelError, match="absent.onnx: ONNX file not found"):
        OnnxModel(tmp_path / "absent.onnx")


def test_export_refuses_to_overwrite_the_checkpoint(checkpoint):
    with pytest.raises(ValueError, match="overwrite the checkpoint"):
        export_onnx(checkpoint, checkpoint)


def test_quantized_export_has_int8_nodes_metadata_and_close_predictions(checkpoint, tmp_path):
    calibration = [render_scene(seed, 64, 80)[0] for seed in (40, 41)]
    path = export_onnx(checkpoint, tmp_path / "int8.onnx", calibration=calibration)
    proto = onnx.load(path)
    operators = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["quantization"]["calibration_images"] == 2
    assert props["class_names"] == list(SYNTHETIC_LABELS.names)
    parity = compare_onnx(checkpoint, path, render_scene(42, 360, 480)[0])
    assert parity.max_abs_difference > 1e-4  # really quantized, not float32
    assert parity.argmax_agreement >= 0.99


def test_quantizing_needs_calibration_images(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="at least one image"):
        export_onnx(checkpoint, tmp_path / "int8.onnx", calibration=[])


def test_threads_reach_onnx_runtime(onnx_path):
    predictor = Predictor.from_checkpoint(onnx_path, threads=1)
    assert predictor.model.session.get_session_options().intra_op_num_threads == 1
