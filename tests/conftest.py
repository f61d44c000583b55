"""Shared fixtures: tiny datasets written to ``tmp_path`` and held in memory."""

import os
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from PIL import Image

from semseg.data.dataset import PairedDataset
from semseg.labels import CAMVID, LabelSet

Pair = tuple[np.ndarray, np.ndarray]


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory):
    """Probe results and ONNX exports go to a folder of this session, never ~/.cache."""
    previous = os.environ.get("SEMSEG_CACHE_DIR")
    os.environ["SEMSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("semseg-cache"))
    yield
    if previous is None:
        del os.environ["SEMSEG_CACHE_DIR"]
    else:
        os.environ["SEMSEG_CACHE_DIR"] = previous


@pytest.fixture
def make_camvid(tmp_path: Path) -> Callable[[dict[str, Sequence[Pair]]], Path]:
    """Factory writing a CamVid (SegNet layout) dataset under ``tmp_path / "camvid"``.

    Call it with ``{split: [(image, mask), ...]}``: image (H, W, 3) uint8 RGB, mask (H, W)
    uint8 raw CamVid values (0..10 classes, 11 void). Sample ``i`` of ``split`` is written as
    ``{split}/{split}_{i:03d}.png`` (RGB PNG) and ``{split}annot/`` the same name (mode L PNG),
    with Pillow directly so the writer under test is not involved. Returns the root.
    """

    def make(splits: dict[str, Sequence[Pair]]) -> Path:
        root = tmp_path / "camvid"
        for split, pairs in splits.items():
            (root / split).mkdir(parents=True)
            (root / f"{split}annot").mkdir()
            for i, (image, mask) in enumerate(pairs):
                name = f"{split}_{i:03d}.png"
                Image.fromarray(image).save(root / split / name)
                Image.fromarray(mask).save(root / f"{split}annot" / name)
        return root

    return make


@pytest.fixture
def random_pair() -> Callable[..., Pair]:
    """Factory of a random (image, mask) pair: ``random_pair(seed, size=(H, W), values=...)``
    gives an (H, W, 3) uint8 image and an (H, W) uint8 mask drawn from ``values``."""

    def make(seed: int, size: tuple[int, int] = (6, 8), values: Sequence[int] = range(12)) -> Pair:
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        mask = rng.choice(np.asarray(values, dtype=np.uint8), size=size)
        return image, mask

    return make


@pytest.fixture
def png_claiming() -> Callable[[Path, int, int], Path]:
    """Factory writing a tiny PNG whose header claims ``width`` x ``height`` pixels (RGB,
    8 bits): ``png_claiming(path, width, height)``. The signature and chunks are valid (CRCs
    included) but the IDAT holds one short row, so nothing that big is ever allocated unless
    the reader decodes it: a decompression bomb's header, a few dozen bytes on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    def make(path: Path, width: int, height: int) -> Path:
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        pixels = zlib.compress(b"\0" * 16)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b"")
        )  # fmt: skip
        return path

    return make


class ArrayDataset(PairedDataset):
    """In-memory pairs of (H, W, 3) uint8 images and (H, W) uint8 train-id masks."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        augmentation: A.Compose | None = None,
        seed: int = 0,
        labels: LabelSet = CAMVID,
    ) -> None:
        super().__init__(augmentation, seed)
        self.pairs = list(pairs)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, index: int) -> str:
        return f"pair_{index}"

    def read(self, index: int) -> Pair:
        image, mask = self.pairs[index]
        return image.copy(), mask.copy()


@pytest.fixture
def array_dataset() -> type[ArrayDataset]:
    """The :class:`ArrayDataset` class: a :class:`PairedDataset` over arrays in memory."""
    return ArrayDataset
