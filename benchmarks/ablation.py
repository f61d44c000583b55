"""Architecture ablation on CamVid: same recipe and budget for every model, scored on val.

    .venv/bin/python benchmarks/ablation.py --data ../shared/data/camvid --epochs 12 \
        [--variants fcn8s segnet ...] [--runs runs/ablation] [--out benchmarks/results/ablation]
        [--seed 0]

Every variant trains from scratch with ``recipes/camvid.yaml`` (only the model section and the
number of epochs differ), then its best checkpoint is scored on the val split: per-class IoU,
mIoU, boundary F1, and the recall of objects by size: for each ground-truth connected
component of an object class (Pole, SignSymbol, Car, Pedestrian, Bicyclist), the fraction of
its pixels predicted as its class, averaged within bins of its bounding box's longer side
(under 16 pixels: what a stride-16/32 model cannot resolve; 16-31, 32-63, 64 and over). Runs
(checkpoints, logs) go to ``--runs`` and are resumable: a finished variant is only re-scored.
``--seed`` replaces the recipe's seed (initialisation, augmentation, batch order); give each
seed its own ``--runs`` and ``--out`` to measure the spread between repeated runs.

The VGG16-BN encoders (naive, FCN, SegNet) are built at a quarter of their width: with no
ImageNet weights to start from and two CPU cores, full-width VGGs would not train in the
budget (a training step of FCN-8s at half width already takes 3.5x that of the quarter-width
one). Every other part of each architecture is as its paper has it.

The first two steps on the road to FCN are here too: ``patch_classifier`` (a small
classification CNN on 32x32 patches of the half-resolution input, trained and scored in its
dense, fully convolutional form) and ``patch_classifier-literal`` (the same weights run patch by
patch at a window stride of 8, its pooling stride, where it visits exactly the dense form's
pixels), and ``fullres_fcn`` (13 stride-1 convolutions of 16 channels, the naive baseline's
depth; ``fullres_fcn-dilated`` widens its receptive field from 27 to 131 pixels at the same
cost, not yet trained here). ``road_to_fcn.py`` adds their cost per image to a table.

Writes to ``--out``: ``ablation.md`` (tables, machine, versions, command), ``ablation.json``,
``per_class_iou.png`` and ``overlays.png`` (the same val images segmented by each model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from semseg.checkpoint import Checkpoint
from semseg.config import load_recipe
from semseg.engine.build import build_dataset
from semseg.engine.evaluate import evaluate
from semseg.engine.trainer import Trainer
from semseg.inference.predictor import Predictor
from semseg.models.naive import NaiveSegmenter
from semseg.models.patch_classifier import PatchClassifier
from semseg.visualize import colorize, legend_panel

QUARTER_VGG16_BN = {"backbone": "vgg16_bn", "width_divisor": 4}
MOBILENET_V3 = {
    "encoder": "mobilenet_v3_large",
    "width_mult": 1.0,
    "decoder_channels": [128, 64, 32],
}
"""The real-time model's encoder and decoder widths, spelled out so that its runs do not
depend on ``mobile_unet``'s defaults."""
CONTEXT_DILATIONS = [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 1, 1, 1]
"""Dilations of ``fullres_fcn-dilated``: a 131-pixel receptive field at 13 layers (27 without)."""
VARIANTS: dict[str, dict] = {
    "patch_classifier": {"name": "patch_classifier", "patch_size": 32},
    "fullres_fcn": {"name": "fullres_fcn", "width": 16},
    "fullres_fcn-dilated": {"name": "fullres_fcn", "width": 16, "dilations": CONTEXT_DILATIONS},
    "naive-bilinear": {"name": "naive", **QUARTER_VGG16_BN},
    "fcn32s": {"name": "fcn32s", **QUARTER_VGG16_BN},
    "fcn16s": {"name": "fcn16s", **QUARTER_VGG16_BN},
    "fcn8s": {"name": "fcn8s", **QUARTER_VGG16_BN},
    "segnet": {"name": "segnet", "width_divisor": 4},
    "segnet-bilinear": {"name": "segnet", "width_divisor": 4, "upsampling": "bilinear"},
    "segnet-transposed": {"name": "segnet", "width_divisor": 4, "upsampling": "transposed"},
    "encoder_decoder": {"name": "encoder_decoder", "widths": [16, 32, 64, 128]},
    "unet": {"name": "unet", "base_channels": 16},
    "deeplabv3plus": {"name": "deeplabv3plus", "backbone": "resnet18"},
    "mobile_unet": {"name": "mobile_unet", **MOBILENET_V3, "merge_kernels": [3, 1, 1]},
    "mobile_unet-sep": {"name": "mobile_unet", **MOBILENET_V3, "merge_kernels": [3, 3, 3]},
    "mobile_unet-sep-stride8": {
        "name": "mobile_unet",
        **MOBILENET_V3,
        "decoder_channels": [128, 64],
        "merge_kernels": [3, 3],
    },
    "mobile_unet-sep-w0.75": {
        "name": "mobile_unet",
        **MOBILENET_V3,
        "width_mult": 0.75,
        "merge_kernels": [3, 3, 3],
    },
    "mobile_unet-v2-w0.5": {
        "name": "mobile_unet",
        "encoder": "mobilenet_v2",
        "width_mult": 0.5,
        "decoder_channels": [64, 48, 32],
        "merge_kernels": [3, 3, 3],
    },
    "lraspp_mobilenet_v3_large": {"name": "lraspp_mobilenet_v3_large"},
}
"""Trained variants. SegNet-Basic is left out: its 64-channel 7x7 convolutions at every scale
cost 4.2 s per batch of 8 at half resolution here, 6x the quarter-width SegNet."""
RESCORED = {"naive-nearest": "naive-bilinear", "patch_classifier-literal": "patch_classifier"}
"""Variants scored from another's weights: the naive model's coarse scores upsampled by
nearest instead of bilinear interpolation (the upsampling has no parameters); the patch
classifier run patch by patch at its pooling stride instead of densely."""
OBJECT_CLASSES = ("Pole", "SignSymbol", "Car", "Pedestrian", "Bicyclist")
SIZE_BINS = (0, 16, 32, 64)
"""Lower edges, in pixels at 360x480, of the object-size bins (longer bounding-box side)."""
OVERLAY_IMAGES = (0, 40, 80)


