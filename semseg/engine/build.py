"""Datasets and class weights from a recipe's sections."""

from __future__ import annotations

import numpy as np

from semseg.config import AugmentConfig, DataConfig, LossConfig
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
    if data.root is None:
        raise ValueError(f"data.root is required for data.format {data.format!r}")
    files = list_split(data.root, split, data.format)
    return FileDataset(files, augmentation, seed, data.max_pixels)


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
