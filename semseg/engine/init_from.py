"""``model.init_from``: start a training run from another run's weights (fine-tuning).

Every tensor of the new model (parameters and buffers, BatchNorm statistics included) whose
name and shape match one of the checkpoint's is copied; the others keep their fresh
initialisation. When the checkpoint's classes differ from the dataset's (names or order), the
tensors that depend on the number of classes (the classifier) are re-initialised even where
their shapes agree: class 3 of one label set is not class 3 of another. Those tensors are
found by building the model a second time with one more class and seeing which shapes change,
so no model has to declare its classifier. A model run at a reduced input scale
(``input_scale``, :class:`~semseg.models.input_scaled.InputScaled`) matches the same model
without it: names are compared without the wrapper's ``model.`` prefix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semseg.checkpoint import Checkpoint, CheckpointError
from semseg.labels import LabelSet
from semseg.models import create_model
from semseg.models.input_scaled import InputScaled

WRAPPER_PREFIX = "model."
"""Prefix :class:`InputScaled` puts before the names of the model it wraps."""


@dataclass(frozen=True)
class WeightTransfer:
    """What :func:`transfer_weights` did, tensor by tensor (names as in the new model).

    Attributes:
        loaded: copied from the checkpoint.
        reinitialised: class-dependent tensors left fresh because the classes differ.
        other_shape: (name, checkpoint shape, model shape) of names whose shapes differ.
        missing: in the model, not in the checkpoint.
        unused: in the checkpoint (its names), not in the model.
        loaded_values, total_values: number of values copied and in the model.
    """

    source: str
    loaded: tuple[str, ...]
    reinitialised: tuple[str, ...]
    other_shape: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    missing: tuple[str, ...]
    unused: tuple[str, ...]
    loaded_values: int
    total_values: int
    class_change: str = ""

    def report(self) -> str:
        """A few lines for the console: counts, then each kind of tensor not loaded."""
        total = len(self.loaded) + len(self.reinitialised) + len(self.other_shape)
        total += len(self.missing)
        lines = [
            f"model.init_from {self.source}: loaded {len(self.loaded)} of {total} tensors "
            f"({self.loaded_values / 1e6:.2f}M of {self.total_values / 1e6:.2f}M values)"
        ]
        if self.reinitialised:
            change = f", {self.class_change}" if self.class_change else ""
            lines.append(
                f"  re-initialised (the classes differ{change}): " + _names(self.reinitialised)
            )
        if self.other_shape:
            shown = [f"{n} {tuple(a)} -> {tuple(b)}" for n, a, b in self.other_shape]
            lines.append("  not loaded, other shape (checkpoint -> model): " + _names(shown))
        if self.missing:
            lines.append("  not in the checkpoint (fresh): " + _names(self.missing))
        if self.unused:
            lines.append("  in the checkpoint only (unused): " + _names(self.unused))
        return "\n".join(lines)


def init_from_checkpoint(
    model: nn.Module,
    path: str | Path,
    model_name: str,
    arguments: Mapping[str, Any],
    labels: LabelSet,
) -> WeightTransfer:
    """Start ``model`` (built as ``model_name`` with ``arguments`` for ``labels``) from the
    matching weights of the checkpoint at ``path``; see :func:`transfer_weights`.

    Raises:
        CheckpointError: naming the file when it cannot be read.
        ValueError: naming the file when no tensor matches.
    """
    checkpoint = Checkpoint.load(path)
    if checkpoint.state_dict is None:
        raise CheckpointError(
            f"{path}: an ONNX file holds no PyTorch weights; model.init_from needs a .pt checkpoint"
        )
    theirs = checkpoint.labels
    same_classes = theirs.names == labels.names
    change = (
        ""
        if same_classes
        else (
            f"{theirs.num_classes} in the checkpoint ({_names(theirs.names, 3)}), "
            f"{labels.num_classes} here ({_names(labels.names, 3)})"
        )
    )
    transfer = transfer_weights(
        model,
        checkpoint.state_dict,
        str(path),
        source_wrapped=checkpoint.model_args.get("input_scale", 1.0) != 1.0,
        class_dependent=class_dependent_names(model_name, arguments, labels.num_classes),
        same_classes=same_classes,
    )
    return dataclasses.replace(transfer, class_change=change)


def _names(names: Sequence[str], shown: int = 6) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _core_name(name: str, wrapped: bool) -> str:
    return name.removeprefix(WRAPPER_PREFIX) if wrapped else name


def class_dependent_names(model_name: str, arguments: Mapping[str, Any], num_classes: int):
    """Names of the tensors of model ``model_name`` whose shape depends on the number of
    classes: those that change shape when it is built with ``num_classes + 1``."""
    arguments = {k: v for k, v in arguments.items() if k != "encoder_weights"}
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        fewer = create_model(model_name, num_classes, **arguments).state_dict()
        more = create_model(model_name, num_classes + 1, **arguments).state_dict()
    return frozenset(name for name, tensor in fewer.items() if more[name].shape != tensor.shape)


def transfer_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    *,
    source_wrapped: bool,
    class_dependent: frozenset[str] = frozenset(),
    same_classes: bool = True,
) -> WeightTransfer:
    """Copy into ``model`` every tensor of ``state_dict`` with the same name and shape.

    Args:
        model: the freshly built model (changed in place).
        state_dict: the checkpoint's weights.
        source: the checkpoint's path, for the report and errors.
        source_wrapped: the checkpoint's model was wrapped in :class:`InputScaled`.
        class_dependent: names in ``model`` (see :func:`class_dependent_names`) left fresh
            unless ``same_classes``.
        same_classes: the checkpoint was trained on the same classes in the same order.

    Raises:
        ValueError: naming ``source`` when not a single tensor matches.
    """
    wrapped = isinstance(model, InputScaled)
    theirs = {_core_name(n, source_wrapped): t for n, t in state_dict.items()}
    ours = model.state_dict()
    loaded, reinitialised, other_shape, missing = [], [], [], []
    copied: dict[str, torch.Tensor] = {}
    for name, tensor in ours.items():
        core = _core_name(name, wrapped)
        if core not in theirs:
            missing.append(name)
        elif name in class_dependent and not same_classes:
            reinitialised.append(name)
        elif theirs[core].shape != tensor.shape:
            other_shape.append((name, tuple(theirs[core].shape), tuple(tensor.shape)))
        else:
            loaded.append(name)
            copied[name] = theirs[core]
    if not copied:
        raise ValueError(
            f"{source}: no tensor of the checkpoint matches this model by name and shape; "
            "model.init_from needs a checkpoint of the same architecture"
        )
    model.load_state_dict(copied, strict=False)
    used = {_core_name(n, wrapped) for n in loaded + reinitialised}
    used |= {_core_name(n, wrapped) for n, _, _ in other_shape}
    return WeightTransfer(
        source=source,
        loaded=tuple(loaded),
        reinitialised=tuple(reinitialised),
        other_shape=tuple(other_shape),
        missing=tuple(missing),
        unused=tuple(n for n in theirs if n not in used),
        loaded_values=sum(ours[n].numel() for n in loaded),
        total_values=sum(t.numel() for t in ours.values()),
    )
