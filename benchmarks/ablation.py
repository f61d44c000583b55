"""Architecture ablation on CamVid: same recipe and budget for every model, scored on val.

    .venv/bin/python benchmarks/ablation.py --data ../shared/data/camvid \
        --epochs 10 --variants unet segnet_basic fcn8s ... [--out benchmarks/results/ablation]

Every variant trains from scratch with ``recipes/camvid.yaml`` (only the model section and the
budget differ), then its best checkpoint is scored on the val split: per-class IoU, mIoU,
boundary F1, and the recall of small objects (ground-truth connected components whose bounding
box is under 16 pixels on its longer side: the objects a stride-16/32 model cannot resolve).
Runs are resumable: a variant whose run folder is complete is only re-scored.

Writes ``ablation.md`` (tables, machine, versions, command), ``ablation.json``,
``per_class_iou.png`` and ``overlays.png`` (the same val images segmented by each model).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from semseg.config import load_recipe
from semseg.engine.build import build_dataset
from semseg.engine.evaluate import evaluate
from semseg.engine.trainer import Trainer
from semseg.predict import Predictor
from semseg.visualize import colorize

VARIANTS: dict[str, dict] = {
    "naive-nearest": {"name": "naive", "upsampling": "nearest"},
    "naive-bilinear": {"name": "naive", "upsampling": "bilinear"},
    "fcn32s": {"name": "fcn32s"},
    "fcn16s": {"name": "fcn16s"},
    "fcn8s": {"name": "fcn8s"},
    "encdec-nearest": {"name": "encoder_decoder", "upsampling": "nearest"},
    "encdec-bilinear": {"name": "encoder_decoder", "upsampling": "bilinear"},
    "encdec-transposed": {"name": "encoder_decoder", "upsampling": "transposed"},
    "segnet_basic": {"name": "segnet_basic"},
    "segnet": {"name": "segnet"},
    "unet": {"name": "unet", "base_channels": 16},
    "deeplabv3plus": {"name": "deeplabv3plus", "backbone": "resnet18"},
    "mobile_unet": {"name": "mobile_unet"},
}
SMALL_OBJECT_SIDE = 16
OVERLAY_IMAGES = (0, 40, 80)


def small_object_recall(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> list:
    """Per ground-truth component smaller than SMALL_OBJECT_SIDE px (longer bbox side): the
    fraction of its pixels predicted as its class. Returns a list of (class, fraction)."""
    found = []
    for class_id in range(num_classes):
        count, components, boxes, _ = cv2.connectedComponentsWithStats(
            (truth == class_id).astype(np.uint8), connectivity=8
        )
        for component in range(1, count):
            if max(boxes[component, 2], boxes[component, 3]) >= SMALL_OBJECT_SIDE:
                continue
            pixels = components == component
            found.append((class_id, float((prediction[pixels] == class_id).mean())))
    return found


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    model = VARIANTS[variant]
    recipe = load_recipe("camvid", [f"data.root={args.data}", f"train.epochs={args.epochs}"])
    data = recipe.to_dict()
    data["model"] = {**model, "input_scale": args.input_scale}
    recipe = load_recipe(None, base=data)
    out = args.out / variant
    started = time.perf_counter()
    trainer = Trainer(recipe, out, resume=True, progress=not args.quiet)
    trainer.fit()
    train_minutes = (time.perf_counter() - started) / 60
    predictor = Predictor.from_checkpoint(out / "best.pt")
    val_set = build_dataset(recipe.data, recipe.data.val_split)
    scores = evaluate(
        predictor.model, DataLoader(val_set, batch_size=1), val_set.labels.num_classes
    ).to_dict(val_set.labels)
    small = []
    for index in range(len(val_set)):
        image, truth = val_set.read(index)
        prediction = predictor.predict(image).labels
        small += small_object_recall(prediction, truth, val_set.labels.num_classes)
    scores["small_object_recall"] = float(np.mean([f for _, f in small])) if small else None
    scores["small_objects"] = len(small)
    scores["parameters"] = sum(p.numel() for p in predictor.model.parameters())
    scores["train_minutes_this_call"] = train_minutes
    return scores


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def write_report(results: dict[str, dict], names: tuple[str, ...], args: argparse.Namespace):
    lines = [
        "# CamVid architecture ablation (train split, scored on val at 360x480)",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} threads; "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        f"- budget: {args.epochs} epochs, input_scale {args.input_scale}, recipes/camvid.yaml "
        "otherwise; every model from scratch (no ImageNet weights are available here)",
        "",
        "| model | params | mIoU | pixel acc | BF | small-object recall | "
        + " | ".join(names)
        + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for variant, s in results.items():
        per_class = " | ".join(percent(s["per_class_iou"][n]) for n in names)
        lines.append(
            f"| {variant} | {s['parameters'] / 1e6:.1f}M | {percent(s['miou'])} "
            f"| {percent(s['pixel_accuracy'])} | {percent(s.get('boundary_f1'))} "
            f"| {percent(s['small_object_recall'])} | {per_class} |"
        )
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")


def plot_per_class(results: dict[str, dict], names: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(12, 4))
    width = 0.8 / max(len(results), 1)
    for offset, (variant, scores) in enumerate(results.items()):
        values = [scores["per_class_iou"][n] or 0.0 for n in names]
        axis.bar(np.arange(len(names)) + offset * width, values, width, label=variant)
    axis.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30)
    axis.set(ylabel="IoU", ylim=(0, 1), title="CamVid val, per-class IoU")
    axis.legend(fontsize=7, ncol=4)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def overlay_grid(variants: list[str], args: argparse.Namespace, path: Path) -> None:
    recipe = load_recipe("camvid", [f"data.root={args.data}"])
    val_set = build_dataset(recipe.data, recipe.data.val_split)
    rows = []
    for index in OVERLAY_IMAGES:
        image, truth = val_set.read(index)
        row = [image, colorize(truth, val_set.labels)]
        for variant in variants:
            predictor = Predictor.from_checkpoint(args.out / variant / "best.pt")
            row.append(colorize(predictor.predict(image).labels, val_set.labels))
        rows.append(np.concatenate([cv2.resize(p, (240, 180)) for p in row], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--input-scale", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ablation"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for variant in args.variants:
        print(f"== {variant}", flush=True)
        results[variant] = run_variant(variant, args)
        (args.out / "ablation.json").write_text(json.dumps(results, indent=1))
        names = tuple(results[variant]["per_class_iou"])
        write_report(results, names, args)
        plot_per_class(results, names, args.out / "per_class_iou.png")
    overlay_grid(args.variants, args, args.out / "overlays.png")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
