"""Paired image + mask augmentation and input normalisation.

Geometric transforms move image and mask together (albumentations applies the same random
parameters to both; masks use nearest-neighbour interpolation). Padding fills the mask with
``IGNORE_INDEX`` so padded pixels count in neither loss nor metrics.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from semseg.labels import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_augmentation(
    crop_size: tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    photometric: float = 0.2,
) -> A.Compose:
    """Random scale, pad + random crop to ``crop_size`` (H, W), horizontal flip, colour jitter.

    Args:
        crop_size: (height, width) of the training crops in pixels.
        scale_range: image scale factors drawn uniformly, e.g. (0.5, 2.0); (1, 1) disables.
        hflip: flip left-right with probability 0.5.
        photometric: strength of brightness / contrast / saturation jitter (0 disables);
            hue jitter is a tenth of it.
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
        A.RandomCrop(height=height, width=width),
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


def to_tensor(
    image: np.ndarray,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, scaled to [0, 1] then standardised."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)
