"""Prediction with a trained checkpoint: ``Predictor.from_checkpoint(path).predict(image)``."""

from __future__ import annotations

from collections.abc import Sequence
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
from semseg.labels import LabelSet
from semseg.visualize import overlay


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
        model: maps (N, 3, H, W) normalised float to (N, C, H, W) logits.
        labels: the model's classes.
        mean, std: per-channel normalisation applied to [0, 1] RGB input.
        device: where the model runs.
    """

    def __init__(
        self,
        model: nn.Module,
        labels: LabelSet,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.labels = labels
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> Predictor:
        checkpoint = load_checkpoint(path)
        norm = checkpoint["normalisation"]
        return cls(
            build_model_from(checkpoint, str(path)),
            LabelSet.from_dict(checkpoint["labels"]),
            norm["mean"],
            norm["std"],
            device or ("cuda" if torch.cuda.is_available() else "cpu"),
        )

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> Prediction:
        """image: (H, W, 3) uint8 RGB -> :class:`Prediction` at the image's size."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
            )
        batch = to_tensor(image, self.mean, self.std).unsqueeze(0).to(self.device)
        probabilities = self.model(batch).softmax(1)[0]
        return Prediction(
            probabilities.argmax(0).byte().cpu().numpy(), probabilities.float().cpu().numpy()
        )


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> list of image paths.

    Raises:
        FileNotFoundError: naming an input that matches nothing.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no images")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            matches = sorted(Path().glob(item)) if any(c in item for c in "*?[") else []
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching pattern")
            paths += [p for p in matches if p.is_file()]
    return paths


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A distinct output name per input: the file stem, with a counter where stems repeat."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        stems.append(path.stem if count == 0 else f"{path.stem}_{count}")
    return stems


def predict_files(
    predictor: Predictor, paths: Sequence[Path], out_dir: Path, alpha: float = 0.5
) -> list[tuple[Path, str]]:
    """Segment each image; write ``<stem>_labels.png`` (index PNG with the class palette) and
    ``<stem>_overlay.png`` (colours over the image, with a legend) into ``out_dir``.

    An input that fails (unreadable, wrong type) is skipped and reported; the others go on.

    Returns:
        (path, reason) of each failed input.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[Path, str]] = []
    for path, stem in zip(
        tqdm(paths, desc="predict", unit="img"), output_stems(paths), strict=True
    ):
        try:
            image = read_image(path)
        except ImageReadError as error:
            failures.append((path, str(error)))
            continue
        prediction = predictor.predict(image)
        write_index_png(
            out_dir / f"{stem}_labels.png", prediction.labels, predictor.labels.palette()
        )
        picture = overlay(image, prediction.labels, predictor.labels, alpha=alpha)
        Image.fromarray(picture).save(out_dir / f"{stem}_overlay.png")
    return failures
