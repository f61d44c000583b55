"""CPU latency of real-time candidates at 1x3x360x480, to pick the real-time model.

    .venv/bin/python benchmarks/realtime_latency.py [--threads 2] [--rounds 40]
        [--train-rounds 5] [--out benchmarks/results/realtime_latency.md]

Each candidate runs in eval mode under ``torch.inference_mode``, fp32, batch 1, in NCHW, in
channels_last memory format (model and input), and with BatchNorm folded into the convolutions
in channels_last (what ``Predictor`` runs). Candidates are timed in turns, one run of each
per round, so load from other processes spreads over all of them; each figure is the median
(and the fastest) of ``--rounds`` runs after two warm-up runs. With ``--train-rounds`` above 0
a training step (forward, cross-entropy, backward, SGD step) on a batch of 4 is timed too,
in turns likewise. Under load from other processes the fastest run is the better estimate
of the work a model needs: load only ever adds time. The ratio columns are the median over
rounds of a candidate's time over the LR-ASPP yardstick's in the same round.

Yardsticks: torchvision's ``lraspp_mobilenet_v3_large`` (torchvision is not installed here;
semseg's registered ``lraspp_mobilenet_v3_large`` has the same layers and parameter count,
3,221,538 for 21 classes) and ``unet`` with ``base_channels=16``. Results before that model was
registered came from a rebuild that took the stride-8 map after its stage's last block instead
of the first and kept dilation 1 in the first dilated block: the same work. Results go to a
Markdown file with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semseg.inference.fuse import fuse_conv_bn
from semseg.models import create_model
from semseg.models.backbones.mobilenet import mobilenet_v2
from semseg.models.lraspp import INTER_CHANNELS, LRASPP

HEIGHT, WIDTH = 360, 480
NUM_CLASSES = 11
TRAIN_BATCH = 4
WARMUP = 2


YARDSTICK = "lraspp_mobilenet_v3_large (yardstick)"
CANDIDATES: dict[str, Callable[[], nn.Module]] = {
    YARDSTICK: lambda: create_model("lraspp_mobilenet_v3_large", NUM_CLASSES),
    "unet(base_channels=16) (yardstick)": lambda: create_model(
        "unet", NUM_CLASSES, base_channels=16
    ),
    "lraspp mobilenet_v3_large at OS32 (no dilation)": lambda: create_model(
        "lraspp_mobilenet_v3_large", NUM_CLASSES, output_stride=32
    ),
    # Low-level map: the output of the stride-8 stage (features.6).
    "lraspp mobilenet_v2 (width 0.5, OS16)": lambda: LRASPP(
        mobilenet_v2(0.5, output_stride=16, last_conv=False), NUM_CLASSES, 2, INTER_CHANNELS
    ),
    "mobile_unet() (defaults: MobileNetV3-Large, merges 3x3, 1x1, 1x1)": lambda: create_model(
        "mobile_unet", NUM_CLASSES
    ),
    "mobile_unet(merge_kernels=(3, 3, 3))": lambda: create_model(
        "mobile_unet", NUM_CLASSES, merge_kernels=(3, 3, 3)
    ),
    "mobile_unet(decoder_channels=(128, 64), merge_kernels=(3, 3)) (to stride 8)": lambda: (
        create_model("mobile_unet", NUM_CLASSES, decoder_channels=(128, 64), merge_kernels=(3, 3))
    ),
    "mobile_unet(width_mult=0.75, merge_kernels=(3, 3, 3))": lambda: create_model(
        "mobile_unet", NUM_CLASSES, width_mult=0.75, merge_kernels=(3, 3, 3)
    ),
    "mobile_unet(encoder='mobilenet_v2', width_mult=0.5, decoder_channels=(64, 48, 32), "
    "merge_kernels=(3, 3, 3))": lambda: create_model(
        "mobile_unet",
        NUM_CLASSES,
        encoder="mobilenet_v2",
        width_mult=0.5,
        decoder_channels=(64, 48, 32),
        merge_kernels=(3, 3, 3),
    ),
}


def paired_ratio(times: list[float], yardstick: list[float]) -> float:
    """Median over rounds of this round's time over the yardstick's time in the same round:
    load that slows a whole round cancels out."""
    return statistics.median(t / y for t, y in zip(times, yardstick, strict=True))


def time_in_turns(
    functions: dict[str, Callable[[], object]], warmup: int, rounds: int
) -> dict[str, list[float]]:
    """Seconds per call of each function, calling each once per round, in order."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


