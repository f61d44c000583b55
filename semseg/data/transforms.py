"""Paired image + mask augmentation and input normalisation.

Geometric transforms move image and mask together (albumentations applies the same random
parameters to both; masks use nearest-neighbour interpolation). Padding fills the mask with
``IGNORE_INDEX`` so padded pixels count in neither loss nor metrics.
"""

from __future__ import annotations

import functools
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.augmentations.crops.transforms import BaseCrop

from semseg.labels import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_augmentation(
    crop_size: tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    photometric: float = 0.2,
    class_balanced_crops: float = 0.0,
) -> A.Compose:
    """Random scale, pad + random crop to ``crop_size`` (H, W), horizontal flip, colour jitter.

    Args:
        crop_size: (height, width) of the training crops in pixels.
        scale_range: image scale factors drawn uniformly, e.g. (0.5, 2.0); (1, 1) disables.
        hflip: flip left-right with probability 0.5.
        photometric: strength of brightness / contrast / saturation jitter (0 disables);
            hue jitter is a tenth of it.
        class_balanced_crops: fraction of the crops placed on a class drawn uniformly from
            the classes the mask holds (:class:`ClassBalancedCrop`); the rest are uniform.
    """
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    height, width = crop_size
    steps: list[A.BasicTransform] = []
    if (low, high) != (1.0, 1.0):
        steps.append(
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),
                interpolation=cv2.INTER_LINEAR,
                # pixel-centre aligned like INTER_LINEAR; INTER_NEAREST lags by up to a pixel
                mask_interpolation=cv2.INTER_NEAREST_EXACT,
                p=1.0,
            )
        )
    steps += [
        A.PadIfNeeded(
            min_height=height,
            min_width=width,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=IGNORE_INDEX,
        ),
        ClassBalancedCrop(height, width, class_balanced_crops),
    ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if photometric > 0:
        steps.append(
            A.ColorJitter(
                brightness=photometric,
                contrast=photometric,
                saturation=photometric,
                hue=photometric / 10,
                p=0.8,
            )
        )
    return A.Compose(steps)


class ClassBalancedCrop(BaseCrop):
    """A ``height`` x ``width`` crop that, with probability ``balanced``, contains a pixel of a
    class drawn uniformly from the classes in the mask.

    A uniform crop gives each class pixels in proportion to its area, so thin and rare
    classes (pole, sign, bicyclist) are seen in few crops. The balanced draw picks a class
    among those present (``IGNORE_INDEX`` excluded; all present classes equally likely), one
    of its pixels uniformly, and a window with that pixel at a uniform position inside it,
    shifted where needed to lie within the image. With ``balanced=0``, or a mask with no
    labelled pixel, the crop position is uniform. The image must already be at
    least the crop's size (pad first).
    """

    def __init__(self, height: int, width: int, balanced: float = 0.0) -> None:
        if not 0.0 <= balanced <= 1.0:
            raise ValueError(f"class_balanced_crops must lie in [0, 1], got {balanced}")
        super().__init__(p=1.0)
        self.height = height
        self.width = width
        self.balanced = balanced

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        image_height, image_width = params["shape"][:2]
        if self.height > image_height or self.width > image_width:
            raise ValueError(
                f"crop {self.height}x{self.width} is larger than the {image_height}x{image_width}"
                " input; pad before cropping"
            )
        # Both draws are made every time, so a sample's other random choices do not depend on
        # which kind of crop it got.
        balanced = self.py_random.random() < self.balanced
        offset_y, offset_x = self.py_random.random(), self.py_random.random()
        top = round(offset_y * (image_height - self.height))
        left = round(offset_x * (image_width - self.width))
        if balanced:
            pixel = self._pixel_of_a_present_class(data["mask"])
            if pixel is not None:
                row, column = pixel
                top = _clamp(row - int(offset_y * self.height), 0, image_height - self.height)
                left = _clamp(column - int(offset_x * self.width), 0, image_width - self.width)
        return {"crop_coords": (left, top, left + self.width, top + self.height)}

    def _pixel_of_a_present_class(self, mask: np.ndarray) -> tuple[int, int] | None:
        """(row, column) of a uniform pixel of a uniformly drawn class present in ``mask``."""
        counts = np.bincount(mask.ravel(), minlength=IGNORE_INDEX + 1)
        counts[IGNORE_INDEX:] = 0
        present = np.flatnonzero(counts)
        if present.size == 0:
            return None
        label = present[self.py_random.randrange(present.size)]
        flat = np.flatnonzero(mask.ravel() == label)[self.py_random.randrange(counts[label])]
        return divmod(int(flat), mask.shape[1])


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def to_tensor(
    image: np.ndarray,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, contiguous, scaled to [0, 1] then
    standardised: ``(image / 255 - mean) / std`` per channel."""
    return torch.from_numpy(normalise(image, mean, std))


def normalise(
    image: np.ndarray,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> np.ndarray:
    """:func:`to_tensor` as a NumPy array: (H, W, 3) uint8 -> (3, H, W) float32.

    A lookup of each channel's 256 values, in NumPy: PyTorch's multithreaded arithmetic
    leaves its OpenMP workers spinning for milliseconds after it returns, and an ONNX Runtime
    or OpenVINO call right after them ran 3-4 ms slower on a 2-core CPU (12 ms against 16 for
    the real-time model).
    """
    table = _normalisation_table(tuple(mean), tuple(std))
    out = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], image[..., channel], out=out[channel])
    return out


@functools.lru_cache(maxsize=16)
def _normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: the normalised value of each uint8 value per channel, computed in
    float32 in the order PyTorch computes ``(x / 255 - mean) / std``."""
    values = torch.arange(256, dtype=torch.float32).div_(255.0)[None].repeat(3, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1)
    return values.sub_(mean_t).div_(std_t).numpy()
