"""The engines a trained model runs on: PyTorch, ONNX Runtime and OpenVINO.

Each backend is a callable mapping ``(N, 3, H, W)`` float32 normalised images to
``(N, C, H, W)`` float32 logits, so a :class:`~semseg.inference.predictor.Predictor` runs any
of them unchanged (softmax, test-time augmentation and tiling stay in float32 PyTorch there):

==============  ==========================================================  ==============
backend         runs                                                        precisions
==============  ==========================================================  ==============
``torch``       the checkpoint's ``nn.Module``, BatchNorm folded,           fp32, bf16
                channels-last, optionally ``torch.compile`` (inductor)
``onnxruntime`` an ONNX file from ``semseg export`` (fp32 or int8)          fp32
``openvino``    the same ONNX file, read by OpenVINO's CPU plugin           fp32, bf16
==============  ==========================================================  ==============

ONNX Runtime and OpenVINO are optional packages (``pip install 'semseg[export]'``,
``pip install 'semseg[openvino]'``); asking for one that is not installed raises
:class:`~semseg.optional.MissingDependencyError` naming the package and the command that
installs it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from semseg.checkpoint import Checkpoint
from semseg.hardware import Machine, describe_machine
from semseg.inference.export import exported_onnx
from semseg.inference.fuse import (
    fuse_conv_activation,
    fuse_conv_bn,
    onednn_fusion_available,
)
from semseg.inference.onnx_model import OnnxModel, check_channels, read_onnx_metadata
from semseg.inference.precision import PRECISIONS, Precision, autocast, check_precision
from semseg.optional import installed, require

BACKENDS = ("torch", "onnxruntime", "openvino")
BACKEND_CHOICES = ("auto", *BACKENDS)
BACKEND_PACKAGES = {"onnxruntime": ("onnxruntime", "export"), "openvino": ("openvino", "openvino")}
"""Backend -> (Python package, semseg extra that installs it)."""


def backend_installed(backend: str) -> bool:
    """Whether ``backend``'s package can be imported (torch always can)."""
    return backend == "torch" or installed(BACKEND_PACKAGES[backend][0])


def check_backend(backend: str, choices: tuple[str, ...] = BACKEND_CHOICES) -> str:
    """``backend`` if it is one of ``choices``.

    Raises:
        ValueError: naming the value and the choices.
    """
    if backend not in choices:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(choices)}")
    return backend


AUTOCAST_BF16_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
"""Layers whose operations CPU autocast runs in bf16 with their weights cast to bf16."""


class TorchModel:
    """A PyTorch model as an inference backend.

    Args:
        model: maps (N, 3, H, W) normalised float to (N, C, H, W) logits. A copy in eval mode
            with BatchNorm folded into the convolutions and channels-last weights runs
            (both measured faster on CPUs, ``benchmarks/results/speed.md``), on the CPU with
            each convolution's activation and residual sum in the same oneDNN call
            (:func:`semseg.inference.fuse.fuse_conv_activation`); ``model`` itself is
            unchanged.
        precision: ``"fp32"``, or ``"bf16"`` for bfloat16 autocast (convolutions and matrix
            products in bf16, their weights stored in bf16; the logits are returned as
            float32).
        device: where the model and its inputs go.
        compile: run it through ``torch.compile`` (inductor). The first call of each new
            input shape compiles, which took about a minute for ``mobile_unet`` on 2 cores.

    Attributes:
        module: the folded model that runs (for ``output_stride`` and other attributes).
    """

    def __init__(
        self,
        model: nn.Module,
        precision: Precision = "fp32",
        device: str | torch.device = "cpu",
        compile: bool = False,
    ) -> None:
        self.precision = check_precision(precision, PRECISIONS)
        self.device = torch.device(device)
        self.module = fuse_conv_bn(model).to(self.device, memory_format=torch.channels_last)
        if self.precision == "bf16":
            # Autocast casts these layers' weights to bf16 at every call (a copy per layer
            # and call, a third of deeplabv3plus's time); stored in bf16 they compute the
            # same numbers without the copies. Other layers keep fp32 parameters, as under
            # autocast.
            for layer in self.module.modules():
                if isinstance(layer, AUTOCAST_BF16_LAYERS):
                    layer.to(torch.bfloat16)
        # inductor makes fusions of its own
        weights = torch.bfloat16 if self.precision == "bf16" else torch.float32
        if self.device.type == "cpu" and not compile and onednn_fusion_available(weights):
            fuse_conv_activation(self.module)
        self.compiled = compile
        self._forward = torch.compile(self.module) if compile else self.module

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.precision, self.device.type):
            logits = self._forward(images)
        return logits.float().contiguous()


