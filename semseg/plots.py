"""Pictures of training and of a score, drawn with matplotlib's object API (no pyplot, no
backend switch: nothing global changes when a plot is made).

- :func:`plot_training_curves`: training loss and validation scores per epoch;
- :func:`plot_scores`: per-class IoU with class accuracy and boundary F1 beside it, and the
  row-normalised confusion matrix with class names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

SCORE_PLOTS = ("per_class_scores.png", "confusion_matrix.png")
"""File names :func:`plot_scores` writes."""


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Training loss and validation mIoU / pixel accuracy per epoch, saved as a PNG."""
    figure = Figure(figsize=(10, 3.8))
    loss_axis, score_axis = figure.subplots(1, 2)
    epochs = [record["epoch"] for record in history]
    loss_axis.plot(epochs, [record["train_loss"] for record in history], marker=".")
    loss_axis.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    validated = [record for record in history if "val" in record]
    val_epochs = [record["epoch"] for record in validated]
    for key, name in (("miou", "mIoU"), ("pixel_accuracy", "pixel accuracy")):
        score_axis.plot(val_epochs, [record["val"][key] for record in validated], marker="o",
                        label=name)  # fmt: skip
    score_axis.set(xlabel="epoch", ylabel="fraction", title="Validation", ylim=(0, 1))
    score_axis.legend(loc="lower right")
    for axis in (loss_axis, score_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_scores(scores: dict[str, Any], folder: str | Path, title: str = "") -> list[Path]:
    """Write the pictures of one evaluation into ``folder`` (created).

    Args:
        scores: ``Evaluation.to_dict`` form: ``per_class_iou``, ``per_class_accuracy``,
            ``miou``, ``confusion_matrix`` (rows: truth, columns: prediction, pixel counts)
            and, when computed, ``per_class_boundary_f1``.
        title: prefix of the figure titles (e.g. the checkpoint and split).

    Returns:
        The written files: ``per_class_scores.png`` (horizontal bars per class: IoU, class
        accuracy, boundary F1, in percent) and ``confusion_matrix.png`` (each truth row divided
        by its pixel count, in percent, with class names).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(scores["per_class_iou"])
    series = {"IoU": scores["per_class_iou"], "class accuracy": scores["per_class_accuracy"]}
    if "per_class_boundary_f1" in scores:
        series["boundary F1"] = scores["per_class_boundary_f1"]
    paths = [folder / name for name in SCORE_PLOTS]

    figure = Figure(figsize=(8, 1.2 + 0.45 * len(names)))
    axis = figure.subplots()
    height = 0.8 / len(series)
    rows = np.arange(len(names))
    for k, (label, values) in enumerate(series.items()):
        percent = [100 * values[n] if values[n] is not None else 0.0 for n in names]
        bars = axis.barh(rows + (k - (len(series) - 1) / 2) * height, percent, height, label=label)
        axis.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    axis.set_yticks(rows, names)
    axis.invert_yaxis()
    axis.set(xlim=(0, 110), xlabel="%")
    axis.set_title(f"{title} mIoU {100 * scores['miou']:.1f}%".strip())
    axis.legend(loc="lower right", fontsize=8)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(paths[0], dpi=100)

    confusion = np.asarray(scores["confusion_matrix"], dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    normalised = 100 * np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    side = 2.5 + 0.55 * len(names)
    figure = Figure(figsize=(side + 1, side))
    axis = figure.subplots()
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=100)
    for (i, j), value in np.ndenumerate(normalised):
        if value >= 0.5:
            colour = "white" if value > 60 else "black"
            axis.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color=colour)
    axis.set_xticks(rows, names, rotation=45, ha="right")
    axis.set_yticks(rows, names)
    axis.set(xlabel="predicted class", ylabel="true class")
    axis.set_title(f"{title} confusion (% of each true class)".strip())
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.tight_layout()
    figure.savefig(paths[1], dpi=100)
    return paths
