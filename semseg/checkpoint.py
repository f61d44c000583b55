"""The typed checkpoint: everything needed to use or resume a model, read once, written
atomically, and the only road from a file to a model.

:meth:`Checkpoint.load` reads a PyTorch checkpoint written by training (``.pt``) or an ONNX
file written by ``semseg export`` (``.onnx``) into the same shape of object: the model's name
and arguments, its classes (:class:`~semseg.labels.LabelSet`, which owns the ignore index),
the input normalisation, the recipe it was trained with, and (``.pt`` only) the weights and
the training state. :meth:`Checkpoint.build_model` turns it into something that maps
normalised images to logits.

On disk a ``.pt`` checkpoint is a plain dict, loadable with ``torch.load(weights_only=True)``::

    {"format": "semseg-checkpoint", "version": 1,
     "model": {"name", "arguments", "state_dict"},
     "labels": LabelSet.to_dict(), "ignore_index": 255,
     "normalisation": {"mean": [...], "std": [...]},
     "recipe": Recipe.to_dict(),
     "training": {"epoch", "step_in_epoch", "global_step", "optimizer", "best_miou", "history",
                  ...}}

``training["epoch"]`` counts completed epochs; ``step_in_epoch`` is the number of steps of the
next epoch already done (non-zero for a checkpoint written inside an epoch). A checkpoint
without ``training`` holds a model only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semseg.labels import IGNORE_INDEX, LabelSet
from semseg.models import create_model

FORMAT = "semseg-checkpoint"
VERSION = 1
ONNX_SUFFIX = ".onnx"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, not a semseg checkpoint, or does not fit the model."""


