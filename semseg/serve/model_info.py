"""What ``GET /v1/model`` says about the served model: name, classes, normalisation, stride,
backend, precision, the model file and its SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semseg.checkpoint import load_checkpoint
from semseg.inference.onnx_model import read_onnx_metadata
from semseg.inference.predictor import Predictor
from semseg.serve.encode import hex_colour


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def describe_model(predictor: Predictor, model_file: str | Path | None) -> dict[str, Any]:
    """The ``/v1/model`` record of ``predictor`` loaded from ``model_file`` (a ``.pt``
    checkpoint or an ``.onnx`` export; None for a predictor built in memory: no name, file or
    hash)."""
    labels = predictor.labels
    name, precision = None, "float32"
    if isinstance(predictor.model, nn.Module):
        backend, threads = "pytorch", torch.get_num_threads()
        parameter = next(predictor.model.parameters(), None)
        precision = str(parameter.dtype).removeprefix("torch.") if parameter is not None else None
    else:
        backend = "onnxruntime"
        session = getattr(predictor.model, "session", None)
        # 0 is ONNX Runtime's "one per core"
        threads = session.get_session_options().intra_op_num_threads if session else None
    if model_file is not None:
        if Path(model_file).suffix.lower() == ".onnx":
            metadata = read_onnx_metadata(model_file)
            name = metadata.get("model", {}).get("name")
            precision = "int8" if "quantization" in metadata else precision
        else:
            name = load_checkpoint(model_file)["model"]["name"]
    options = predictor.options
    return {
        "name": name,
        "classes": [
            {"id": i, "name": n, "color": hex_colour(c)}
            for i, (n, c) in enumerate(zip(labels.names, labels.colours, strict=True))
        ],
        "normalisation": {"mean": list(predictor.mean), "std": list(predictor.std)},
        "output_stride": predictor.output_stride,
        "backend": backend,
        "precision": precision,
        "device": str(predictor.device),
        "threads": threads,
        "inference": {
            "tile_size": list(options.tile_size) if options.tile_size else None,
            "overlap": options.overlap,
            "window": options.window,
            "pad_mode": options.pad_mode,
            "hflip": options.hflip,
            "scales": list(options.scales),
        },
        "checkpoint": {
            "file": Path(model_file).name if model_file is not None else None,
            "sha256": file_sha256(model_file) if model_file is not None else None,
        },
    }
