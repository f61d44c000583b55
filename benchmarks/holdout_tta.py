"""Test-time augmentation scored on held-out CamVid drives: the best checkpoints of finished
leave-one-drive-out runs, without TTA, with a horizontal flip, and with flip and three scales.

    PYTHONPATH=. .venv/bin/python benchmarks/holdout_tta.py --threads 1 \
        --runs /work/runs/camvid_cpu-0016E5 /work/runs/camvid_realtime-0016E5 ... \
        [--out benchmarks/results/holdout_tta.md]

Each run folder is one ``semseg train --holdout DRIVE`` run; its ``best.pt`` is scored on its
own held-out frames (the recipe's, as ``semseg evaluate`` does) through the predictor, in
PyTorch fp32, so the only thing that changes between the columns is the TTA. Writes ``--out``
(Markdown: mIoU and boundary F1 per run and setting, the time per frame, the machine and the
command) and the figures as JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from harness import machine_header, markdown_table
from holdout import percent

from semseg.checkpoint import Checkpoint
from semseg.config import load_recipe
from semseg.engine.build import build_datasets
from semseg.engine.evaluate import evaluate
from semseg.inference.predictor import Predictor
from semseg.inference.tta import InferenceOptions

SETTINGS: dict[str, InferenceOptions] = {
    "none": InferenceOptions(),
    "flip": InferenceOptions(hflip=True),
    "flip + scales 0.75, 1, 1.25": InferenceOptions(hflip=True, scales=(0.75, 1.0, 1.25)),
}


def score_run(run_dir: Path) -> dict:
    """Scores of ``run_dir/best.pt`` on its held-out frames under each of :data:`SETTINGS`."""
    checkpoint = Checkpoint.load(run_dir / "best.pt")
    data = load_recipe(base=checkpoint.recipe).data
    if not data.holdout_groups:
        raise SystemExit(f"{run_dir}: not a held-out run (its recipe has no data.holdout_groups)")
    frames = build_datasets(data).val
    result = {
        "run": str(run_dir),
        "model": checkpoint.recipe["model"]["name"],
        "held_out": ", ".join(data.holdout_groups),
        "frames": len(frames),
        "settings": {},
    }
    for name, options in SETTINGS.items():
        predictor = Predictor.from_checkpoint(checkpoint, options=options, backend="torch")
        started = time.perf_counter()
        scores = evaluate(predictor, frames, progress=False).to_dict(predictor.labels)
        result["settings"][name] = {
            "miou": scores["miou"],
            "boundary_f1": scores["boundary_f1"],
            "ms_per_frame": 1000 * (time.perf_counter() - started) / len(frames),
        }
        print(f"{run_dir.name}: TTA {name}: mIoU {percent(scores['miou'])}", flush=True)
    return result


def write_report(results: list[dict], args: argparse.Namespace) -> None:
    rows = []
    for result in results:
        settings = result["settings"]
        plain = settings["none"]
        row = [f"`{Path(result['run']).name}`", result["model"], result["held_out"]]
        row.append(result["frames"])
        for name in SETTINGS:
            gain = settings[name]["miou"] - plain["miou"]
            row.append(
                f"{percent(settings[name]['miou'])}"
                + (f" ({100 * gain:+.1f})" if name != "none" else "")
            )
        row += [percent(settings[name]["boundary_f1"]) for name in SETTINGS]
        row.append(" / ".join(f"{settings[name]['ms_per_frame']:.0f}" for name in SETTINGS))
        rows.append(row)
    header = ["run", "model", "held out", "frames"]
    header += [f"mIoU, TTA {name}" for name in SETTINGS]
    header += [f"BF, {name}" for name in SETTINGS] + ["ms per frame (same order)"]
    lines = [
        *machine_header("Test-time augmentation on held-out CamVid drives", args.threads),
        "- each run's `best.pt` on its held-out drive's frames at 360x480, PyTorch fp32 through "
        "the predictor (as `semseg evaluate --backend torch --precision fp32 [--hflip] "
        "[--scales 0.75,1,1.25]` scores); in brackets the change against no TTA, in mIoU points",
        "",
        *markdown_table(header, rows),
        "",
    ]
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/holdout_tta.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    write_report([score_run(run_dir) for run_dir in args.runs], args)


if __name__ == "__main__":
    main()