LAYOUTS = ("nchw", "cl", "fused")
"""NCHW; channels_last; BatchNorm folded into the convolutions and channels_last (what
:class:`~semseg.inference.predictor.Predictor` runs)."""


def inference_runs(models: dict[str, nn.Module]) -> dict[str, Callable[[], object]]:
    """For each model, a batch-1 inference call in each of ``LAYOUTS``."""
    runs: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        for layout in LAYOUTS:
            memory_format = torch.contiguous_format if layout == "nchw" else torch.channels_last
            net = fuse_conv_bn(model) if layout == "fused" else copy.deepcopy(model).eval()
            net = net.to(memory_format=memory_format)
            image = torch.randn(1, 3, HEIGHT, WIDTH).to(memory_format=memory_format)
            runs[f"{name}|{layout}"] = lambda net=net, image=image: net(image)
    return runs


def train_runs(models: dict[str, nn.Module]) -> dict[str, Callable[[], object]]:
    """For each model, one SGD training step on a random batch of ``TRAIN_BATCH``."""
    images = torch.randn(TRAIN_BATCH, 3, HEIGHT, WIDTH)
    masks = torch.randint(0, NUM_CLASSES, (TRAIN_BATCH, HEIGHT, WIDTH))
    runs: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(model: nn.Module = model, optimizer: torch.optim.Optimizer = optimizer) -> None:
            model.train()
            optimizer.zero_grad()
            F.cross_entropy(model(images), masks).backward()
            optimizer.step()

        runs[name] = step
    return runs


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--train-rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/realtime_latency.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: build() for name, build in CANDIDATES.items()}
    load_before = os.getloadavg()[0]

    with torch.inference_mode():
        latency = time_in_turns(inference_runs(models), WARMUP, args.rounds)
    training = {}
    if args.train_rounds > 0:
        training = time_in_turns(train_runs(models), 1, args.train_rounds)
    load_after = os.getloadavg()[0]

    lines = [
        "# Real-time candidates: CPU latency at 1x3x360x480",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {cpu_name()}, {args.threads} threads "
        f"(torch.set_num_threads), {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs; 1-minute load average {load_before:.1f} before, "
        f"{load_after:.1f} after (other processes share the CPUs: compare rows of one run)",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}",
        "- latency: eval mode, torch.inference_mode, fp32, batch 1, "
        f"{NUM_CLASSES} classes; median and fastest of {args.rounds} runs after {WARMUP} "
        "warm-up runs, candidates timed in turns",
        f"- train step: batch {TRAIN_BATCH}, forward + cross-entropy + backward + SGD, "
        f"median and fastest of {args.train_rounds} runs after 1 warm-up run",
        "- ratios: median over rounds of the candidate's time / the LR-ASPP yardstick's time "
        "in the same round",
        "",
        "| model | parameters | NCHW median (min) ms | channels_last median (min) ms "
        "| fused channels_last median (min) ms | NCHW / yardstick "
        "| channels_last / yardstick | fused / yardstick | train step b=4 median (min) s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, model in models.items():
        cells = [f"{sum(p.numel() for p in model.parameters()):,}"]
        for layout in LAYOUTS:
            times = latency[f"{name}|{layout}"]
            cells.append(f"{1000 * statistics.median(times):.1f} ({1000 * min(times):.1f})")
        for layout in LAYOUTS:
            ratio = paired_ratio(latency[f"{name}|{layout}"], latency[f"{YARDSTICK}|{layout}"])
            cells.append(f"{ratio:.2f}")
        step = "-"
        if training:
            step = f"{statistics.median(training[name]):.2f} ({min(training[name]):.2f})"
        lines.append(f"| {name} | {' | '.join(cells)} | {step} |")
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
