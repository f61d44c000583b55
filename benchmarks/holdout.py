"""Leave-one-drive-out validation: train on two CamVid drives, validate on the third, in turn.

    PYTHONPATH=. .venv/bin/python benchmarks/holdout.py --recipe camvid \
        [--data ../shared/data/camvid] [--folds 0006R0 0001TP 0016E5] [--plain] \
        [--runs runs/holdout/camvid] [--out benchmarks/results/holdout_camvid.md] \
        [--set train.epochs=20 ...]

CamVid's val split is all drive ``0016E5``, which also gives 204 of the 367 training frames, so
val rewards remembering that drive. Here each fold pools the train and val splits (468 frames)
and holds one drive out (``data.holdout_groups``): the model trains on the other two drives'
frames and is scored on the held-out drive's at full label resolution; a fold's figures are
those of its best validation (every ``train.val_every`` epochs, as the recipe says), the one
its ``best.pt`` was written at.
``--plain`` adds the recipe as it is (train split, scored on val) for comparison. Runs are
resumable (a finished fold is only re-scored); give each recipe variant its own ``--runs``.

Writes ``--out`` (Markdown: per-fold scores and per-class IoU, their mean over the folds, the
machine and the command) and the same figures as JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from semseg.checkpoint import Checkpoint
from semseg.config import Recipe, load_recipe
from semseg.engine.trainer import Trainer
from semseg.hardware import describe_machine

CAMVID_DRIVES = ("0006R0", "0001TP", "0016E5")
PLAIN = "val split"


def fold_recipe(args: argparse.Namespace, holdout: str | None) -> Recipe:
    """The recipe with ``--set`` overrides, holding out drive ``holdout`` (None: as it is)."""
    overrides = [*args.overrides]
    if args.data is not None:
        overrides.append(f"data.root={args.data}")
    if holdout is not None:
        overrides.append(f"data.holdout_groups=[{holdout}]")
    return load_recipe(args.recipe, overrides)


def run_fold(args: argparse.Namespace, holdout: str | None) -> dict:
    """Train (or finish training) one fold; its scores are those of its best validation, the
    one ``best.pt`` was written at (validated through the predictor, as ``semseg evaluate``
    scores)."""
    recipe = fold_recipe(args, holdout)
    run_dir = args.runs / (holdout or "plain")
    started = time.perf_counter()
    trainer = Trainer(recipe, run_dir, resume=True, progress=not args.quiet)
    trainer.fit()
    wall_s = time.perf_counter() - started
    history = Checkpoint.load(run_dir / "last.pt").training["history"]
    best = max((r for r in history if "val" in r), key=lambda r: r["val"]["miou"])
    return {
        "held_out": holdout or PLAIN,
        "train_frames": len(trainer.train_set),
        "val_frames": len(trainer.val_set),
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "wall_s_this_call": wall_s,
        "train_images_per_s": float(np.median([r["images_per_s"] for r in history])),
        **best["val"],
    }


def percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def write_report(folds: list[dict], plain: dict | None, args: argparse.Namespace) -> None:
    names = list(folds[0]["per_class_iou"]) if folds else list(plain["per_class_iou"])
    recipe = fold_recipe(args, None)
    lines = [
        f"# Leave-one-drive-out validation of recipe `{args.recipe}`",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {describe_machine().cpu_model} ({platform.machine()}, {os.cpu_count()} CPUs), "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end; "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        f"- recipe: model {recipe.model.name} {json.dumps(recipe.model.arguments)}, "
        f"{recipe.train.epochs} epochs, loss {json.dumps(recipe.loss.model_dump(mode='json'))}",
        "- each fold trains on the train and val splits' frames outside the held-out drive and "
        "is scored on the held-out drive's frames (360x480 labels) at its best validation; "
        "BF: boundary F1",
        "",
        "| held out | train frames | val frames | best epoch / epochs | mIoU | pixel acc "
        "| class acc | BF | train img/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [*folds, *([plain] if plain else [])]
    for s in rows:
        lines.append(
            f"| {s['held_out']} | {s['train_frames']} | {s['val_frames']} "
            f"| {s['best_epoch']} / {s['epochs']} | {percent(s['miou'])} "
            f"| {percent(s['pixel_accuracy'])} | {percent(s['mean_class_accuracy'])} "
            f"| {percent(s.get('boundary_f1'))} | {s['train_images_per_s']:.1f} |"
        )
    if folds:
        mious = [s["miou"] for s in folds]
        spread = f" ± {100 * np.std(mious):.1f}" if len(folds) > 1 else ""
        lines.append(
            f"| **mean of {len(folds)} folds** | | | | **{percent(np.mean(mious))}**{spread} "
            f"| {percent(np.mean([s['pixel_accuracy'] for s in folds]))} "
            f"| {percent(np.mean([s['mean_class_accuracy'] for s in folds]))} "
            f"| {percent(mean_defined([s.get('boundary_f1') for s in folds]))} | |"
        )
    lines += [
        "",
        "Per-class IoU % (`-`: the class is in neither the held-out frames nor the prediction; "
        "the mean skips it):",
        "",
        "| held out | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for s in rows:
        cells = " | ".join(percent(s["per_class_iou"][n]) for n in names)
        lines.append(f"| {s['held_out']} | {cells} |")
    if folds:
        means = [mean_defined([s["per_class_iou"][n] for s in folds]) for n in names]
        lines.append(f"| mean of folds | {' | '.join(percent(m) for m in means)} |")
    if any("wall_s_this_call" in s for s in rows):
        walls = ", ".join(f"{s['held_out']} {s['wall_s_this_call'] / 60:.1f}" for s in rows)
        lines += [
            "",
            f"Wall time of this call per fold (minutes; a resumed fold counts the rest only): "
            f"{walls}.",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"folds": folds, "plain": plain}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="camvid", help="Recipe file or shipped name.")
    parser.add_argument("--data", type=Path, help="Dataset folder (default: the recipe's).")
    parser.add_argument("--folds", nargs="+", default=list(CAMVID_DRIVES), metavar="DRIVE")
    parser.add_argument("--plain", action="store_true", help="Also train on train, score val.")
    parser.add_argument("--runs", type=Path, help="Run folders [runs/holdout/<recipe>].")
    parser.add_argument("--out", type=Path, help="[benchmarks/results/holdout_<recipe>.md]")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="Recipe override, repeatable.")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = parser.parse_args()
    name = Path(args.recipe).stem
    args.runs = args.runs or Path("runs/holdout") / name
    args.out = args.out or Path("benchmarks/results") / f"holdout_{name}.md"
    folds: list[dict] = []
    plain = None
    for drive in args.folds:
        print(f"== holding out {drive}", flush=True)
        folds.append(run_fold(args, drive))
        write_report(folds, plain, args)
    if args.plain:
        print("== the recipe as it is (train split, scored on val)", flush=True)
        plain = run_fold(args, None)
        write_report(folds, plain, args)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
