"""Video files: reading frames, writing frames at a frame rate, segmenting a whole video.

Frames are (H, W, 3) uint8 RGB here; OpenCV's BGR order stays inside this module. Written
codecs are ones OpenCV's bundled FFmpeg always has: MPEG-4 Part 2 (``mp4v``) in .mp4 and .mov,
Motion JPEG in .avi and .mkv.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from semseg.inference.tta import InputSizeError
from semseg.visualize import overlay

if TYPE_CHECKING:
    from semseg.inference.predictor import Predictor

FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
VIDEO_SUFFIXES = tuple(FOURCC)
DEFAULT_FPS = 25.0
"""Frame rate written when the input container does not state one."""


class VideoReadError(OSError):
    """A video file cannot be opened or holds no decodable frame."""


class VideoWriteError(OSError):
    """A video file cannot be written (unknown container or codec)."""


class VideoReader:
    """Frames of a video file, in order, as (H, W, 3) uint8 RGB.

    Attributes:
        fps: frames per second stated by the container (``DEFAULT_FPS`` when it states none).
        frame_count: the container's frame count, 0 when unknown (an estimate for some
            formats; iteration yields the frames that actually decode).

    Raises:
        VideoReadError: naming the file, when it cannot be opened or its first frame does not
            decode.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoReadError(f"{self.path}: file not found")
        capture = cv2.VideoCapture(str(self.path))
        ok, first = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            capture.release()
            raise VideoReadError(f"{self.path}: cannot decode video")
        self._capture, self._first = capture, first
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        self.frame_count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)

    def __iter__(self) -> Iterator[np.ndarray]:
        frame, self._first = self._first, None
        if frame is None:
            raise VideoReadError(f"{self.path}: frames can be read once")
        try:
            while frame is not None:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                ok, frame = self._capture.read()
                if not ok:
                    frame = None
        finally:
            self._capture.release()


class VideoWriter:
    """Writes (H, W, 3) uint8 RGB frames of one size to ``path`` at ``fps``; the file is
    created at the first frame. Use as a context manager.

    Raises:
        VideoWriteError: naming the file, for a suffix without a codec or a writer that does
            not open.
        ValueError: a frame whose size differs from the first one.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC:
            raise VideoWriteError(
                f"{self.path}: cannot write video with suffix {self.path.suffix!r}; "
                f"use one of {', '.join(VIDEO_SUFFIXES)}"
            )
        self.fps = fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        size = frame.shape[:2]
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (size[1], size[0]))
            if not writer.isOpened():
                raise VideoWriteError(f"{self.path}: cannot open a video writer")
            self._writer, self._size = writer, size
        elif size != self._size:
            raise ValueError(f"{self.path}: frame size {size} differs from the first {self._size}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def predict_video(
    predictor: Predictor,
    path: str | Path,
    out_path: str | Path,
    alpha: float = 0.5,
    batch_size: int = 1,
    progress: bool = True,
) -> int:
    """Segment every frame of a video and write the overlays (class colours at opacity
    ``alpha``, and a legend of every class so all frames have one width) as a video with the
    input's frame rate.

    Returns:
        The number of frames written.

    Raises:
        VideoReadError: the video cannot be decoded.
        InputSizeError: its frames are smaller than the model accepts; nothing is written.
    """
    reader = VideoReader(path)
    every_class = list(range(predictor.labels.num_classes))
    bar = tqdm(total=reader.frame_count or None, desc=Path(path).name, unit="frame",
               disable=not progress)  # fmt: skip
    with VideoWriter(out_path, reader.fps) as writer, bar:
        for batch in _batches(reader, batch_size):
            try:
                predictions = predictor.predict_batch(batch, probabilities=False)
            except InputSizeError as error:
                raise InputSizeError(f"{path}: {error}") from None
            for image, prediction in zip(batch, predictions, strict=True):
                writer.write(
                    overlay(image, prediction.labels, predictor.labels, alpha, classes=every_class)
                )
            bar.update(len(batch))
    return writer.frames


def _batches(frames: VideoReader, size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
