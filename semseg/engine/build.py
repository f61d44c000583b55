"""Datasets, their check and class weights from a recipe's sections."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semseg.config import AugmentConfig, DataConfig, LossConfig
from semseg.data.check import check_dataset
from semseg.data.dataset import FileDataset, PairedDataset, SyntheticDataset
from semseg.data.formats import list_split
from semseg.data.stats import class_stats
from semseg.data.transforms import train_augmentation


def build_dataset(
    data: DataConfig, split: str, augment: AugmentConfig | None = None, seed: int = 0
) -> PairedDataset:
    """The dataset of ``split``; with ``augment``, samples are augmented (training)."""
    augmentation = train_augmentation(**augment.model_dump()) if augment is not None else None
    if data.format == "synthetic":
        length = data.synthetic_train_size if split == "train" else data.synthetic_val_size
        return SyntheticDataset(split, length, data.synthetic_image_size, augmentation, seed)
    files = list_split(_root(data), split, data.format)
    return FileDataset(files, augmentation, seed, data.max_pixels)


def check_data(data: DataConfig, splits: Sequence[str], progress: bool = False) -> None:
    """Check every sample of ``splits`` (:func:`semseg.data.check.check_dataset`: headers and
    mask values, not a training pass); synthetic data is not checked.

    Raises:
        DatasetCheckError: listing every problem found, with a count per kind.
    """
    if data.format == "synthetic":
        return
    splits = list(dict.fromkeys(splits))
    check_dataset(_root(data), splits, data.format, data.max_pixels, progress).raise_for_problems()


def _root(data: DataConfig) -> str:
    if data.root is None:
        raise ValueError(f"data.root is required for data.format {data.format!r}")
    return data.root


def build_class_weights(loss: LossConfig, train_set: PairedDataset) -> list[float] | None:
    """Per-class loss weights: given, or by median-frequency balancing over ``train_set``."""
    weights = loss.class_weights
    if weights is None:
        return None
    num_classes = train_set.labels.num_classes
    if isinstance(weights, list):
        if len(weights) != num_classes:
            raise ValueError(
                f"loss.class_weights has {len(weights)} values for {num_classes} classes"
            )
        return weights
    over = "present_images" if weights == "median_frequency" else "all_pixels"
    return np.round(class_stats(train_set).median_frequency_weights(over), 6).tolist()
