"""Checkpoints: everything needed to use or resume a model, written atomically.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    {"format": "semseg-checkpoint", "version": 1,
     "model": {"name", "arguments", "state_dict"},
     "labels": LabelSet.to_dict(), "ignore_index": 255,
     "normalisation": {"mean": [...], "std": [...]},
     "recipe": Recipe.to_dict(),
     "training": {"epoch", "step_in_epoch", "global_step", "optimizer", "best_miou", "history"}}

``epoch`` counts completed epochs; ``step_in_epoch`` is the number of steps of the next epoch
already done (non-zero for a checkpoint written inside an epoch).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semseg.labels import LabelSet
from semseg.models import create_model

FORMAT = "semseg-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, not a semseg checkpoint, or does not fit the model."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a killed process leaves the old file intact.

    The data goes to a temporary file in the same folder, is flushed to disk, then renamed
    over ``path`` (``os.replace`` is atomic on POSIX and Windows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: naming the file, when it is missing, corrupt or not a semseg checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt file
        raise CheckpointError(f"{path}: cannot read checkpoint ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a semseg checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {data.get('version')}, this semseg reads {VERSION}"
        )
    return data


def build_model_from(checkpoint: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """The checkpoint's model with its weights, in eval mode.

    Pretrained-weight arguments are dropped: the checkpoint's own weights replace them.
    """
    spec = checkpoint["model"]
    arguments = {k: v for k, v in spec["arguments"].items() if k != "encoder_weights"}
    labels = LabelSet.from_dict(checkpoint["labels"])
    model = create_model(spec["name"], labels.num_classes, **arguments)
    load_weights(model, spec["state_dict"], source, spec["name"])
    return model.eval()


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