class OpenVinoModel:
    """An ONNX file from ``semseg export`` run by OpenVINO on the CPU.

    Calling it maps (N, 3, H, W) float normalised images to (N, C, H, W) float32 logits; the
    compiled model keeps the file's dynamic batch, height and width.

    Args:
        path: the ``.onnx`` file (float32, or int8 from ``semseg export --quantize``).
        precision: ``"fp32"`` or ``"bf16"``, OpenVINO's ``INFERENCE_PRECISION_HINT`` (f32 or
            bf16). OpenVINO's own default on CPUs with bf16 arithmetic is bf16, so fp32 is
            set explicitly. An int8 file runs its quantized layers in int8 and the others in
            fp32.
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's, one per core).
        machine: the CPU (default: this one), checked for bf16 arithmetic and, for an int8
            file, AMX-INT8 or AVX-VNNI (:attr:`~semseg.hardware.Machine.openvino_int8`).

    Attributes:
        labels, mean, std, output_stride, int8: from the file's metadata.

    Raises:
        MissingDependencyError: OpenVINO is not installed.
        OnnxModelError: the file is missing or lacks semseg metadata.
        ValueError: bf16 on a CPU without bf16 arithmetic (OpenVINO would run fp32 instead
            of what was asked), bf16 for an int8 file, or an int8 file on a CPU without
            AMX-INT8 or AVX-VNNI (on two AMD EPYCs a U-Net's int8 file gave 48% of fp32's labels
            on OpenVINO 2026.4 and 99% on ONNX Runtime).
    """

    def __init__(
        self,
        path: str | Path,
        precision: Precision = "fp32",
        threads: int | None = None,
        machine: Machine | None = None,
    ) -> None:
        openvino = require("openvino", "--backend openvino", "openvino")
        self.path = Path(path)
        self.precision = check_precision(precision, PRECISIONS)
        metadata = read_onnx_metadata(self.path)
        self.labels = metadata["labels"]
        self.mean = tuple(float(v) for v in metadata["mean"])
        self.std = tuple(float(v) for v in metadata["std"])
        self.output_stride = int(metadata["output_stride"])
        self.int8 = "quantization" in metadata
        machine = machine or describe_machine()
        if self.int8 and not machine.openvino_int8:
            raise ValueError(
                f"{self.path}: OpenVINO computed wrong int8 results on CPUs without AMX-INT8 "
                f"or AVX-VNNI (AMD EPYCs among them), which {machine.cpu_model} lacks: run "
                "this file with --backend onnxruntime, or the fp32 export with --backend openvino"
            )
        if precision == "bf16":
            if self.int8:
                raise ValueError(
                    f"{self.path}: an int8 model runs its other layers in fp32 on OpenVINO "
                    "(its bf16 hint does not apply to quantized graphs); use --precision fp32"
                )
            if not machine.bf16_instructions:
                raise ValueError(
                    f"OpenVINO runs bf16 only on CPUs with AVX-512 BF16 or AMX; "
                    f"{machine.cpu_model} has neither: use --precision fp32"
                )
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        self._request = self.compiled.create_infer_request()
        self._output = self.compiled.output(0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = np.asarray(self._request.infer({0: array})[self._output], dtype=np.float32)
        check_channels(self.path, self.labels, logits.shape[1])
        return torch.from_numpy(logits)


@dataclass(frozen=True)
class Engine:
    """A backend at a precision, optionally compiled: what runs a model's forward pass.

    Attributes:
        backend: one of :data:`BACKENDS`.
        precision: ``"fp32"`` or ``"bf16"``.
        compiled: ``torch.compile`` (torch only).
    """

    backend: str
    precision: Precision = "fp32"
    compiled: bool = False

    def __post_init__(self) -> None:
        check_backend(self.backend, BACKENDS)
        check_precision(self.precision, PRECISIONS)
        if self.compiled and self.backend != "torch":
            raise ValueError(f"only the torch backend compiles; got backend {self.backend!r}")
        if self.backend == "onnxruntime" and self.precision != "fp32":
            raise ValueError(
                "onnxruntime runs fp32 (and int8 files from `semseg export --quantize`); "
                "for bf16 use --backend openvino or torch"
            )

    def __str__(self) -> str:
        return f"{self.backend} {self.precision}" + (" compiled" if self.compiled else "")


@dataclass(frozen=True)
class ModelSource:
    """What a trained model can be run from.

    Attributes:
        name: the file, for messages.
        key: what the model's speed depends on (architecture and arguments for a
            checkpoint, the file's hash for an ONNX file), for caching measurements.
        module: the PyTorch model, built on the first call (checkpoints only; None for ONNX
            files). Engines copy it; they never change it.
        onnx_file: the ONNX file (a checkpoint's is exported on first use).
        int8: the ONNX file is quantized.
    """

    name: str
    key: str
    module: Callable[[], nn.Module] | None
    onnx_file: Callable[[], Path]
    int8: bool = False


def build_engine(
    source: ModelSource,
    engine: Engine,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    machine: Machine | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``source``'s model on ``engine``: a callable from (N, 3, H, W) float32 normalised
    images to (N, C, H, W) float32 logits.

    Args:
        threads: ONNX Runtime's or OpenVINO's threads (PyTorch's are process-wide).

    Raises:
        ValueError: torch for an ONNX file, or ONNX Runtime / OpenVINO on a device other
            than the CPU.
        MissingDependencyError: the backend's package is not installed.
    """
    if engine.backend == "torch":
        if source.module is None:
            raise ValueError(
                f"{source.name}: --backend torch runs PyTorch checkpoints (.pt), not ONNX "
                "files; use --backend onnxruntime or openvino"
            )
        return TorchModel(source.module(), engine.precision, device, engine.compiled)
    if torch.device(device).type != "cpu":
        raise ValueError(f"--backend {engine.backend} runs on the CPU; got --device {device}")
    if engine.backend == "onnxruntime":
        return OnnxModel(source.onnx_file(), threads)
    return OpenVinoModel(source.onnx_file(), engine.precision, threads, machine)


def architecture_key(name: str, arguments: dict[str, Any]) -> str:
    """A model's speed key from its registry name and arguments (weights do not matter)."""
    text = json.dumps({"name": name, "arguments": arguments}, sort_keys=True, default=str)
    return "model:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def file_key(path: str | Path) -> str:
    """A file's speed key: its content hash (an ONNX file's graph and weights)."""
    with open(path, "rb") as file:
        return "file:" + hashlib.file_digest(file, "sha256").hexdigest()[:16]


def model_source(checkpoint: Checkpoint | str | Path) -> ModelSource:
    """What a ``.pt`` checkpoint or an ``.onnx`` file from ``semseg export`` runs from. A
    checkpoint's ONNX file is exported (once, into the cache folder) only when an ONNX
    engine is built.

    Raises:
        CheckpointError, OnnxModelError: naming the file when it cannot be read.
    """
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint.load(checkpoint)
    if checkpoint.is_onnx:
        path = Path(checkpoint.path)
        int8 = "quantization" in read_onnx_metadata(path)
        return ModelSource(str(path), file_key(path), None, lambda: path, int8)
    return ModelSource(
        checkpoint.source,
        architecture_key(checkpoint.model_name, checkpoint.model_args),
        functools.cache(checkpoint.build_model),
        lambda: exported_onnx(checkpoint),
    )