def object_recall(prediction: np.ndarray, truth: np.ndarray, class_ids: list[int]) -> list:
    """For each ground-truth connected component (8-connected) of the classes ``class_ids``:
    ``(longer bounding-box side in px, fraction of its pixels predicted as its class)``."""
    found = []
    for class_id in class_ids:
        count, components, boxes, _ = cv2.connectedComponentsWithStats(
            (truth == class_id).astype(np.uint8), connectivity=8
        )
        for component in range(1, count):
            side = int(max(boxes[component, 2], boxes[component, 3]))
            pixels = components == component
            found.append((side, float((prediction[pixels] == class_id).mean())))
    return found


def recall_by_size(found: list[tuple[int, float]]) -> list[dict]:
    """Mean recall and object count per :data:`SIZE_BINS` bin."""
    edges = (*SIZE_BINS, 10**9)
    bins = []
    for low, high in itertools.pairwise(edges):
        inside = [fraction for side, fraction in found if low <= side < high]
        bins.append(
            {
                "min_side": low,
                "objects": len(inside),
                "recall": float(np.mean(inside)) if inside else None,
            }
        )
    return bins


def load_variant(variant: str, runs: Path) -> Predictor:
    """The predictor of ``variant``'s best checkpoint, with rescoring changes applied."""
    predictor = Predictor.from_checkpoint(runs / RESCORED.get(variant, variant) / "best.pt")
    for module in predictor.model.modules():
        if variant == "naive-nearest" and isinstance(module, NaiveSegmenter):
            module.upsample.mode = "nearest"
        if variant == "patch_classifier-literal" and isinstance(module, PatchClassifier):
            module.mode = "literal"
    return predictor


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    recipe = load_recipe(
        "camvid",
        [f"data.root={args.data}", f"train.epochs={args.epochs}", f"seed={args.seed}"],
    )
    data = recipe.to_dict()
    data["train"]["val_every"] = args.val_every
    trained = RESCORED.get(variant, variant)
    data["model"] = {**VARIANTS[trained], "input_scale": args.input_scale}
    recipe = load_recipe(None, base=data)
    run_dir = args.runs / trained
    Trainer(recipe, run_dir, resume=True, progress=not args.quiet).fit()
    predictor = load_variant(variant, args.runs)
    val_set = build_dataset(recipe.data, recipe.data.val_split)
    scores = evaluate(predictor, val_set).to_dict(val_set.labels)
    class_ids = [val_set.labels.names.index(name) for name in OBJECT_CLASSES]
    found = []
    for index in range(len(val_set)):
        image, truth = val_set.read(index)
        found += object_recall(predictor.predict(image).labels, truth, class_ids)
    scores["object_recall_by_size"] = recall_by_size(found)
    # Counted on the trained model: the predictor's has BatchNorm folded into the convolutions.
    trained_model = Checkpoint.load(run_dir / "best.pt").build_model()
    scores["parameters"] = sum(p.numel() for p in trained_model.parameters())
    history = Checkpoint.load(run_dir / "last.pt").training["history"]
    scores["train_images_per_s"] = float(np.median([r["images_per_s"] for r in history]))
    scores["epochs"] = len(history)
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
        f"- budget: {args.epochs} epochs (validated every {args.val_every}, best kept), "
        f"seed {args.seed}, "
        f"input_scale {args.input_scale}, recipes/camvid.yaml otherwise; every model from "
        "scratch (no ImageNet weights are available here); VGG16-BN encoders at quarter width",
        "- BF: boundary F1 (SegNet paper); class acc: mean class accuracy (recall)",
        "",
        "| model | params | train img/s | mIoU | pixel acc | class acc | BF | "
        + " | ".join(names)
        + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in names)
        + " |",
    ]
    for variant, s in results.items():
        per_class = " | ".join(percent(s["per_class_iou"][n]) for n in names)
        lines.append(
            f"| {variant} | {s['parameters'] / 1e6:.2f}M | {s['train_images_per_s']:.1f} "
            f"| {percent(s['miou'])} "
            f"| {percent(s['pixel_accuracy'])} | {percent(s['mean_class_accuracy'])} "
            f"| {percent(s.get('boundary_f1'))} | {per_class} |"
        )
    bins = next(iter(results.values()))["object_recall_by_size"]
    edges = [*(b["min_side"] for b in bins), None]
    headers = [
        f"{low}-{high - 1} px ({b['objects']})" if high else f">= {low} px ({b['objects']})"
        for low, high, b in zip(edges[:-1], edges[1:], bins, strict=True)
    ]
    lines += [
        "",
        "Recall of objects by size: ground-truth connected components of "
        f"{', '.join(OBJECT_CLASSES)} binned by their bounding box's longer side at 360x480 "
        "(object count in brackets); "
        "each cell is the mean over the bin's objects of the fraction of their pixels predicted "
        "as their class.",
        "",
        "| model | " + " | ".join(headers) + " |",
        "| --- | " + " | ".join("---:" for _ in headers) + " |",
    ]
    for variant, s in results.items():
        cells = " | ".join(percent(b["recall"]) for b in s["object_recall_by_size"])
        lines.append(f"| {variant} | {cells} |")
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")


