"""Plain-text tables of evaluation results."""

from __future__ import annotations

from typing import Any


def _percent(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:6.2f}"


def scores_table(scores: dict[str, Any]) -> str:
    """Per-class IoU (and boundary F1 when present) then the summary metrics, in percent.

    ``scores`` is :meth:`semseg.engine.evaluate.Evaluation.to_dict` output. A class with no
    pixels in ground truth or prediction shows ``-``.
    """
    per_class_bf = scores.get("per_class_boundary_f1")
    width = max(len(name) for name in scores["per_class_iou"]) + 2
    header = f"{'class':<{width}}{'IoU %':>8}{'acc %':>8}"
    if per_class_bf:
        header += f"{'BF %':>8}"
    lines = [header, "-" * len(header)]
    for name, iou in scores["per_class_iou"].items():
        line = f"{name:<{width}}{_percent(iou):>8}{_percent(scores['per_class_accuracy'][name]):>8}"
        if per_class_bf:
            line += f"{_percent(per_class_bf[name]):>8}"
        lines.append(line)
    lines.append("-" * len(header))
    summary = [
        ("mIoU", scores["miou"]),
        ("pixel accuracy", scores["pixel_accuracy"]),
        ("mean class accuracy", scores["mean_class_accuracy"]),
        ("frequency-weighted IoU", scores["fw_iou"]),
    ]
    if "boundary_f1" in scores:
        summary.append(("boundary F1", scores["boundary_f1"]))
    lines += [f"{name:<24}{_percent(value)} %" for name, value in summary]
    return "\n".join(lines)
