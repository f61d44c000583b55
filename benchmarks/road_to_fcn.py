"""The road to FCN, measured: cost per 360x480 image beside the CamVid ablation's scores.

    .venv/bin/python benchmarks/road_to_fcn.py \
        [--scores benchmarks/results/ablation/ablation.json \
                  benchmarks/results/ablation/road_to_fcn/ablation.json] \
        [--threads 2] [--rounds 10] \
        [--out benchmarks/results/ablation/road_to_fcn.md]

Rows: a patch classifier run literally, patch by patch (window stride 1: a patch per pixel;
stride 8: its pooling stride, the pixels its dense form visits), the same weights run densely
as a fully convolutional net, the full-resolution FCN, the naive baseline's network with its
pools removed (cost only), and the downsample-upsample designs (naive, FCN-8s, U-Net). Each
model is built as the ablation trained it (``VARIANTS`` of ``ablation.py``, ``input_scale``
0.5: the network sees 180x240) and as the predictor runs it (eval mode, BatchNorm folded into
the convolutions, channels_last), on a 1x3x360x480 input:

- GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (convolutions and
  matrix products, 2 FLOPs a multiply-add; interpolation, pooling and ReLU are not counted).
- latency: ``torch.inference_mode``, fp32, batch 1, ``--threads`` threads, timed with
  ``harness.time_in_turns``: median and fastest of ``--rounds`` runs after one warm-up run,
  rows timed in turns; the literal run at window stride 1 (tens of seconds a call) is timed
  apart, over 2 runs after a warm-up.
- peak memory: in a fresh subprocess per row, after one warm-up forward pass (one-time
  allocations of the kernel libraries are not an inference's) and a reset of the peak
  (``/proc/self/clear_refs``), the peak resident set size during a forward pass at 360x480
  (``resource.getrusage`` ``ru_maxrss`` after it) minus the resident set before it
  (``/proc/self/statm``): the activations and workspaces of one inference, not the weights or
  the Python and torch runtime. Blocks of 64 KiB and more come from mmap there, so freed
  tensors leave the resident set.

Scores (mIoU, recall of objects by size) come from ``ablation.py``'s JSON files in
``--scores``, the first file holding the row's variant; rows without one show "-". The
"Reading" section of the output is written by hand after a run (a new run replaces the file).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from ablation import VARIANTS  # benchmarks/ is on sys.path when this script runs
from harness import Report, milliseconds, time_in_turns
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from semseg.inference.fuse import fuse_conv_bn
from semseg.models import create_model
from semseg.models.contract import SegmentationModel
from semseg.models.input_scaled import InputScaled

HEIGHT, WIDTH = 360, 480
NUM_CLASSES = 11
INPUT_SCALE = 0.5
"""The ablation's ``--input-scale``: every network here runs at 180x240."""


def ablation_model(variant: str, **overrides: object) -> nn.Module:
    """The model of ablation variant ``variant`` (with argument ``overrides``), as trained."""
    arguments = {**VARIANTS[variant], **overrides}
    name = arguments.pop("name")
    return create_model(name, NUM_CLASSES, input_scale=INPUT_SCALE, **arguments)


class NaiveWithoutPools(SegmentationModel):
    """The naive baseline's 13 convolutions and 1x1 classifier with every pool removed: the
    same layers and widths, all at the input's resolution (cost only; never trained)."""

    def __init__(self) -> None:
        super().__init__(NUM_CLASSES, output_stride=1)
        naive = ablation_model("naive-bilinear").model
        layers = [m for m in naive.encoder.features if not isinstance(m, nn.MaxPool2d)]
        self.layers = nn.Sequential(*layers, naive.classifier)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class Row:
    build: Callable[[], nn.Module]
    scores: str | None
    """The ablation variant whose scores the row shows, or None for a cost-only row."""


ROWS: dict[str, Row] = {
    "patch classifier, literal, window stride 1": Row(
        lambda: ablation_model("patch_classifier", mode="literal", window_stride=1), None
    ),
    "patch classifier, literal, window stride 8": Row(
        lambda: ablation_model("patch_classifier", mode="literal"), "patch_classifier-literal"
    ),
    "patch classifier, dense": Row(lambda: ablation_model("patch_classifier"), "patch_classifier"),
    "fullres_fcn (16 channels)": Row(lambda: ablation_model("fullres_fcn"), "fullres_fcn"),
    "naive without its pools": Row(lambda: InputScaled(NaiveWithoutPools(), INPUT_SCALE), None),
    "naive (bilinear)": Row(lambda: ablation_model("naive-bilinear"), "naive-bilinear"),
    "fcn8s": Row(lambda: ablation_model("fcn8s"), "fcn8s"),
    "unet": Row(lambda: ablation_model("unet"), "unet"),
}


def deployed(row: Row) -> nn.Module:
    """The row's model as the predictor runs it: eval, BatchNorm folded, channels_last."""
    torch.manual_seed(0)
    return fuse_conv_bn(row.build()).to(memory_format=torch.channels_last)


def image() -> torch.Tensor:
    return torch.randn(1, 3, HEIGHT, WIDTH).contiguous(memory_format=torch.channels_last)


def count_flops(row: Row) -> int:
    """FLOPs of one forward pass at 1x3x360x480, counted on the meta device."""
    with torch.device("meta"):
        model = row.build().eval()
        x = torch.empty(1, 3, HEIGHT, WIDTH)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


