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
``output_stride``    the model's coarsest feature stride: the smallest input side it takes
``model``            ``{"name", "arguments"}`` of the source checkpoint
``recipe``           the recipe the model was trained with (data format and root, for
                     ``semseg evaluate``)
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

import io
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semseg.cache import cache_dir
from semseg.checkpoint import Checkpoint
from semseg.data.transforms import to_tensor
from semseg.inference.onnx_model import (
    INPUT_NAME,
    ONNX_FORMAT,
    ONNX_VERSION,
    OUTPUT_NAME,
    OnnxModel,
    OnnxModelError,
)
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
    checkpoint: Checkpoint | str | Path,
    out_path: str | Path,
    opset: int = OPSET,
    calibration: Sequence[np.ndarray] | None = None,
    quantizer: str = "onnxruntime",
) -> Path:
    """Write the checkpoint's model as ONNX with dynamic batch, height and width.

    Args:
        checkpoint: a checkpoint written by training, or its path.
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
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint.load(checkpoint)
    checkpoint_path, out_path = checkpoint.path, Path(out_path)
    if checkpoint_path is not None and out_path.resolve() == checkpoint_path.resolve():
        raise ValueError(f"{out_path}: the ONNX output would overwrite the checkpoint")
    if calibration is not None and len(calibration) == 0:
        raise ValueError("calibration needs at least one image to quantize the model")
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer {quantizer!r} is not one of {', '.join(QUANTIZERS)}")
    if checkpoint.is_onnx:
        raise ValueError(f"{checkpoint_path}: already an ONNX file; export a .pt checkpoint")
    model = checkpoint.build_model()
    labels = checkpoint.labels
    stride = int(model.output_stride)
    metadata = {
        "semseg_format": ONNX_FORMAT,
        "semseg_version": ONNX_VERSION,
        "class_names": list(labels.names),
        "class_colours": [list(c) for c in labels.colours],
        "void_colour": list(labels.void_colour),
        "mean": list(checkpoint.mean),
        "std": list(checkpoint.std),
        "output_stride": stride,
        "model": {"name": checkpoint.model_name, "arguments": checkpoint.model_args},
        "recipe": checkpoint.recipe,
    }
    proto = _trace(model, max(2 * stride, 32), opset)
    if calibration is not None:
        batches = [to_tensor(image, checkpoint.mean, checkpoint.std)[None] for image in calibration]
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
        # The quantizer logs optimisation advice per node through the root logger; drop only
        # its own warnings, only while it runs.
        advice = _OnnxRuntimeWarnings()
        logging.getLogger().addFilter(advice)
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
            logging.getLogger().removeFilter(advice)
        result = onnx.load(quantized)
    del result.metadata_props[:]  # the quantizer copies and adds entries; we write our own
    return result


class _OnnxRuntimeWarnings(logging.Filter):
    """Rejects records of level WARNING and below logged from onnxruntime's code."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or "onnxruntime" not in record.pathname


def _quantize_nncf(proto: Any, batches: list[torch.Tensor]) -> Any:
    """NNCF post-training int8 quantization of ``proto`` calibrated on normalised
    (1, 3, H, W) inputs."""
    nncf = require("nncf", "--quantizer nncf", "openvino")
    dataset = nncf.Dataset(batches, lambda batch: {INPUT_NAME: batch.numpy()})
    result = nncf.quantize(proto, dataset, subset_size=len(batches))
    del result.metadata_props[:]  # our metadata is written by the caller
    return result


def exported_onnx(checkpoint: Checkpoint) -> Path:
    """The float32 ONNX export of a saved checkpoint, written once into the cache folder
    (``cache_dir()/onnx/``, named by the checkpoint file's SHA-256) and reused after."""
    path = cache_dir() / "onnx" / f"{checkpoint.sha256()[:24]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            export_onnx(checkpoint, Path(scratch) / path.name)
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
    checkpoint: Checkpoint | str | Path,
    onnx_path: str | Path,
    image: np.ndarray,
    engine: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> OnnxParity:
    """Run the checkpoint (PyTorch, fp32) and the ONNX file on ``image``.

    Args:
        image: (H, W, 3) uint8 RGB, normalised with the checkpoint's mean and std.
        engine: what runs the ONNX file (a backend of :mod:`semseg.inference.backends`);
            default ONNX Runtime.

    Raises:
        OnnxModelError: naming the ONNX file when its classes or normalisation differ from
            the checkpoint's.
    """
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint.load(checkpoint)
    checkpoint_path = checkpoint.source
    onnx_model = OnnxModel(onnx_path)
    names, onnx_names = list(checkpoint.labels.names), list(onnx_model.labels.names)
    if onnx_names != names:
        raise OnnxModelError(
            f"{onnx_path}: {len(onnx_names)} classes {onnx_names} do not match the "
            f"{len(names)} classes {names} of checkpoint {checkpoint_path}"
        )
    if not np.allclose((*onnx_model.mean, *onnx_model.std), (*checkpoint.mean, *checkpoint.std)):
        raise OnnxModelError(
            f"{onnx_path}: normalisation mean {onnx_model.mean} std {onnx_model.std} differs from "
            f"checkpoint {checkpoint_path} mean {checkpoint.mean} std {checkpoint.std}"
        )
    batch = to_tensor(image, checkpoint.mean, checkpoint.std).unsqueeze(0)
    with torch.inference_mode():
        expected = checkpoint.build_model()(batch)
    actual = (engine or onnx_model)(batch)
    return OnnxParity(
        max_abs_difference=float((actual - expected).abs().max()),
        argmax_agreement=float((actual.argmax(1) == expected.argmax(1)).float().mean()),
    )
