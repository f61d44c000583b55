"""Training throughput of ``semseg train`` in one process and in two under torchrun.

    .venv/bin/python benchmarks/distributed_throughput.py [--repeats 3] [--out FILE]

Each configuration trains the same synthetic recipe (U-Net, base 16 channels, depth 4, 128x160
scenes, global batch 8) for two epochs in a fresh run folder, and reads the ``images_per_s`` of
the second epoch from ``metrics.jsonl`` (images of all processes per second of the epoch loop,
data loading included; the first epoch is warm-up). Configurations:

- 1 process x 1 thread, batch 8;
- 1 process x 2 threads, batch 8;
- torchrun, 2 processes x 1 thread, batch 4 each (DDP over Gloo).

Runs are interleaved (every configuration once, then again) and each figure is the median over
``--repeats`` runs, with the wall time of the whole command (interpreter start, model build,
validation) beside it. Results go to a Markdown file with the machine, versions, load averages
and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

RECIPE = {
    "seed": 0,
    "data": {
        "format": "synthetic",
        "synthetic_train_size": 64,
        "synthetic_val_size": 4,
        "synthetic_image_size": [128, 160],
    },
    "augment": {"crop_size": [128, 160], "scale_range": [0.75, 1.5]},
    "model": {"name": "unet", "base_channels": 16, "depth": 4},
    "train": {"epochs": 2, "optimizer": "adamw", "lr": 0.003, "val_every": 2},
}
GLOBAL_BATCH = 8
CONFIGURATIONS = {
    "1 process x 1 thread": (1, 1),
    "1 process x 2 threads": (1, 2),
    "2 processes x 1 thread (torchrun)": (2, 1),
}


def _command(processes: int, threads: int, recipe: Path, out: Path) -> list[str]:
    train = ["train", "--recipe", str(recipe), "--out", str(out),
             "--set", f"train.threads={threads}",
             "--set", f"train.batch_size={GLOBAL_BATCH // processes}"]  # fmt: skip
    if processes == 1:
        return [sys.executable, "-m", "semseg", *train]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [sys.executable, *launcher, "-m", "semseg", *train]


def measure(processes: int, threads: int, folder: Path) -> tuple[float, float]:
    """One run: (images/s of the second epoch, wall seconds of the whole command)."""
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = folder / "run"
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(
        _command(processes, threads, recipe, out), env=environment, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["images_per_s"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/distributed_throughput.md")
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in CONFIGURATIONS}
    for _ in range(args.repeats):  # interleaved, so a change of load hits every configuration
        for label, (processes, threads) in CONFIGURATIONS.items():
            with tempfile.TemporaryDirectory() as folder:
                results[label].append(measure(processes, threads, Path(folder)))
    rows = []
    for label, (processes, _) in CONFIGURATIONS.items():
        rates = [rate for rate, _ in results[label]]
        walls = [wall for _, wall in results[label]]
        row = (
            f"| {label} | {GLOBAL_BATCH // processes} | {statistics.median(rates):.2f} "
            f"| {min(rates):.2f} - {max(rates):.2f} | {statistics.median(walls):.1f} |"
        )
        print(row, flush=True)
        rows.append(row)
    load_after = os.getloadavg()
    lines = [
        "# Training throughput: one process vs two under torchrun",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}",
        "- shared machine: other engineers' jobs ran at the same time; load average (1, 5, 15 "
        f"min) {', '.join(f'{x:.1f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.1f}' for x in load_after)} after",
        f"- recipe: unet(base_channels=16, depth=4), 128x160 synthetic scenes with augmentation, "
        f"AdamW, fp32, global batch {GLOBAL_BATCH}, 64 images per epoch, 2 epochs",
        "- images/s: second epoch's `images_per_s` from metrics.jsonl (all processes, data "
        "loading included); wall: the whole command (start-up, both epochs, validation)",
        f"- {args.repeats} runs per configuration, interleaved: median, range",
        "- what the figures mean: docs/distributed.md, section 'Measured on this project's "
        "machine'",
        "",
        "| configuration | batch per process | images/s | range | wall (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