SLOW_ROWS = ("patch classifier, literal, window stride 1",)
"""Rows timed apart, over 2 runs: one call takes tens of seconds."""


def time_rows(models: dict[str, nn.Module], rounds: int) -> dict[str, list[float]]:
    """Seconds per forward at 1x3x360x480 of each model (see the module docstring)."""
    x = image()
    calls = {name: (lambda model=model: model(x)) for name, model in models.items()}
    fast = {name: call for name, call in calls.items() if name not in SLOW_ROWS}
    slow = {name: call for name, call in calls.items() if name in SLOW_ROWS}
    return time_in_turns(fast, warmup=1, rounds=rounds) | time_in_turns(slow, 1, 2)


def resident_mib() -> float:
    """Resident set size of this process now, in MiB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_here(label: str, threads: int) -> dict[str, float]:
    """Peak resident memory of a second forward pass of row ``label`` at 360x480 above the
    resident set before it, in this process (call it in a fresh one: the peak is the
    process's)."""
    torch.set_num_threads(threads)
    model, x = deployed(ROWS[label]), image()
    with torch.inference_mode():
        model(x)  # one-time allocations (kernel libraries, their caches) are not an inference's
    gc.collect()
    # Linux: "5" resets the peak resident set size to the current one, so building the model
    # (a copy is folded and the original freed) does not leave a higher peak behind.
    Path("/proc/self/clear_refs").write_text("5")
    before = resident_mib()
    with torch.inference_mode():
        model(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"forward_peak_mib": peak - before, "process_peak_mib": peak}


def peak_memory(label: str, threads: int) -> dict[str, float]:
    """:func:`peak_memory_here` in a subprocess of its own."""
    command = [sys.executable, __file__, "--peak-memory-of", label, "--threads", str(threads)]
    # Blocks of 64 KiB and more from mmap, returned to the system when freed: the resident set
    # then follows the live tensors instead of staying at glibc's earlier heap top.
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_scores(paths: list[Path]) -> dict[str, dict]:
    """Variant -> its scores, the first of ``paths`` holding it winning."""
    scores: dict[str, dict] = {}
    for path in paths:
        if path.is_file():
            for variant, result in json.loads(path.read_text()).items():
                scores.setdefault(variant, result)
    return scores


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


BINS = ("0-15 px", "16-31 px", "32-63 px", ">= 64 px")
"""The ablation's object-size bins (longer bounding-box side at 360x480)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    results = Path("benchmarks/results/ablation")
    parser.add_argument(
        "--scores",
        type=Path,
        nargs="+",
        default=[results / "ablation.json", results / "road_to_fcn" / "ablation.json"],
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--out", type=Path, default=results / "road_to_fcn.md")
    parser.add_argument("--peak-memory-of", choices=list(ROWS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_memory_of:
        print(json.dumps(peak_memory_here(args.peak_memory_of, args.threads)))
        return

    torch.set_num_threads(args.threads)
    report = Report("The road to FCN on CamVid: cost per 360x480 image and accuracy", args.threads)
    report.add(
        f"- every network runs at input_scale {INPUT_SCALE} (180x240) as trained in the "
        "ablation, in eval mode with BatchNorm folded, channels_last, batch 1, fp32",
        "- GFLOPs: FlopCounterMode (convolutions and matrix products, 2 per multiply-add); "
        f"latency: median (fastest) of {args.rounds} runs after a warm-up, rows in turns (the "
        "window-stride-1 literal run apart, 2 runs); peak memory: resident memory of a forward "
        "pass above the process's before it (ru_maxrss, fresh subprocess)",
        "- scores: CamVid val (101 images at 360x480), from " + ", ".join(map(str, args.scores)),
    )
    scores = read_scores(args.scores)
    rows = {label: ROWS[label] for label in args.rows}
    # Memory first: after this process has built a model on the meta device (which imports
    # torch._inductor), the subprocesses' forward passes measured 33-43 MiB more for some rows;
    # a subprocess started from a shell measures what one started first here does.
    report.load.sample("memory")
    memory = {label: peak_memory(label, args.threads) for label in rows}
    flops = {label: count_flops(row) for label, row in rows.items()}
    models = {label: deployed(row) for label, row in rows.items()}
    parameters = {label: sum(p.numel() for p in m.parameters()) for label, m in models.items()}
    report.load.sample("latency")
    with torch.inference_mode():
        latency = time_rows(models, args.rounds)

    reference = flops.get("naive (bilinear)")
    table = []
    for label, row in rows.items():
        result = scores.get(row.scores) if row.scores else None
        recall = result["object_recall_by_size"] if result else [{"recall": None}] * len(BINS)
        table.append(
            [
                label,
                f"{parameters[label] / 1e6:.2f}M",
                f"{flops[label] / 1e9:,.1f}",
                f"{flops[label] / reference:.1f}" if reference else "-",
                milliseconds(latency[label]),
                f"{memory[label]['forward_peak_mib']:,.0f}",
                percent(result["miou"]) if result else "-",
                *(percent(b["recall"]) for b in recall),
            ]
        )
    header = ["model", "params", "GFLOPs", "GFLOPs / naive", "latency ms", "peak MiB", "mIoU"]
    report.table([*header, *(f"recall {b}" for b in BINS)], table)
    report.write(args.out)


if __name__ == "__main__":
    main()