def plot_per_class(results: dict[str, dict], names: tuple[str, ...], path: Path) -> None:
    """A heat map of IoU (%): one row per variant, one column per class, then mIoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*names, "mIoU"]
    table = np.array(
        [
            [(scores["per_class_iou"][n] or 0.0) for n in names] + [scores["miou"]]
            for scores in results.values()
        ]
    )
    figure, axis = plt.subplots(figsize=(1.0 * len(columns) + 3, 0.4 * len(results) + 1.5))
    axis.imshow(table, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (row, column), value in np.ndenumerate(table):
        colour = "black" if value > 0.6 else "white"
        axis.text(column, row, f"{100 * value:.0f}", ha="center", va="center", color=colour)
    axis.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    axis.set_yticks(range(len(results)), list(results))
    axis.axvline(len(names) - 0.5, color="white", linewidth=2)
    axis.set_title("CamVid val, IoU per class (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def overlay_grid(variants: list[str], args: argparse.Namespace, path: Path) -> None:
    """One row per variant (after the images and their ground truth), one column per val image
    of ``OVERLAY_IMAGES``, each row named in a label panel at its left; class legend at the
    right."""
    recipe = load_recipe("camvid", [f"data.root={args.data}"])
    val_set = build_dataset(recipe.data, recipe.data.val_split)
    samples = [val_set.read(index) for index in OVERLAY_IMAGES]
    panels = {
        "image": [image for image, _ in samples],
        "ground truth": [colorize(truth, val_set.labels) for _, truth in samples],
    }
    for variant in variants:
        predictor = load_variant(variant, args.runs)
        panels[variant] = [
            colorize(predictor.predict(image).labels, val_set.labels) for image, _ in samples
        ]
    rows = []
    for name, pictures in panels.items():
        label = np.full((180, 220, 3), 255, dtype=np.uint8)
        cv2.putText(label, name, (6, 96), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        rows.append(np.concatenate([label, *(cv2.resize(p, (240, 180)) for p in pictures)], axis=1))
    grid = np.concatenate(rows, axis=0)
    classes = range(val_set.labels.num_classes)
    legend = legend_panel(val_set.labels, classes, grid.shape[0])
    Image.fromarray(np.concatenate([grid, legend], axis=1)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    names = [*VARIANTS, *RESCORED]
    parser.add_argument("--variants", nargs="+", default=names, choices=names)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--val-every", type=int, default=4)
    parser.add_argument("--input-scale", type=float, default=0.5)
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ablation"))
    parser.add_argument("--seed", type=int, default=0)
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
