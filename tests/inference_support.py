"""Helpers for the inference tests: a tiny trained checkpoint, shared by the whole session,
and small image and video files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from semseg.config import load_recipe
from semseg.engine.trainer import Trainer

TINY_RECIPE = [
    "train.epochs=1",
    "data.synthetic_train_size=8",
    "data.synthetic_val_size=2",
    "model.base_channels=4",
    "model.depth=2",
    "train.batch_size=4",
    "data.synthetic_image_size=[64,80]",
    "augment.crop_size=[64,80]",
]
"""A 2-level U-Net with 4 base channels (output stride 4) on the 8 synthetic classes."""


def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``best.pt`` of the tiny recipe, trained once per test session (in the session's base
    temporary folder) however many test modules ask for it."""
    run = tmp_path_factory.getbasetemp() / "tiny-unet-run"
    if not (run / "best.pt").is_file():
        Trainer(load_recipe("demo", TINY_RECIPE), run, progress=False).fit()
    return run / "best.pt"


def random_image(seed: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 noise."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def write_video(path: Path, frames: list[np.ndarray], fps: float = 7.0) -> Path:
    """Write RGB frames with OpenCV directly (mp4v for .mp4, MJPG otherwise)."""
    height, width = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames (BGR, as OpenCV decodes them) and the stated frame rate."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps
