"""Scoring a predictor on a dataset: confusion-matrix metrics and boundary F1.

There is one scorer, :func:`evaluate`, and it runs the model through a
:class:`~semseg.inference.predictor.Predictor`: what is scored is exactly what ``semseg
predict`` writes (same normalisation, test-time augmentation, tiling and backend), whether the
model is a PyTorch checkpoint, an ONNX file, or the model being trained.

Under ``torchrun`` each process scores its shard of the dataset (indices ``rank::world_size``)
and the counts are summed over processes, so every process gets the scores of the whole
dataset, equal to a single process's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from semseg.data.dataset import PairedDataset
from semseg.engine import distributed
from semseg.engine.metrics import BoundaryF1, ConfusionMatrix, SegmentationScores
from semseg.inference.predictor import Predictor
from semseg.labels import LabelSet


@dataclass(frozen=True)
class Evaluation:
    scores: SegmentationScores
    boundary_f1: float | None
    boundary_f1_per_class: list[float | None] | None

    def to_dict(self, labels: LabelSet) -> dict:
        """JSON-ready: ``miou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``fw_iou``,
        ``per_class_iou`` (name -> fraction or null), confusion matrix, boundary F1."""
        result = self.scores.to_dict(labels.names)
        if self.boundary_f1 is not None:
            result["boundary_f1"] = self.boundary_f1
            result["per_class_boundary_f1"] = dict(
                zip(labels.names, self.boundary_f1_per_class, strict=True)
            )
        return result


class _RawSamples(Dataset):
    """(H, W, 3) uint8 image and (H, W) uint8 train-id mask of a shard of ``dataset``."""

    def __init__(self, dataset: PairedDataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.read(self.indices[position])


def evaluate(
    predictor: Predictor,
    dataset: PairedDataset,
    batch_size: int = 1,
    workers: int = 0,
    boundary: bool = True,
    progress: bool = False,
    description: str = "evaluate",
    on_image: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> Evaluation:
    """Segment every sample of ``dataset`` with ``predictor`` and score the labels against
    the masks at the masks' resolution.

    ``on_image(index, labels, mask)``, when given, sees each sample's (H, W) uint8 predicted
    labels and train-id mask as they are scored (for per-image statistics such as bootstrap
    intervals); ``index`` is the sample's index in ``dataset``.

    Consecutive images of one size go through the predictor ``batch_size`` at a time; an
    image of another size starts a new batch, so datasets of mixed sizes work with any
    batch size. Every process under ``torchrun`` must call this (the counts are summed by a
    collective); a progress bar shows on rank 0 only.

    Raises:
        ValueError: when the predictor's classes differ from the dataset's.
    """
    if tuple(predictor.labels.names) != tuple(dataset.labels.names):
        raise ValueError(
            f"model classes {list(predictor.labels.names)} do not match the dataset's "
            f"{list(dataset.labels.names)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    num_classes, ignore_index = dataset.labels.num_classes, dataset.labels.ignore_index
    confusion = ConfusionMatrix(num_classes, ignore_index)
    boundary_f1 = BoundaryF1(num_classes, ignore_index) if boundary else None
    shard = list(distributed.shard(range(len(dataset))))
    # batch_size=None: samples come one by one, uncollated, in order (workers decode ahead).
    loader = DataLoader(_RawSamples(dataset, shard), batch_size=None, num_workers=workers)
    show = progress and distributed.is_main_process()
    with tqdm(total=len(shard), desc=description, disable=not show, leave=False) as bar:
        for indices, images, masks in _same_size_batches(loader, shard, batch_size):
            predictions = predictor.predict_batch(images, probabilities=False)
            labels = torch.from_numpy(np.stack([p.labels for p in predictions])).long()
            truth = torch.from_numpy(np.stack(masks)).long()
            confusion.update(labels, truth)
            if boundary_f1 is not None:
                boundary_f1.update(labels, truth)
            if on_image is not None:
                for index, prediction, mask in zip(indices, predictions, masks, strict=True):
                    on_image(index, prediction.labels, mask)
            bar.update(len(images))
    confusion.all_reduce()
    if boundary_f1 is None:
        return Evaluation(confusion.compute(), None, None)
    boundary_f1.all_reduce()
    bf = boundary_f1.compute()
    return Evaluation(confusion.compute(), bf.mean, bf.per_class)


def _same_size_batches(
    samples: DataLoader, indices: list[int], batch_size: int
) -> Iterator[tuple[list[int], list[np.ndarray], list[np.ndarray]]]:
    """(dataset indices, images, masks) of consecutive samples of one size, at most
    ``batch_size`` at a time."""
    batch: list[int] = []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for index, (image, mask) in zip(indices, samples, strict=True):
        image, mask = np.asarray(image), np.asarray(mask)
        if images and (image.shape != images[0].shape or len(images) == batch_size):
            yield batch, images, masks
            batch, images, masks = [], [], []
        batch.append(index)
        images.append(image)
        masks.append(mask)
    if images:
        yield batch, images, masks
