"""Training throughput (images/s) and inference latency (ms) at 360x480 on this machine.

    .venv/bin/python benchmarks/throughput.py [--models unet ...] [--threads 2] [--out FILE]

For each model: a training step (forward, cross-entropy, backward, AdamW step) on a batch of
random 360x480 images, and eval-mode inference at batch 1 and 4. Each figure is the median over
``--repeats`` timed runs after ``--warmup`` untimed ones. Results go to a Markdown file with the
machine, versions and the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from realtime_latency import cpu_name  # benchmarks/ is on the path when run as a script

from semseg.models import create_model

HEIGHT, WIDTH = 360, 480
DEFAULT_MODELS = {
    "unet(base_channels=16)": ("unet", {"base_channels": 16}),
    "unet(base_channels=16, input_scale=0.5)": ("unet", {"base_channels": 16, "input_scale": 0.5}),
    "mobile_unet()": ("mobile_unet", {}),
}


def _median_seconds(function, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, arguments: dict, batch: int, warmup: int, repeats: int) -> dict:
    model = create_model(name, 11, **arguments)
    parameters = sum(p.numel() for p in model.parameters())
    images = torch.randn(batch, 3, HEIGHT, WIDTH)
    masks = torch.randint(0, 11, (batch, HEIGHT, WIDTH))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def train_step() -> None:
        loss = torch.nn.functional.cross_entropy(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step = _median_seconds(train_step, warmup, repeats)
    model.eval()
    latencies = {}
    for size in (1, 4):
        x = torch.randn(size, 3, HEIGHT, WIDTH)
        with torch.inference_mode():
            latencies[size] = _median_seconds(lambda x=x: model(x), warmup, repeats)
    return {
        "parameters": parameters,
        "train_images_per_s": batch / step,
        "latency_ms_b1": 1000 * latencies[1],
        "latency_ms_b4": 1000 * latencies[4],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="training batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        "# Training throughput and inference latency at 360x480",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, {args.threads} threads, "
        f"{platform.system()} {platform.release()}; load average before: "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}",
        f"- training: batch {args.batch}, AdamW, fp32; latency: eval mode, inference_mode, fp32",
        f"- each figure: median of {args.repeats} runs after {args.warmup} warm-up runs",
        "",
        "| model | parameters | train images/s | latency b=1 (ms) | latency b=4 (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, (name, arguments) in DEFAULT_MODELS.items():
        result = measure(name, arguments, args.batch, args.warmup, args.repeats)
        line = (
            f"| {label} | {result['parameters'] / 1e6:.2f} M | {result['train_images_per_s']:.2f} "
            f"| {result['latency_ms_b1']:.0f} | {result['latency_ms_b4']:.0f} |"
        )
        print(line, flush=True)
        lines.append(line)
    lines.append(f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
