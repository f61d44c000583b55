"""ONNX export of a checkpoint (the exported file runs in :mod:`semseg.inference.onnx_model`).

The ONNX graph maps ``image`` (N, 3, H, W) float32 to ``logits`` (N, C, H, W) float32 with
batch, height and width dynamic. What a user needs besides the graph is stored in the file's
``metadata_props``, each value JSON:

===================  =====================================================================
key                  value
===================  =====================================================================
``semseg_format``    ``"semseg-onnx"`` (marks a file written here)
``semseg_version``   ``1``
``class_names``      class name per logit channel (train id order)
``class_colours``    ``[r, g, b]`` per class, for overlays
``void_colour``      ``[r, g, b]`` of ignored pixels
``mean``, ``std``    per-channel normalisation: ``image = (rgb / 255 - mean) / std``
``output_stride``    inputs are padded to multiples of this many pixels
``model``            ``{"name", "arguments"}`` of the source checkpoint
``quantization``     only in int8 files: ``{"method", "calibration_images"}``
===================  =====================================================================

Int8 quantization (``calibration=`` images) has two quantizers, both writing int8 ONNX
(QDQ) files with the metadata above:

- ``onnxruntime``: ONNX Runtime's static quantization (min-max ranges); it ran 1.5 to 2 times
  as fast as float32 on ONNX Runtime on our 2-core AMD CPU for a trained U-Net, with unchanged
  mIoU; on an untrained or tiny model it can be slower, so measure before relying on it.
- ``nncf``: NNCF's post-training quantization (``pip install 'semseg[openvino]'``), the
  quantizer OpenVINO deploys with; run the file with ``--backend openvino`` (ONNX Runtime
  runs it too, slowly). See ``benchmarks/results/speed.md`` for speed and mIoU.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semseg.cache import cache_dir
from semseg.checkpoint import build_model_from, load_checkpoint
from semseg.data.transforms import to_tensor
from semseg.inference.onnx_model import (
    INPUT_NAME,
    ONNX_FORMAT,
    ONNX_VERSION,
    OUTPUT_NAME,
    OnnxModel,
    OnnxModelError,
)
from semseg.labels import LabelSet
from semseg.optional import require

OPSET = 17
QUANTIZERS = ("onnxruntime", "nncf")
QUANTIZATION_METHODS = {
    "onnxruntime": "ONNX Runtime static int8: QDQ, int8 weights per channel, uint8 activations "
    "(min-max)",
    "nncf": "NNCF post-training int8 (performance preset: symmetric int8 weights per channel "
    "and activations, fast bias correction)",
}


def export_onnx(
    checkpoint_path: str | Path,
    out_path: str | Path,
    opset: int = OPSET,
    calibration: Sequence[np.ndarray] | None = None,
    quantizer: str = "onnxruntime",
) -> Path:
    """Write the checkpoint's model as ONNX with dynamic batch, height and width.

    Args:
        checkpoint_path: a checkpoint written by training.
        out_path: the ``.onnx`` file to write.
        opset: ONNX opset version.
        calibration: with images ((H, W, 3) uint8 RGB, any sizes), the model is quantized to
            int8 by ``quantizer`` (ranges of the activations seen on these images) and the
            metadata gains ``quantization``. Without, the model stays float32.
        quantizer: one of :data:`QUANTIZERS` (see the module's docstring).

    Returns:
        ``out_path``.

    Raises:
        CheckpointError: the checkpoint cannot be read.
        ValueError: ``out_path`` is the checkpoint itself, ``calibration`` is empty, or the
            quantizer is unknown.
        MissingDependencyError: the quantizer's package is not installed.
    """
    onnx = require("onnx", "ONNX export", "export")

    checkpoint_path, out_path = Path(checkpoint_path), Path(out_path)
    if out_path.resolve() == checkpoint_path.resolve():
        raise ValueError(f"{out_path}: the ONNX output would overwrite the checkpoint")
    if calibration is not None and len(calibration) == 0:
        raise ValueError("calibration needs at least one image to quantize the model")
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer {quantizer!r} is not one of {', '.join(QUANTIZERS)}")
    checkpoint = load_checkpoint(checkpoint_path)
    model = build_model_from(checkpoint, str(checkpoint_path))
    labels = LabelSet.from_dict(checkpoint["labels"])
    norm = checkpoint["normalisation"]
    stride = int(getattr(model, "output_stride", 1))
    metadata = {
        "semseg_format": ONNX_FORMAT,
        "semseg_version": ONNX_VERSION,
        "class_names": list(labels.names),
        "class_colours": [list(c) for c in labels.colours],
        "void_colour": list(labels.void_colour),
        "mean": list(norm["mean"]),
        "std": list(norm["std"]),
        "output_stride": stride,
        "model": {
            "name": checkpoint["model"]["name"],
            "arguments": checkpoint["model"]["arguments"],
        },
    }
    proto = _trace(model, max(2 * stride, 32), opset)
    if calibration is not None:
        batches = [to_tensor(image, norm["mean"], norm["std"])[None] for image in calibration]
        if quantizer == "nncf":
            proto = _quantize_nncf(proto, batches)
        else:
            proto = _quantize(proto, batches, out_path.parent)
        metadata["quantization"] = {
            "method": QUANTIZATION_METHODS[quantizer],
            "calibration_images": len(batches),
        }
    # The exporter leaves the class axis symbolic (the models crop with a negative Pad);
    # stating it lets a reader check the classes against the metadata without running.
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = labels.num_classes
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, out_path)
    return out_path


def _trace(model: torch.nn.Module, side: int, opset: int) -> Any:
    """The float32 ``onnx.ModelProto`` of ``model``, traced on a (1, 3, side, side) input."""
    import onnx

    dynamic = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    # The torch.export-based exporter needs onnxscript, which semseg does not depend on; the
    # TorchScript exporter handles these models' dynamic shapes (checked by the parity test).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, side, side),),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
            opset_version=opset,
        )
    return onnx.load_model_from_string(buffer.getvalue())


def _quantize(proto: Any, batches: list[torch.Tensor], folder: Path) -> Any:
    """Static int8 quantization of ``proto`` calibrated on normalised (1, 3, H, W) inputs."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter({INPUT_NAME: batch.numpy()} for batch in batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        quantized = Path(scratch) / "int8.onnx"
        logging.disable(logging.WARNING)  # the quantizer logs optimisation advice per node
        try:
            quantize_static(
                proto,
                quantized,
                Batches(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        finally:
            logging.disable(logging.NOTSET)
        result = onnx.load(quantized)
    del result.metadata_props[:]  # the quantizer copies and adds entries; we write our own
    return result


def _quantize_nncf(proto: Any, batches: list[torch.Tensor]) -> Any:
    """NNCF post-training int8 quantization of ``proto`` calibrated on normalised
    (1, 3, H, W) inputs."""
    nncf = require("nncf", "--quantizer nncf", "openvino")
    dataset = nncf.Dataset(batches, lambda batch: {INPUT_NAME: batch.numpy()})
    result = nncf.quantize(proto, dataset, subset_size=len(batches))
    del result.metadata_props[:]  # our metadata is written by the caller
    return result


def exported_onnx(checkpoint_path: str | Path) -> Path:
    """The float32 ONNX export of a checkpoint, written once into the cache folder
    (``cache_dir()/onnx/``, named by the checkpoint's content hash) and reused after."""
    with open(checkpoint_path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()[:24]
    path = cache_dir() / "onnx" / f"{digest}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            export_onnx(checkpoint_path, Path(scratch) / path.name)
            (Path(scratch) / path.name).replace(path)
    return path


@dataclass(frozen=True)
class OnnxParity:
    """Agreement of an ONNX model with its checkpoint on one input.

    Attributes:
        max_abs_difference: largest absolute logit difference.
        argmax_agreement: fraction of pixels whose top class is the same, 0..1.
    """

    max_abs_difference: float
    argmax_agreement: float


def compare_onnx(
    checkpoint_path: str | Path,
    onnx_path: str | Path,
    image: np.ndarray,
    backend: str = "onnxruntime",
    precision: str = "fp32",
) -> OnnxParity:
    """Run the checkpoint (PyTorch, fp32) and the ONNX file (``backend`` at ``precision``)
    on ``image``.

    Args:
        image: (H, W, 3) uint8 RGB, normalised with the checkpoint's mean and std.
        backend: ``onnxruntime`` or ``openvino``.

    Raises:
        OnnxModelError: naming the ONNX file when its classes or normalisation differ from
            the checkpoint's.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    onnx_model = OnnxModel(onnx_path)
    names = list(checkpoint["labels"]["names"])
    onnx_names = list(onnx_model.labels.names)
    if onnx_names != names:
        raise OnnxModelError(
            f"{onnx_path}: {len(onnx_names)} classes {onnx_names} do not match the "
            f"{len(names)} classes {names} of checkpoint {checkpoint_path}"
        )
    norm = checkpoint["normalisation"]
    ours = (*onnx_model.mean, *onnx_model.std)
    if not np.allclose(ours, (*norm["mean"], *norm["std"])):
        raise OnnxModelError(
            f"{onnx_path}: normalisation mean {onnx_model.mean} std {onnx_model.std} differs from "
            f"checkpoint {checkpoint_path} mean {norm['mean']} std {norm['std']}"
        )
    batch = to_tensor(image, norm["mean"], norm["std"]).unsqueeze(0)
    with torch.inference_mode():
        expected = build_model_from(checkpoint, str(checkpoint_path))(batch)
    from semseg.inference.backends import Engine, build_engine, model_source

    actual = build_engine(model_source(onnx_path), Engine(backend, precision))(batch)
    return OnnxParity(
        max_abs_difference=float((actual - expected).abs().max()),
        argmax_agreement=float((actual.argmax(1) == expected.argmax(1)).float().mean()),
    )
