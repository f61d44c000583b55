"""The one way a trained model runs on images: ``Predictor.from_checkpoint(path).predict(image)``.

A :class:`Predictor` runs a PyTorch checkpoint or an ONNX file written by ``semseg export``
(ONNX Runtime); :class:`~semseg.inference.tta.InferenceOptions` choose sliding-window tiling,
padding and test-time augmentation for either. Evaluation, file prediction, video, drivable
space and export all go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semseg.checkpoint import build_model_from, load_checkpoint
from semseg.data.transforms import to_tensor
from semseg.inference.backends import Engine, TorchModel, build_engine, model_source
from semseg.inference.onnx_model import read_onnx_metadata
from semseg.inference.tta import InferenceOptions, infer_probabilities
from semseg.labels import LabelSet


@dataclass(frozen=True)
class Prediction:
    """labels: (H, W) uint8 train ids; probabilities: (C, H, W) float32 softmax."""

    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        """(H, W) float32 probability of the predicted class."""
        return self.probabilities.max(axis=0)


class Predictor:
    """A model with its label set and input normalisation, ready for images.

    Args:
        model: maps (N, 3, H, W) normalised float to (N, C, H, W) logits; an ``nn.Module``
            (run as :class:`~semseg.inference.backends.TorchModel` in fp32: an eval-mode copy
            on ``device`` with BatchNorm folded into the convolutions and channels-last
            weights) or another callable, such as a backend of
            :mod:`semseg.inference.backends` or an :class:`~semseg.inference.auto.AutoModel`.
        labels: the model's classes.
        mean, std: per-channel normalisation applied to [0, 1] RGB input.
        device: where the inputs go (and an ``nn.Module`` model).
        options: tiling, padding and test-time augmentation (default: whole image, no TTA).
        output_stride: inputs are padded to multiples of it; default the model's
            ``output_stride`` attribute, else 1.

    Raises:
        ValueError: when ``options.tile_size`` is smaller than the output stride.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        labels: LabelSet,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: str | torch.device = "cpu",
        options: InferenceOptions | None = None,
        output_stride: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        if isinstance(model, nn.Module):
            model = TorchModel(model, "fp32", self.device)
        self.engine = model
        # What callers inspect: the folded nn.Module that runs, or the callable itself.
        self.model = model.module if isinstance(model, TorchModel) else model
        self.labels = labels
        self.mean, self.std = tuple(mean), tuple(std)
        self.options = options or InferenceOptions()
        self.output_stride = int(output_stride or getattr(self.model, "output_stride", 1))
        tile = self.options.tile_size
        if tile is not None and min(tile) < self.output_stride:
            raise ValueError(
                f"tile_size {tile} is smaller than the model's output stride {self.output_stride}"
            )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | None = None,
        options: InferenceOptions | None = None,
    ) -> Predictor:
        """The PyTorch model of a checkpoint written by training."""
        checkpoint = load_checkpoint(path)
        norm = checkpoint["normalisation"]
        return cls(
            build_model_from(checkpoint, str(path)),
            LabelSet.from_dict(checkpoint["labels"]),
            norm["mean"],
            norm["std"],
            device or ("cuda" if torch.cuda.is_available() else "cpu"),
            options,
        )

    @classmethod
    def from_onnx(
        cls, path: str | Path, options: InferenceOptions | None = None, threads: int | None = None
    ) -> Predictor:
        """An ONNX file written by ``semseg export``, run by ONNX Runtime on the CPU with
        ``threads`` threads (default: one per core); classes and normalisation come from the
        file's metadata."""
        from semseg.inference.onnx_model import OnnxModel

        model = OnnxModel(path, threads)
        return cls(model, model.labels, model.mean, model.std, "cpu", options, model.output_stride)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.engine(images).contiguous()

    def predict(self, image: np.ndarray) -> Prediction:
        """image: (H, W, 3) uint8 RGB -> :class:`Prediction` at the image's size.

        Raises:
            ValueError: the array is not an (H, W, 3) uint8 image.
            InputSizeError: the image is smaller than the model's output stride.
        """
        return self.predict_batch([image])[0]

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Images of one size, each (H, W, 3) uint8 RGB, in one forward pass per tile, flip
        and scale -> one :class:`Prediction` per image."""
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
                )
        sizes = sorted({image.shape[:2] for image in images})
        if len(sizes) != 1:
            raise ValueError(f"predict_batch needs images of one size, got sizes {sizes}")
        batch = torch.stack([to_tensor(image, self.mean, self.std) for image in images])
        probabilities = infer_probabilities(
            self._forward, batch.to(self.device), self.options, self.output_stride
        ).cpu()
        labels = probabilities.argmax(1).byte()
        return [
            Prediction(label.numpy(), probability.numpy())
            for label, probability in zip(labels, probabilities, strict=True)
        ]


def load_predictor(
    path: str | Path,
    device: str | None = None,
    options: InferenceOptions | None = None,
    threads: int | None = None,
    backend: str | None = None,
    precision: str = "fp32",
    images: int | None = None,
    report: Callable[[str], None] | None = None,
) -> Predictor:
    """A checkpoint (``.pt``) or an exported ``.onnx`` file, run by ``backend`` at
    ``precision``.

    Args:
        backend: ``torch``, ``onnxruntime``, ``openvino`` or ``auto`` (see
            :mod:`semseg.inference.auto`); None: the file's own (PyTorch for a checkpoint,
            ONNX Runtime for an ONNX file).
        precision: ``fp32``, ``bf16`` or ``auto``.
        images: how many images will be run (``auto`` weighs setup time against it).
        report: receives the line saying what ``auto`` chose (default: the log).
        threads: the CPU threads: ONNX Runtime's or OpenVINO's for this model, PyTorch's for
            the whole process (``torch.set_num_threads``). On a 2-core machine busy with other
            work, one thread was several times faster than two for PyTorch
            (benchmarks/results/inference.md).

    Raises:
        ValueError: a device other than the CPU for an ONNX file, or an engine that cannot
            run this model here.
        MissingDependencyError: the backend's package is not installed.
    """
    from semseg.inference.auto import AutoModel

    onnx = Path(path).suffix.lower() == ".onnx"
    if onnx and device not in (None, "cpu"):
        raise ValueError(f"{path}: ONNX models run on the CPU; got --device {device}")
    device = device or ("cuda" if torch.cuda.is_available() and not onnx else "cpu")
    if threads is not None and not onnx:
        torch.set_num_threads(threads)
    source = model_source(path)
    backend = backend or ("onnxruntime" if onnx else "torch")
    if onnx:
        metadata = read_onnx_metadata(path)
        labels, stride = metadata["labels"], int(metadata["output_stride"])
        mean, std = metadata["mean"], metadata["std"]
    else:
        checkpoint = load_checkpoint(path)
        labels = LabelSet.from_dict(checkpoint["labels"])
        mean, std = checkpoint["normalisation"]["mean"], checkpoint["normalisation"]["std"]
        stride = int(getattr(source.module(), "output_stride", 1))
    if "auto" in (backend, precision):
        engine = AutoModel(source, backend, precision, device, threads, images, report)
    else:
        engine = build_engine(source, Engine(backend, precision), device, threads)
    return Predictor(engine, labels, mean, std, device, options, stride)
