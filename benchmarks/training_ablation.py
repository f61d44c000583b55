"""Training choices one at a time, scored on a held-out CamVid drive.

    PYTHONPATH=. .venv/bin/python benchmarks/training_ablation.py --recipe camvid_realtime \
        [--fold 0001TP] [--seeds 0 1 2] [--variants ce median_frequency ohem ...] \
        [--set train.epochs=10 ...] [--runs runs/training_ablation] \
        [--out benchmarks/results/training_ablation.md]

Every variant is the recipe with ``--set`` (the shared budget) and then the variant's own
overrides, trained on the train and val splits' frames outside drive ``--fold`` and scored on
that drive's frames at full label resolution at its best validation (see ``holdout.py``, whose
fold runner this uses). The reading of the table is written by hand under it.

Writes ``--out`` (Markdown: mean and spread over the seeds of mIoU, boundary F1 and the
per-class IoU, with the machine and the command) and the per-run figures as JSON beside it.
Runs resume: a finished run is only re-scored.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from harness import machine_header, markdown_table
from holdout import percent, run_fold

CE = "loss.class_weights=null"
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "ce": ("cross-entropy, unweighted", [CE, "loss.terms=[{name: ce}]"]),
    "median_frequency": (
        "cross-entropy, median-frequency class weights (SegNet)",
        ["loss.class_weights=median_frequency", "loss.terms=[{name: ce}]"],
    ),
    "ohem": (
        "OHEM cross-entropy, unweighted (threshold 0.7, at least 40000 pixels a batch)",
        [CE, "loss.terms=[{name: ohem, threshold: 0.7, min_kept: 40000}]"],
    ),
    "ce_lovasz": (
        "median-frequency cross-entropy + 0.5 Lovasz-softmax (unweighted)",
        [
            "loss.class_weights=median_frequency",
            "loss.terms=[{name: ce}, {name: lovasz, weight: 0.5, class_weighted: false}]",
        ],
    ),
    "dice": ("soft Dice, unweighted", [CE, "loss.terms=[{name: dice}]"]),
    "focal": ("focal (gamma 2), unweighted", [CE, "loss.terms=[{name: focal}]"]),
    "photometric_strong": (
        "median-frequency cross-entropy, brightness / contrast / saturation jitter 0.6 "
        "(factors 0.4-1.6; the recipes use 0.3)",
        [
            "loss.class_weights=median_frequency",
            "loss.terms=[{name: ce}]",
            "augment.photometric=0.6",
        ],
    ),
    "ema": (
        "median-frequency cross-entropy, weight EMA (decay 0.999) for validation",
        ["loss.class_weights=median_frequency", "loss.terms=[{name: ce}]", "train.ema={}"],
    ),
    "class_balanced_crops": (
        "median-frequency cross-entropy, half the crops placed on a class drawn uniformly "
        "from those in the frame",
        [
            "loss.class_weights=median_frequency",
            "loss.terms=[{name: ce}]",
            "augment.class_balanced_crops=0.5",
        ],
    ),
    "epochs_160": (
        "median-frequency cross-entropy, 160 epochs (the poly schedule stretched to them)",
        ["loss.class_weights=median_frequency", "loss.terms=[{name: ce}]", "train.epochs=160"],
    ),
}
RARE = ("Pole", "SignSymbol", "Fence", "Pedestrian", "Bicyclist")


def run_variant(args: argparse.Namespace, variant: str, seed: int) -> dict:
    fold_args = argparse.Namespace(
        recipe=args.recipe,
        data=args.data,
        overrides=[*args.overrides, *VARIANTS[variant][1], f"seed={seed}"],
        runs=args.runs / variant / f"seed{seed}",
        quiet=args.quiet,
    )
    return {"variant": variant, "seed": seed, **run_fold(fold_args, args.fold)}


def mean_spread(values: list[float]) -> str:
    """``mean`` in percent, with ``± sample standard deviation`` over two or more seeds."""
    text = percent(statistics.fmean(values))
    if len(values) > 1:
        text += f" ± {100 * statistics.stdev(values):.1f}"
    return text


def write_report(results: list[dict], args: argparse.Namespace) -> None:
    names = list(results[0]["per_class_iou"])
    rows, class_rows = [], []
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        rows.append(
            [
                f"`{variant}`",
                VARIANTS[variant][0],
                len(runs),
                f"**{mean_spread([r['miou'] for r in runs])}**",
                mean_spread([r["boundary_f1"] for r in runs]),
                mean_spread([r["pixel_accuracy"] for r in runs]),
                f"{statistics.fmean(r['wall_s_this_call'] for r in runs) / 60:.1f}",
            ]
        )
        class_rows.append(
            [f"`{variant}`"]
            + [
                percent(statistics.fmean(r["per_class_iou"][name] or 0.0 for r in runs))
                for name in names
            ]
        )
    first = results[0]
    title = f"Training ablation of recipe `{args.recipe}`, drive {args.fold} held out"
    lines = [
        *machine_header(title, args.threads),
        f"- shared budget (`--set`): {', '.join(f'`{o}`' for o in args.overrides) or 'none'}",
        f"- {first['train_frames']} training frames (the train and val splits outside "
        f"{args.fold}), {first['val_frames']} validation frames of {args.fold}, scored at "
        "360x480 at each run's best validation; BF: boundary F1; spread: sample standard "
        "deviation over the seeds",
        "",
        *markdown_table(
            ["variant", "what", "seeds", "mIoU", "BF", "pixel acc", "minutes per run"], rows
        ),
        "",
        f"Per-class IoU % (mean over the seeds); the rare classes: {', '.join(RARE)}.",
        "",
        *markdown_table(["variant", *names], class_rows),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="camvid_realtime")
    parser.add_argument("--data", type=Path, help="Dataset folder (default: the recipe's).")
    parser.add_argument("--fold", default="0001TP", help="The held-out drive.")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="The shared budget, repeatable.")  # fmt: skip
    parser.add_argument("--runs", type=Path, default=Path("runs/training_ablation"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training_ablation.md"))
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = parser.parse_args()
    args.overrides = [*args.overrides, f"train.threads={args.threads}"]
    results = []
    for variant in args.variants:
        for seed in args.seeds:
            started = time.perf_counter()
            print(f"== {variant}, seed {seed}", flush=True)
            results.append(run_variant(args, variant, seed))
            write_report(results, args)
            print(f"   {time.perf_counter() - started:.0f} s", flush=True)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
