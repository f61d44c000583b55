"""Prediction with a trained model: ``Predictor.from_checkpoint(path).predict(image)``, and
segmenting files (images, folders, globs, videos) into label maps and overlays.

A :class:`Predictor` runs a PyTorch checkpoint or an ONNX file written by ``semseg export``
(ONNX Runtime); :class:`~semseg.inference.InferenceOptions` choose sliding-window tiling,
padding and test-time augmentation for either.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from semseg.checkpoint import build_model_from, load_checkpoint
from semseg.data.io import IMAGE_SUFFIXES, ImageReadError, read_image, write_index_png
from semseg.data.transforms import to_tensor
from semseg.fuse import fuse_conv_bn
from semseg.inference import InferenceOptions, InputSizeError, infer_probabilities
from semseg.labels import LabelSet
from semseg.video import VIDEO_SUFFIXES, VideoReadError, predict_video
from semseg.visualize import overlay

Failure = tuple[Path, str]
"""An input that could not be segmented, and the error message (which names the file)."""


@dataclass(frozen=True)
class Prediction:
    """labels: (H, W) uint8 train ids; probabilities: (C, H, W) float32 softmax."""

    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        """(H, W) float32 probability of the predicted class."""
        return self.probabilities.max(axis=0)


class Predictor:
    """A model with its label set and input normalisation, ready for images.

    Args:
        model: maps (N, 3, H, W) normalised float to (N, C, H, W) logits; an ``nn.Module``
            (kept as an eval-mode copy on ``device`` with BatchNorm folded into the
            convolutions and channels-last weights) or another callable such as
            :class:`~semseg.export.OnnxModel`.
        labels: the model's classes.
        mean, std: per-channel normalisation applied to [0, 1] RGB input.
        device: where the inputs go (and an ``nn.Module`` model).
        options: tiling, padding and test-time augmentation (default: whole image, no TTA).
        output_stride: inputs are padded to multiples of it; default the model's
            ``output_stride`` attribute, else 1.

    Raises:
        ValueError: when ``options.tile_size`` is smaller than the output stride.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        labels: LabelSet,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: str | torch.device = "cpu",
        options: InferenceOptions | None = None,
        output_stride: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        if isinstance(model, nn.Module):
            # Both measured faster on our 2-core CPU (benchmarks/results/inference.md).
            model = fuse_conv_bn(model).to(self.device, memory_format=torch.channels_last)
        self.model = model
        self.labels = labels
        self.mean, self.std = tuple(mean), tuple(std)
        self.options = options or InferenceOptions()
        self.output_stride = int(output_stride or getattr(model, "output_stride", 1))
        tile = self.options.tile_size
        if tile is not None and min(tile) < self.output_stride:
            raise ValueError(
                f"tile_size {tile} is smaller than the model's output stride {self.output_stride}"
            )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | None = None,
        options: InferenceOptions | None = None,
    ) -> Predictor:
        """The PyTorch model of a checkpoint written by training."""
        checkpoint = load_checkpoint(path)
        norm = checkpoint["normalisation"]
        return cls(
            build_model_from(checkpoint, str(path)),
            LabelSet.from_dict(checkpoint["labels"]),
            norm["mean"],
            norm["std"],
            device or ("cuda" if torch.cuda.is_available() else "cpu"),
            options,
        )

    @classmethod
    def from_onnx(
        cls, path: str | Path, options: InferenceOptions | None = None, threads: int | None = None
    ) -> Predictor:
        """An ONNX file written by ``semseg export``, run by ONNX Runtime on the CPU with
        ``threads`` threads (default: one per core); classes and normalisation come from the
        file's metadata."""
        from semseg.export import OnnxModel

        model = OnnxModel(path, threads)
        return cls(model, model.labels, model.mean, model.std, "cpu", options, model.output_stride)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, nn.Module):
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images).contiguous()

    def predict(self, image: np.ndarray) -> Prediction:
        """image: (H, W, 3) uint8 RGB -> :class:`Prediction` at the image's size.

        Raises:
            ValueError: the array is not an (H, W, 3) uint8 image.
            InputSizeError: the image is smaller than the model's output stride.
        """
        return self.predict_batch([image])[0]

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Images of one size, each (H, W, 3) uint8 RGB, in one forward pass per tile, flip
        and scale -> one :class:`Prediction` per image."""
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
                )
        sizes = sorted({image.shape[:2] for image in images})
        if len(sizes) != 1:
            raise ValueError(f"predict_batch needs images of one size, got sizes {sizes}")
        batch = torch.stack([to_tensor(image, self.mean, self.std) for image in images])
        probabilities = infer_probabilities(
            self._forward, batch.to(self.device), self.options, self.output_stride
        ).cpu()
        labels = probabilities.argmax(1).byte()
        return [
            Prediction(label.numpy(), probability.numpy())
            for label, probability in zip(labels, probabilities, strict=True)
        ]


def load_predictor(
    path: str | Path,
    device: str | None = None,
    options: InferenceOptions | None = None,
    threads: int | None = None,
) -> Predictor:
    """A checkpoint (``.pt``, PyTorch) or an exported ``.onnx`` file (ONNX Runtime, CPU).

    ``threads`` sets the CPU threads: ONNX Runtime's for this model, PyTorch's for the whole
    process (``torch.set_num_threads``). On a 2-core machine busy with other work, one
    thread was several times faster than two for PyTorch (benchmarks/results/inference.md).

    Raises:
        ValueError: a device other than the CPU for an ONNX file.
    """
    if Path(path).suffix.lower() == ".onnx":
        if device not in (None, "cpu"):
            raise ValueError(f"{path}: ONNX models run on the CPU; got --device {device}")
        return Predictor.from_onnx(path, options, threads)
    if threads is not None:
        torch.set_num_threads(threads)
    return Predictor.from_checkpoint(path, device, options)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images and videos, sorted) and glob patterns -> list of paths,
    each file once (in first-mention order).

    Raises:
        FileNotFoundError: naming an input that matches nothing.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no images or videos")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            matches = [p for p in sorted(map(Path, glob.glob(item, recursive=True))) if p.is_file()]
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching pattern")
            paths += matches
    unique: dict[Path, Path] = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A distinct output name per input: the file stem, or ``<stem>_<k>`` with the smallest
    ``k >= 1`` not yet taken where stems repeat (``a.png``, ``b/a.png`` -> ``a``, ``a_1``)."""
    taken: set[str] = set()
    stems = []
    for path in paths:
        stem, k = path.stem, 0
        while stem in taken:
            k += 1
            stem = f"{path.stem}_{k}"
        taken.add(stem)
        stems.append(stem)
    return stems


