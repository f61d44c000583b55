"""Scoring a model on a dataset: confusion-matrix metrics and boundary F1.

Under ``torchrun`` each process scores its shard of the dataset (:func:`evaluate_dataset`) and
the counts are summed over processes, so every process gets the scores of the whole dataset,
equal to a single process's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from semseg.engine import distributed
from semseg.engine.metrics import BoundaryF1, ConfusionMatrix, SegmentationScores
from semseg.labels import IGNORE_INDEX, LabelSet


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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    boundary: bool = True,
    progress: bool = False,
    description: str = "eval",
) -> Evaluation:
    """Run ``model`` over ``loader`` (yielding (N,3,H,W) images, (N,H,W) masks) and score it.

    The confusion matrix (and boundary F1 accumulators) are summed across processes when
    ``torch.distributed`` is initialised, so each process may see a disjoint shard; every
    process must call this (a collective).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    confusion = ConfusionMatrix(num_classes, ignore_index)
    boundary_f1 = BoundaryF1(num_classes, ignore_index) if boundary else None
    for images, masks in tqdm(loader, desc=description, disable=not progress, leave=False):
        predictions = model(images.to(device)).argmax(1).cpu()
        confusion.update(predictions, masks)
        if boundary_f1 is not None:
            boundary_f1.update(predictions, masks)
    model.train(was_training)
    confusion.all_reduce()
    if boundary_f1 is None:
        return Evaluation(confusion.compute(), None, None)
    boundary_f1.all_reduce()
    bf = boundary_f1.compute()
    return Evaluation(confusion.compute(), bf.mean, bf.per_class)


def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    batch_size: int = 1,
    workers: int = 0,
    boundary: bool = True,
    progress: bool = False,
    description: str = "eval",
) -> Evaluation:
    """:func:`evaluate` over ``dataset``, each process scoring its
    :func:`~semseg.engine.distributed.shard` (indices ``rank::world_size``, none twice, none
    padded) and the counts summed; a progress bar on rank 0 only."""
    loader = DataLoader(
        distributed.shard_dataset(dataset), batch_size=batch_size, num_workers=workers
    )
    return evaluate(
        model,
        loader,
        num_classes,
        ignore_index,
        boundary=boundary,
        progress=progress and distributed.is_main_process(),
        description=description,
    )
