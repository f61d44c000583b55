"""PyTorch datasets over files on disk and over the synthetic road-scene generator.

Both yield ``(image, mask)`` with image ``(3, H, W)`` float32 (normalised) and mask ``(H, W)``
int64 train ids (``IGNORE_INDEX`` for void). Augmentation is seeded per sample from
``(seed, epoch, index)``, so an epoch's samples do not depend on worker count or on what ran
before: a resumed run sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from semseg.data.formats import SplitFiles
from semseg.data.io import (
    DEFAULT_MAX_PIXELS,
    available_memory,
    image_size,
    read_image,
    read_mask,
)
from semseg.data.synthetic import SYNTHETIC_LABELS, render_scene
from semseg.data.transforms import to_tensor
from semseg.labels import LabelSet

SYNTHETIC_SPLIT_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
"""Scene seeds of a synthetic split start here, so splits never share a scene."""


class MaskSizeError(ValueError):
    """A mask does not have the size of its image."""


class PairedDataset(Dataset):
    """Base class: subclasses implement :meth:`read`; this applies augmentation and tensors."""

    labels: LabelSet

    def __init__(self, augmentation: A.Compose | None = None, seed: int = 0) -> None:
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating)."""
        self.epoch = epoch

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as (H, W, 3) uint8 RGB image and (H, W) uint8 train-id mask."""
        raise NotImplementedError

    def read_mask(self, index: int) -> np.ndarray:
        """Only the (H, W) uint8 train-id mask of sample ``index``."""
        return self.read(index)[1]

    def name(self, index: int) -> str:
        """A short name of sample ``index`` for reports and output files."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.read(index)
        if self.augmentation is not None:
            _seed(self.augmentation, np.random.SeedSequence([self.seed, self.epoch, index]))
            out = self.augmentation(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return to_tensor(image), torch.from_numpy(np.ascontiguousarray(mask)).long()


def _seed(transform: A.BaseCompose | A.BasicTransform, seeds: np.random.SeedSequence) -> None:
    """Seed ``transform`` and, with seeds of their own, every transform inside it.

    ``Compose.set_random_seed`` hands one seed to all its children, so their draws coincide:
    the flip would be decided by the same number as the scale factor and the crop position.
    """
    transform.set_random_seed(int(seeds.generate_state(1)[0]))
    if isinstance(transform, A.BaseCompose):
        children = transform.transforms
        for child, child_seeds in zip(children, seeds.spawn(len(children)), strict=True):
            _seed(child, child_seeds)


class PreloadMemoryError(MemoryError):
    """The decoded frames a preload would hold do not fit in the memory available."""


class FileDataset(PairedDataset):
    """Images and masks listed by a :class:`SplitFiles`; files whose header claims more than
    ``max_pixels`` pixels are refused before decoding.

    With ``preload``, every frame is decoded once when the dataset is made and kept in
    memory (4 bytes a pixel: RGB and the mask; CamVid's 468 frames take 324 MB), so an epoch
    decodes no PNG: an augmented 360x480 CamVid sample took 41 ms without it and 12 ms with
    it on one thread of the busy AMX Xeon (the real-time model's training step is about 150
    ms per image there), for 10 s of decoding up front. Samples are the same as without it.
    DataLoader workers started by fork share the frames; a bad file is reported when the
    dataset is made instead of in the middle of an epoch.
    """

    def __init__(
        self,
        files: SplitFiles,
        augmentation: A.Compose | None = None,
        seed: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        preload: bool = False,
    ) -> None:
        super().__init__(augmentation, seed)
        self.files = files
        self.labels = files.labels
        self.max_pixels = max_pixels
        self._frames: list[tuple[np.ndarray, np.ndarray]] | None = None
        if preload:
            self._check_preload_fits()
            self._frames = [self._decode(index) for index in range(len(self))]

    def _check_preload_fits(self) -> None:
        needed = sum(
            4 * height * width
            for height, width in (image_size(s.image, self.max_pixels) for s in self.files.samples)
        )
        available = available_memory()
        if available is not None and needed > available:
            first = Path(self.files.samples[0].image).parent
            raise PreloadMemoryError(
                f"data.preload: the split's {len(self)} frames ({first}, ...) need "
                f"{needed / 2**20:.0f} MiB decoded, more than the {available / 2**20:.0f} MiB "
                "of memory available; set data.preload=false"
            )

    def __len__(self) -> int:
        return len(self.files.samples)

    def name(self, index: int) -> str:
        return Path(self.files.samples[index].image).stem

    def read_mask(self, index: int) -> np.ndarray:
        sample = self.files.samples[index]
        return read_mask(sample.mask, self.labels, self.files.colour_masks, self.max_pixels)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._frames is None:
            return self._decode(index)
        image, mask = self._frames[index]
        return image.copy(), mask.copy()  # the caller may write into what it gets

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.files.samples[index]
        image = read_image(sample.image, self.max_pixels)
        mask = read_mask(sample.mask, self.labels, self.files.colour_masks, self.max_pixels)
        if image.shape[:2] != mask.shape:
            raise MaskSizeError(
                f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                f"{sample.image} is {image.shape[1]}x{image.shape[0]}"
            )
        return image, mask


class SyntheticDataset(PairedDataset):
    """``length`` rendered road scenes of ``image_size`` (H, W); split selects the seeds."""

    labels = SYNTHETIC_LABELS

    def __init__(
        self,
        split: str,
        length: int,
        image_size: tuple[int, int] = (128, 160),
        augmentation: A.Compose | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(augmentation, seed)
        if split not in SYNTHETIC_SPLIT_OFFSETS:
            choices = ", ".join(SYNTHETIC_SPLIT_OFFSETS)
            raise ValueError(f"synthetic split {split!r} unknown; choose from {choices}")
        if length < 1:
            raise ValueError(f"synthetic {split} size must be >= 1, got {length}")
        self.offset = SYNTHETIC_SPLIT_OFFSETS[split]
        self.length = length
        self.image_size = tuple(image_size)

    def __len__(self) -> int:
        return self.length

    def name(self, index: int) -> str:
        return f"scene_{self.offset + index:07d}"

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        height, width = self.image_size
        return render_scene(self.offset + index, height=height, width=width)
