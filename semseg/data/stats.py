"""Class pixel frequencies and median-frequency class weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semseg.data.dataset import PairedDataset


@dataclass(frozen=True)
class ClassStats:
    """Pixel statistics of a dataset's masks.

    Attributes:
        pixel_counts: (C,) labelled pixels of each class.
        present_pixels: (C,) total labelled pixels of the images in which each class appears.
        image_counts: (C,) number of images in which each class appears.
        num_images: images scanned.
    """

    pixel_counts: np.ndarray
    present_pixels: np.ndarray
    image_counts: np.ndarray
    num_images: int

    @property
    def frequency(self) -> np.ndarray:
        """(C,) share of all labelled pixels per class."""
        return self.pixel_counts / max(int(self.pixel_counts.sum()), 1)

    def median_frequency_weights(self, over: str = "present_images") -> np.ndarray:
        """(C,) float weights ``median(freq) / freq(c)``; 0 for classes never seen.

        Args:
            over: ``"present_images"``: freq(c) = pixels of c / pixels of the images where c
                appears (Eigen and Fergus 2015, used by SegNet); ``"all_pixels"``: freq(c) =
                pixels of c / all labelled pixels.
        """
        if over == "present_images":
            denominators = self.present_pixels
        elif over == "all_pixels":
            denominators = np.full_like(self.pixel_counts, self.pixel_counts.sum())
        else:
            raise ValueError(f"over must be 'present_images' or 'all_pixels', got {over!r}")
        seen = self.pixel_counts > 0
        frequency = np.zeros(len(self.pixel_counts), dtype=np.float64)
        frequency[seen] = self.pixel_counts[seen] / denominators[seen]
        weights = np.zeros_like(frequency)
        weights[seen] = np.median(frequency[seen]) / frequency[seen]
        return weights


def class_stats(dataset: PairedDataset) -> ClassStats:
    """Scan every mask of ``dataset`` (without augmentation); ignored pixels are not counted."""
    num_classes = dataset.labels.num_classes
    pixel_counts = np.zeros(num_classes, dtype=np.int64)
    present_pixels = np.zeros(num_classes, dtype=np.int64)
    image_counts = np.zeros(num_classes, dtype=np.int64)
    for index in range(len(dataset)):
        mask = dataset.read_mask(index)
        counts = np.bincount(mask.ravel(), minlength=256)[:num_classes]
        present = counts > 0
        pixel_counts += counts
        present_pixels[present] += counts.sum()
        image_counts += present
    return ClassStats(pixel_counts, present_pixels, image_counts, len(dataset))
