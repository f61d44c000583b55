"""Video reading, writing and segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from semseg.data.synthetic import render_scene
from semseg.inference.predictor import Predictor
from semseg.inference.tta import InputSizeError
from semseg.inference.video import (
    VideoReader,
    VideoReadError,
    VideoWriteError,
    VideoWriter,
    predict_video,
)
from semseg.visualize import legend_panel

from .inference_support import random_image, read_video, tiny_checkpoint, write_video

FRAMES = [render_scene(seed, 64, 80)[0] for seed in range(5)]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.from_checkpoint(tiny_checkpoint(tmp_path_factory), "cpu")


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_reader_yields_every_frame_as_rgb(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", FRAMES, fps=7.0)
    reader = VideoReader(path)
    assert reader.fps == pytest.approx(7.0)
    frames = list(reader)
    assert len(frames) == 5
    assert all(frame.shape == (64, 80, 3) and frame.dtype == np.uint8 for frame in frames)
    # Lossy codecs: the decoded frame is close to the RGB original, far from its BGR mirror.
    error = np.abs(frames[2].astype(int) - FRAMES[2]).mean()
    swapped = np.abs(frames[2].astype(int) - FRAMES[2][..., ::-1]).mean()
    assert error < 12 < swapped


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".avi", ".mkv"])
def test_writer_keeps_frame_count_size_and_rate(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with VideoWriter(path, fps=12.5) as writer:
        for frame in FRAMES[:3]:
            writer.write(frame)
    assert writer.frames == 3
    frames, fps = read_video(path)
    assert len(frames) == 3
    assert frames[0].shape == (64, 80, 3)
    assert fps == pytest.approx(12.5)


def test_writer_refuses_an_unknown_suffix_and_a_size_change(tmp_path):
    with pytest.raises(VideoWriteError, match=r"out.gif.*\.mp4"):
        VideoWriter(tmp_path / "out.gif", 10)
    with VideoWriter(tmp_path / "out.mp4", 10) as writer:
        writer.write(FRAMES[0])
        with pytest.raises(ValueError, match=r"\(32, 32\) differs from the first \(64, 80\)"):
            writer.write(random_image(0, 32, 32))


def test_predict_video_writes_an_overlay_per_frame_at_the_same_rate(predictor, tmp_path):
    source = write_video(tmp_path / "drive.mp4", FRAMES, fps=7.0)
    out = tmp_path / "drive_overlay.mp4"
    assert predict_video(predictor, source, out, batch_size=2, progress=False) == 5
    frames, fps = read_video(out)
    legend = legend_panel(predictor.labels, range(8), 64).shape[1]
    assert len(frames) == 5
    assert frames[0].shape == (64, 80 + legend, 3)
    assert fps == pytest.approx(7.0)


def test_an_undecodable_video_is_named(tmp_path, predictor):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 but nothing else")
    with pytest.raises(VideoReadError, match=rf"{broken}: cannot decode video"):
        VideoReader(broken)
    with pytest.raises(VideoReadError, match="absent.avi: file not found"):
        predict_video(predictor, tmp_path / "absent.avi", tmp_path / "x.avi", progress=False)


def test_frames_smaller_than_the_model_accepts_write_nothing(predictor, tmp_path):
    source = write_video(tmp_path / "tiny.avi", [random_image(i, 2, 2) for i in range(3)])
    out = tmp_path / "tiny_overlay.avi"
    with pytest.raises(InputSizeError, match=rf"{source}: image is 2x2"):
        predict_video(predictor, source, out, progress=False)
    assert not out.exists()