@dataclass
class Checkpoint:
    """A trained model and what it needs to run: read with :meth:`load`, written with
    :meth:`save`.

    Attributes:
        model_name: registry name of the model (``semseg models`` lists them).
        model_args: the model's keyword arguments (``input_scale`` included).
        labels: the classes, index = train id; ``labels.ignore_index`` marks void pixels.
        mean, std: per-channel normalisation of [0, 1] RGB input:
            ``image = (rgb / 255 - mean) / std``.
        state_dict: the weights (None for an ONNX file, whose weights live in the graph).
        recipe: the recipe the model was trained with, as plain data (None where unknown).
        training: optimiser and loop state for an exact resume (None for a model-only file).
        path: the file it was read from (None until loaded or saved).
        output_stride: known without building the model for an ONNX file; else None (the
            built model's ``output_stride`` attribute says it).
        version: format version of the file.
    """

    model_name: str
    model_args: dict[str, Any]
    labels: LabelSet
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    state_dict: dict[str, torch.Tensor] | None = None
    recipe: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    path: Path | None = None
    output_stride: int | None = None
    version: int = VERSION

    @property
    def ignore_index(self) -> int:
        return self.labels.ignore_index

    @property
    def is_onnx(self) -> bool:
        return self.path is not None and self.path.suffix.lower() == ONNX_SUFFIX

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else "checkpoint"

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a ``.pt`` checkpoint written by training or a ``.onnx`` file written by
        ``semseg export``.

        Raises:
            CheckpointError: naming the file, when it is missing, corrupt, not written by
                semseg, or of a format version this semseg does not read.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        if path.suffix.lower() == ONNX_SUFFIX:
            return _load_onnx(path)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for a corrupt file
            raise CheckpointError(f"{path}: cannot read checkpoint ({error})") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> Checkpoint:
        """The checkpoint held by the plain dict ``data`` (the on-disk form)."""
        source = str(path) if path is not None else "checkpoint"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{source}: not a semseg checkpoint")
        if data.get("version") != VERSION:
            raise CheckpointError(
                f"{source}: checkpoint format version {data.get('version')}, this semseg reads "
                f"version {VERSION}; load it with the semseg release that wrote it and "
                "re-save the model (Checkpoint.load(old).save(new)) or retrain"
            )
        try:
            model = data["model"]
            labels = LabelSet.from_dict(data["labels"])
            norm = data["normalisation"]
            checkpoint = cls(
                model_name=str(model["name"]),
                model_args=dict(model["arguments"]),
                labels=labels,
                mean=_triple(norm["mean"]),
                std=_triple(norm["std"]),
                state_dict=model["state_dict"],
                recipe=data.get("recipe"),
                training=data.get("training"),
                path=path,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: entry {error} missing or invalid") from None
        stored_ignore = data.get("ignore_index", IGNORE_INDEX)
        if stored_ignore != labels.ignore_index:
            raise CheckpointError(
                f"{source}: ignore_index {stored_ignore}, this semseg uses {labels.ignore_index}"
            )
        return checkpoint

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form (plain data and tensors only)."""
        if self.state_dict is None:
            raise CheckpointError(f"{self.source}: an ONNX model cannot be saved as a .pt file")
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "model": {
                "name": self.model_name,
                "arguments": self.model_args,
                "state_dict": self.state_dict,
            },
            "labels": self.labels.to_dict(),
            "ignore_index": self.labels.ignore_index,
            "normalisation": {"mean": list(self.mean), "std": list(self.std)},
            "recipe": self.recipe,
        }
        if self.training is not None:
            data["training"] = self.training
        return data

    def save(self, path: str | Path) -> None:
        """Write to ``path`` atomically: a killed process leaves the old file intact.

        The data goes to a temporary file in the same folder, is flushed to disk, then renamed
        over ``path`` (``os.replace`` is atomic on POSIX and Windows).
        """
        path = Path(path)
        data = self.to_dict()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(data, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.path = path

    def build_model(self, threads: int | None = None) -> nn.Module | Callable:
        """What maps (N, 3, H, W) normalised float images to (N, C, H, W) logits, in eval
        mode: the PyTorch model with the checkpoint's weights, or for an ONNX file an
        :class:`~semseg.inference.onnx_model.OnnxModel` (ONNX Runtime, ``threads`` threads).

        Pretrained-weight arguments are dropped: the checkpoint's own weights replace them.

        Raises:
            CheckpointError: when the weights do not fit the model.
        """
        if self.is_onnx:
            from semseg.inference.onnx_model import OnnxModel

            return OnnxModel(self.path, threads)
        arguments = {k: v for k, v in self.model_args.items() if k != "encoder_weights"}
        model = create_model(self.model_name, self.labels.num_classes, **arguments)
        load_weights(model, self.state_dict, self.source, self.model_name)
        return model.eval()

    def sha256(self) -> str:
        """Hex SHA-256 of the file this checkpoint was read from."""
        if self.path is None:
            raise CheckpointError("checkpoint has no file yet; save it first")
        digest = hashlib.sha256()
        with self.path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def load_weights(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, model_name: str
) -> None:
    """``model.load_state_dict`` with an error that says which model the weights came from."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        first_lines = "; ".join(str(error).splitlines()[:3])
        raise CheckpointError(
            f"{source}: weights do not fit this model (checkpoint model {model_name!r}): "
            f"{first_lines}"
        ) from None


def _triple(values: Any) -> tuple[float, float, float]:
    result = tuple(float(v) for v in values)
    if len(result) != 3:
        raise ValueError(f"normalisation has {len(result)} values, expected 3")
    return result  # type: ignore[return-value]


def _load_onnx(path: Path) -> Checkpoint:
    from semseg.inference.onnx_model import read_onnx_metadata

    metadata = read_onnx_metadata(path)
    model = metadata.get("model") or {"name": "onnx", "arguments": {}}
    return Checkpoint(
        model_name=str(model["name"]),
        model_args=dict(model["arguments"]),
        labels=metadata["labels"],
        mean=_triple(metadata["mean"]),
        std=_triple(metadata["std"]),
        recipe=metadata.get("recipe"),
        path=path,
        output_stride=int(metadata["output_stride"]),
    )
