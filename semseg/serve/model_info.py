"""What ``GET /v1/model`` says about the served model: name, classes, normalisation, stride,
backend, precision, the model file and its SHA-256."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from semseg.checkpoint import Checkpoint
from semseg.inference.auto import AutoModel
from semseg.inference.backends import OpenVinoModel, TorchModel
from semseg.inference.onnx_model import read_onnx_metadata
from semseg.inference.predictor import Predictor
from semseg.serve.encode import hex_colour


def describe_model(predictor: Predictor, checkpoint: Checkpoint | None) -> dict[str, Any]:
    """The ``/v1/model`` record of ``predictor``, built from ``checkpoint`` (a ``.pt``
    checkpoint or an ``.onnx`` export, read from a file; None for a predictor built in memory:
    no name, file or hash)."""
    labels = predictor.labels
    backend, precision, threads = _engine(predictor.engine)
    if checkpoint is not None and checkpoint.is_onnx and backend == "onnxruntime":
        # int8 files carry their quantization in the metadata semseg export writes
        precision = "int8" if "quantization" in read_onnx_metadata(checkpoint.path) else precision
    has_file = checkpoint is not None and checkpoint.path is not None
    options = predictor.options
    return {
        "name": checkpoint.model_name if checkpoint is not None else None,
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
            "hflip": options.hflip,
            "scales": list(options.scales),
        },
        "checkpoint": {
            "file": checkpoint.path.name if has_file else None,
            "sha256": checkpoint.sha256() if has_file else None,
        },
    }


def _engine(engine: Any) -> tuple[str | None, str | None, int | None]:
    """(backend, precision, threads) of what runs the forward pass; for ``auto``, the engine
    it chose (None before the warm-up inference chose one)."""
    if isinstance(engine, AutoModel):
        if engine.choice is None:
            return "auto", "auto", engine.threads
        chosen = engine.choice.engine
        return chosen.backend, chosen.precision, engine.threads
    if isinstance(engine, TorchModel):
        return "torch", engine.precision, torch.get_num_threads()
    if isinstance(engine, OpenVinoModel):
        return "openvino", engine.precision, getattr(engine, "threads", None)
    if isinstance(engine, nn.Module):
        return "torch", "fp32", torch.get_num_threads()
    session = getattr(engine, "session", None)
    # 0 is ONNX Runtime's "one per core"
    threads = session.get_session_options().intra_op_num_threads if session else None
    return "onnxruntime", "fp32", threads