def check_outputs(inputs: Iterable[Path], outputs: Iterable[Path]) -> None:
    """Raise ValueError naming the file if any output path is one of the inputs."""
    sources = {path.resolve(): path for path in inputs}
    for output in outputs:
        if output.resolve() in sources:
            raise ValueError(
                f"{output}: output would overwrite the input {sources[output.resolve()]}; "
                "choose another --out folder"
            )


def plan_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices of ``sizes`` grouped into batches of at most ``batch_size`` equal sizes, groups
    in order of first appearance: ``[(2, 2), (3, 3), (2, 2)]``, 2 -> ``[[0, 2], [1]]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(index)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]


def segment_images(
    predictor: Predictor,
    paths: Sequence[Path],
    on_result: Callable[[int, np.ndarray, Prediction], None],
    batch_size: int = 1,
    progress: bool = True,
) -> list[Failure]:
    """Segment image files in batches of equal-size images; call ``on_result(index, image,
    prediction)`` for each success (``index`` into ``paths``).

    A file that cannot be decoded, or is smaller than the model accepts, is reported and
    skipped; the others go on.

    Returns:
        (path, reason) of each failed input, in input order.
    """
    failures: dict[int, str] = {}
    sizes: dict[int, tuple[int, int]] = {}
    for index, path in enumerate(paths):
        try:
            sizes[index] = _image_size(path)
        except ImageReadError as error:
            failures[index] = str(error)
    indices = list(sizes)
    with tqdm(total=len(indices), desc="predict", unit="img", disable=not progress) as bar:
        for batch in plan_batches([sizes[i] for i in indices], batch_size):
            images: dict[int, np.ndarray] = {}
            for index in (indices[b] for b in batch):
                try:
                    images[index] = read_image(paths[index])
                except ImageReadError as error:
                    failures[index] = str(error)
            bar.update(len(batch))
            if not images:
                continue
            try:
                predictions = predictor.predict_batch(list(images.values()))
            except InputSizeError as error:
                failures.update({index: f"{paths[index]}: {error}" for index in images})
                continue
            for (index, image), prediction in zip(images.items(), predictions, strict=True):
                on_result(index, image, prediction)
    return [(paths[index], failures[index]) for index in sorted(failures)]


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from None
    return height, width


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: Path,
    alpha: float = 0.5,
    batch_size: int = 1,
    probabilities: bool = False,
    confidence: bool = False,
    progress: bool = True,
) -> list[Failure]:
    """Segment images and videos, writing into ``out_dir`` per input ``<stem>`` (distinct even
    for equal file stems, see :func:`output_stems`):

    - image: ``<stem>_labels.png`` (index PNG with the class palette), ``<stem>_overlay.png``
      (class colours at opacity ``alpha`` over the image, legend on the right), with
      ``probabilities`` ``<stem>_probabilities.npz`` (``probabilities``: (C, H, W) float16;
      ``class_names``), with ``confidence`` ``<stem>_confidence.png`` (8-bit, top-class
      probability times 255, rounded);
    - video: ``<stem>_overlay<suffix>`` with the input's frame rate and a legend of every class.

    Images are batched ``batch_size`` at a time among images of one size. An input that fails
    (undecodable, too small) is skipped and reported; the others go on.

    Returns:
        (path, reason) of each failed input, in input order.

    Raises:
        ValueError: before writing anything, when an output path is one of the inputs.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    stems = output_stems(paths)
    kinds = ["labels.png", "overlay.png"]
    kinds += ["probabilities.npz"] * probabilities + ["confidence.png"] * confidence
    images = [i for i, path in enumerate(paths) if not is_video(path)]
    videos = {
        i: out_dir / f"{stems[i]}_overlay{path.suffix.lower()}"
        for i, path in enumerate(paths)
        if is_video(path)
    }
    named = [out_dir / f"{stems[i]}_{kind}" for i in images for kind in kinds]
    check_outputs(paths, [*videos.values(), *named])
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(position: int, image: np.ndarray, prediction: Prediction) -> None:
        stem = out_dir / stems[images[position]]
        write_index_png(f"{stem}_labels.png", prediction.labels, predictor.labels.palette())
        picture = overlay(image, prediction.labels, predictor.labels, alpha=alpha)
        Image.fromarray(picture).save(f"{stem}_overlay.png")
        if probabilities:
            np.savez_compressed(
                f"{stem}_probabilities.npz",
                probabilities=prediction.probabilities.astype(np.float16),
                class_names=np.array(predictor.labels.names),
            )
        if confidence:
            level = np.rint(prediction.confidence * 255).astype(np.uint8)
            Image.fromarray(level).save(f"{stem}_confidence.png")

    failed = segment_images(predictor, [paths[i] for i in images], write, batch_size, progress)
    failures = {path: reason for path, reason in failed}
    for index, out_path in videos.items():
        try:
            predict_video(predictor, paths[index], out_path, alpha, batch_size, progress)
        except (VideoReadError, InputSizeError) as error:
            failures[paths[index]] = str(error)
    return [(path, failures[path]) for path in paths if path in failures]
