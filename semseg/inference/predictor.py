"""The one way a trained model runs on images: ``Predictor.from_checkpoint(path).predict(image)``.

A :class:`Predictor` runs a PyTorch checkpoint or an ONNX file written by ``semseg export``
(ONNX Runtime, OpenVINO); :class:`~semseg.inference.tta.InferenceOptions` choose sliding-window
tiling and test-time augmentation for any of them. Evaluation, file prediction, video, drivable
space and export all go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semseg.checkpoint import Checkpoint
from semseg.data.transforms import normalise
from semseg.inference.backends import Engine, TorchModel, build_engine, model_source
from semseg.inference.tta import (
    InferenceOptions,
    class_indices,
    infer_labels,
    infer_probabilities,
)
from semseg.labels import LabelSet


@dataclass(frozen=True)
class Prediction:
    """labels: (H, W) uint8 train ids; probabilities: (C, H, W) float32 softmax, or None
    when the prediction was asked for labels only."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None

    @property
    def confidence(self) -> np.ndarray:
        """(H, W) float32 probability of the predicted class.

        Raises:
            ValueError: the prediction was made without probabilities.
        """
        if self.probabilities is None:
            raise ValueError(
                "this prediction has labels only; predict with probabilities=True for confidence"
            )
        return self.probabilities.max(axis=0)


class Predictor:
    """A model with its label set and input normalisation, ready for images.

    Args:
        model: maps (N, 3, H, W) normalised float to (N, C, H, W) logits at input size, for
            any H, W of at least ``output_stride`` (the model pads itself where its layers
            need it, see :mod:`semseg.models.contract`); an ``nn.Module`` (run as
            :class:`~semseg.inference.backends.TorchModel` in fp32: an eval-mode copy on
            ``device`` with BatchNorm folded into the convolutions and channels-last weights)
            or another callable, such as a backend of :mod:`semseg.inference.backends` or an
            :class:`~semseg.inference.auto.AutoModel`.
        labels: the model's classes.
        mean, std: per-channel normalisation applied to [0, 1] RGB input.
        device: where the inputs go (and an ``nn.Module`` model).
        options: tiling and test-time augmentation (default: whole image, no TTA).
        output_stride: the smallest input side the model accepts, and the smallest tile;
            default the model's ``output_stride`` attribute, else 1.

    Raises:
        ValueError: when ``options.tile_size`` is smaller than the output stride.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        labels: LabelSet,
        mean: Sequence[float],
        std: Sequence[float],
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
        checkpoint: Checkpoint | str | Path,
        device: str | None = None,
        options: InferenceOptions | None = None,
        threads: int | None = None,
        backend: str | None = None,
        precision: str = "fp32",
        images: int | None = None,
        report: Callable[[str], None] | None = None,
    ) -> Predictor:
        """The model of a checkpoint (``.pt``) or of an ONNX file written by ``semseg export``,
        with the checkpoint's classes and normalisation, run by ``backend`` at ``precision``.

        Args:
            backend: ``torch`` (on ``device``), ``onnxruntime`` or ``openvino`` (on the CPU),
                or ``auto`` (see :mod:`semseg.inference.auto`); None: the file's own, PyTorch
                for a checkpoint, ONNX Runtime for an ONNX file.
            precision: ``fp32``, ``bf16`` or ``auto``.
            threads: ONNX Runtime's or OpenVINO's threads (default one per core). PyTorch's
                thread count is process-wide, and setting it is left to the caller (the
                CLI's ``--threads``).
            images: how many images will be run (``auto`` weighs setup time against it).
            report: receives the line saying what ``auto`` chose (default: the log).

        Raises:
            CheckpointError: naming the file, when it cannot be read.
            ValueError: a device other than the CPU for an ONNX file, or an engine that
                cannot run this model here.
            MissingDependencyError: the backend's package is not installed.
        """
        from semseg.inference.auto import AutoModel

        if not isinstance(checkpoint, Checkpoint):
            checkpoint = Checkpoint.load(checkpoint)
        if checkpoint.is_onnx:
            if device not in (None, "cpu"):
                raise ValueError(f"{checkpoint.path}: ONNX models run on the CPU; got {device}")
            device = "cpu"
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        source = model_source(checkpoint)
        backend = backend or ("onnxruntime" if checkpoint.is_onnx else "torch")
        if "auto" in (backend, precision):
            engine = AutoModel(source, backend, precision, device, threads, images, report)
        else:
            engine = build_engine(source, Engine(backend, precision), device, threads)
        stride = checkpoint.output_stride or int(source.module().output_stride)
        return cls(
            engine, checkpoint.labels, checkpoint.mean, checkpoint.std, device, options, stride
        )

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.engine(images).contiguous()

    def predict(self, image: np.ndarray, probabilities: bool = True) -> Prediction:
        """image: (H, W, 3) uint8 RGB -> :class:`Prediction` at the image's size, with its
        probabilities unless ``probabilities`` is False (then, where nothing is averaged, the
        labels are the argmax of the logits and no softmax is computed).

        Raises:
            ValueError: the array is not an (H, W, 3) uint8 image.
            InputSizeError: the image is smaller than the model's output stride.
        """
        return self.predict_batch([image], probabilities)[0]

    @torch.inference_mode()
    def predict_batch(
        self, images: Sequence[np.ndarray], probabilities: bool = True
    ) -> list[Prediction]:
        """Images of one size, each (H, W, 3) uint8 RGB, in one forward pass per tile, flip
        and scale -> one :class:`Prediction` per image (labels only when ``probabilities``
        is False, as in :meth:`predict`)."""
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
                )
        sizes = sorted({image.shape[:2] for image in images})
        if len(sizes) != 1:
            raise ValueError(f"predict_batch needs images of one size, got sizes {sizes}")
        arrays = [normalise(image, self.mean, self.std) for image in images]
        batch = torch.from_numpy(arrays[0][None] if len(arrays) == 1 else np.stack(arrays))
        batch = batch.to(self.device)
        if not probabilities:
            # The engine's output as it is: max over channels is as fast on channels-last
            # logits, and the copy to contiguous would be most of its cost.
            labels = infer_labels(self.engine, batch, self.options, self.output_stride)
            return [Prediction(label.numpy()) for label in labels.byte().cpu()]
        softmax = infer_probabilities(self._forward, batch, self.options, self.output_stride)
        softmax = softmax.cpu()
        return [
            Prediction(label.numpy(), probability.numpy())
            for label, probability in zip(class_indices(softmax).byte(), softmax, strict=True)
        ]
