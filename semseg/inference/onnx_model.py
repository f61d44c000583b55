"""An exported ONNX file run by ONNX Runtime, with the metadata ``semseg export`` writes.

See :mod:`semseg.inference.export` for the metadata keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from semseg.labels import LabelSet
from semseg.optional import require

ONNX_FORMAT = "semseg-onnx"
ONNX_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "image", "logits"


class OnnxModelError(ValueError):
    """An ONNX file is unreadable, lacks semseg metadata, or does not match its checkpoint."""


class OnnxModel:
    """An exported model run by ONNX Runtime on the CPU, with its metadata.

    Calling it maps (N, 3, H, W) float normalised images to (N, C, H, W) float32 logits, as
    the PyTorch model does.

    Attributes:
        labels: the classes (names and colours; raw values are the identity).
        mean, std: input normalisation.
        output_stride: inputs are padded to multiples of it.

    Raises:
        OnnxModelError: naming the file, when it cannot be loaded, was not written by
            :func:`export_onnx`, or its metadata lists a different number of classes than the
            network outputs.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        onnxruntime = require("onnxruntime", "--backend onnxruntime", "export")
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"{self.path}: ONNX file not found")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        # ONNX Runtime's idle workers spin for a while after each call by default, taking the
        # cores from the decoding, normalising and argmax around it: measured on a 2-core
        # AMD EPYC, no spinning ran the real-time model 41-43 FPS end to end against 29-31,
        # with the same time per call (benchmarks/results/speed_amd_zen4.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            raise OnnxModelError(f"{self.path}: cannot load ONNX model ({error})") from None
        metadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.labels: LabelSet = metadata["labels"]
        self.mean = tuple(float(v) for v in metadata["mean"])
        self.std = tuple(float(v) for v in metadata["std"])
        self.output_stride = int(metadata["output_stride"])
        channels = self.session.get_outputs()[0].shape[1]
        if isinstance(channels, int):  # else the exporter left it symbolic: checked per call
            check_channels(self.path, self.labels, channels)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        check_channels(self.path, self.labels, logits.shape[1])
        return torch.from_numpy(logits)


def check_channels(path: Path, labels: LabelSet, channels: int) -> None:
    """Raises OnnxModelError, naming ``path``, when the network's ``channels`` output
    channels are not the metadata's classes."""
    if channels != labels.num_classes:
        raise OnnxModelError(
            f"{path}: metadata lists {labels.num_classes} classes but the network "
            f"outputs {channels} channels"
        )


REQUIRED_KEYS = ("class_names", "class_colours", "void_colour", "mean", "std", "output_stride")
OPTIONAL_KEYS = ("model", "recipe", "quantization")


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The semseg metadata of an ONNX file, read without starting ONNX Runtime (see
    :func:`parse_metadata` for the keys).

    Raises:
        OnnxModelError: naming the file, when it is not an ONNX file or lacks the metadata.
    """
    onnx = require("onnx", "reading an ONNX file", "export")
    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError and others
        raise OnnxModelError(f"{path}: cannot read ONNX file ({error})") from None
    return parse_metadata({entry.key: entry.value for entry in proto.metadata_props}, path)


def parse_metadata(raw: dict[str, str], path: Path) -> dict[str, Any]:
    """The JSON values of the ``metadata_props`` written by ``semseg export``: the keys of
    :data:`REQUIRED_KEYS` and those of :data:`OPTIONAL_KEYS` present, plus ``labels`` (a
    :class:`~semseg.labels.LabelSet` built from the class names and colours).

    Raises:
        OnnxModelError: naming the file, when the metadata is missing, of another version,
            or invalid.
    """
    if raw.get("semseg_format") != json.dumps(ONNX_FORMAT):
        raise OnnxModelError(f"{path}: no semseg metadata; export the model with `semseg export`")
    if raw.get("semseg_version") != json.dumps(ONNX_VERSION):
        raise OnnxModelError(
            f"{path}: semseg ONNX version {raw.get('semseg_version')}, "
            f"this semseg reads {ONNX_VERSION}"
        )
    try:
        metadata = {key: json.loads(raw[key]) for key in REQUIRED_KEYS}
        metadata |= {key: json.loads(raw[key]) for key in OPTIONAL_KEYS if key in raw}
        metadata["labels"] = LabelSet(
            names=tuple(metadata["class_names"]),
            colours=tuple(tuple(int(v) for v in c) for c in metadata["class_colours"]),
            void_colour=tuple(int(v) for v in metadata["void_colour"]),
        )
    except (KeyError, json.JSONDecodeError, TypeError, ValueError) as error:
        raise OnnxModelError(f"{path}: metadata entry {error} missing or invalid") from None
    return metadata
