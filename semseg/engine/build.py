"""Datasets, their check, class weights and the loss from a recipe's sections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np

from semseg.config import AugmentConfig, DataConfig, LossConfig
from semseg.data.check import check_dataset
from semseg.data.dataset import FileDataset, PairedDataset, SyntheticDataset
from semseg.data.formats import SplitFiles, detect_format, list_split
from semseg.data.groups import DEFAULT_GROUP_PATTERNS, GroupSplit, split_by_group
from semseg.data.stats import class_stats
from semseg.data.transforms import train_augmentation
from semseg.engine.losses import LOSSES, SegmentationLoss


def build_dataset(
    data: DataConfig, split: str, augment: AugmentConfig | None = None, seed: int = 0
) -> PairedDataset:
    """The dataset of ``split``; with ``augment``, samples are augmented (training)."""
    augmentation = _augmentation(augment)
    if data.format == "synthetic":
        length = data.synthetic_train_size if split == "train" else data.synthetic_val_size
        return SyntheticDataset(split, length, data.synthetic_image_size, augmentation, seed)
    files = list_split(_root(data), split, data.format)
    return FileDataset(files, augmentation, seed, data.max_pixels, data.preload)


def _augmentation(augment: AugmentConfig | None) -> A.Compose | None:
    """The paired training augmentation ``augment`` describes; None without one."""
    return train_augmentation(**augment.model_dump()) if augment is not None else None


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


@dataclass(frozen=True)
class TrainValSets:
    """The training and validation sets of a recipe.

    Attributes:
        groups: with ``data.holdout_groups``, how the frames were split by group (their counts
            per group); None when the recipe's splits are used as they are.
    """

    train: PairedDataset
    val: PairedDataset
    groups: GroupSplit | None = None


def build_datasets(
    data: DataConfig, augment: AugmentConfig | None = None, seed: int = 0
) -> TrainValSets:
    """The training set (augmented with ``augment``) and validation set ``data`` describes:
    ``train_split`` and ``val_split``, or, with ``data.holdout_groups``, the frames of both
    outside and inside the held-out groups.

    Raises:
        ValueError: holdout groups for a format with no group pattern and none given.
        DatasetError: from :func:`semseg.data.groups.split_by_group` (a group no file has).
    """
    if not data.holdout_groups:
        return TrainValSets(
            build_dataset(data, data.train_split, augment, seed),
            build_dataset(data, data.val_split),
        )
    groups = group_split(data)
    augmentation = _augmentation(augment)
    return TrainValSets(
        FileDataset(groups.train, augmentation, seed, data.max_pixels, data.preload),
        FileDataset(groups.val, max_pixels=data.max_pixels, preload=data.preload),
        groups,
    )


def group_split(data: DataConfig) -> GroupSplit:
    """``train_split`` and ``val_split`` pooled, then split by ``data.holdout_groups``."""
    if data.format == "synthetic" or data.root is None:
        raise ValueError(
            "data.holdout_groups needs a dataset folder (data.root); "
            f"data.format is {data.format!r}"
        )
    data_format = data.format or detect_format(Path(data.root))
    pattern = data.group_pattern or DEFAULT_GROUP_PATTERNS.get(data_format)
    if pattern is None:
        raise ValueError(
            f"data.holdout_groups: format {data_format!r} has no default group pattern; set "
            "data.group_pattern (a regular expression whose first group is a file's group)"
        )
    names = dict.fromkeys((data.train_split, data.val_split))  # once when they are the same
    splits = [list_split(data.root, name, data_format) for name in names]
    pool = SplitFiles(
        tuple(s for split in splits for s in split.samples),
        splits[0].labels,
        splits[0].colour_masks,
    )
    return split_by_group(pool, pattern, data.holdout_groups)


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


def build_loss(
    config: LossConfig, class_weights: Sequence[float] | None, ignore_index: int
) -> SegmentationLoss:
    """The weighted sum of ``config.terms``; ``class_weights`` (resolved from
    ``config.class_weights``) go to every term with ``class_weighted`` true."""
    terms = []
    for term in config.terms:
        weights = class_weights if term.class_weighted else None
        try:
            loss = LOSSES[term.name](
                **term.arguments, class_weights=weights, ignore_index=ignore_index
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"loss term {term.name!r}: {error}") from None
        terms.append((term.weight, loss))
    return SegmentationLoss(terms)
