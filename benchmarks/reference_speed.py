"""CPU latency and size of every semseg model, and of reference implementations, in one run.

    /work/refenv/bin/python benchmarks/reference_speed.py [--threads 2] [--target-s 15]
        [--min-runs 5] [--max-runs 20] [--out benchmarks/results/reference_speed.md]

Every model of ``semseg.models.list_models()`` is built at its defaults with 11 classes and
timed at 1x3x360x480 and 4x3x360x480: eval mode, ``torch.inference_mode``, fp32, NCHW, one
warm-up call, then the median (and fastest) of ``runs`` calls, where ``runs`` is
``--target-s`` divided by the warm-up's seconds, clipped to ``[--min-runs, --max-runs]`` (so
the big VGG models get few runs). Models compared with each other form a group timed in
turns, one call of each per round, so load from other processes falls on all of them alike:

- same architecture, ratio = ours / theirs latency: torchvision's ``deeplabv3_resnet50``
  (output stride 8, regular 3x3 ASPP convolutions) against ``deeplabv3(backbone="resnet50",
  output_stride=8, separable=False)``; segmentation_models_pytorch's ``DeepLabV3Plus``
  (ResNet-50, output stride 16, ASPP rates set to the paper's 6, 12, 18) against
  ``deeplabv3plus`` at its defaults.
- yardsticks of a different architecture (no same-architecture ratio): torchvision's
  ``lraspp_mobilenet_v3_large`` against ``mobile_unet``; smp ``Unet`` on ResNet-34 and
  ResNet-18 against ``unet``.
- torchvision's ``fcn_resnet50`` is not the FCN of Long et al. (a dilated ResNet-50 with a
  plain conv head, no skips): listed for its size, not timed.

References are built with ``weights=None`` (no download). smp models accept only sizes
divisible by their output stride, so they run on the input zero-padded at the bottom and
right (368x480 for DeepLabV3+, 384x480 for U-Net) and their logits are cropped back; the
padding is part of their time, as it would be for a user. torchvision and smp live in a
separate environment (see ``benchmarks/README.md``); without them the references are listed
as not installed and our models are still timed. Each same-architecture pair is also
profiled at batch 1 (``torch.profiler``, self CPU time per operator, mean of 3 calls); the
multiply-accumulates of convolutions and matrix products are counted on the meta device
(``torch.utils.flop_counter``). Results go to a Markdown file with machine, versions and
command.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from realtime_latency import cpu_name, time_in_turns
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from semseg.models import create_model, list_models

HEIGHT, WIDTH = 360, 480
NUM_CLASSES = 11
BATCHES = (1, 4)
PROFILE_TOP = 8
PROFILE_CALLS = 3


class DictOutput(nn.Module):
    """A torchvision segmentation model returning its ``"out"`` logits as a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


class Padded(nn.Module):
    """Zero-pads ``(N, 3, H, W)`` at the bottom and right to multiples of ``multiple`` (what
    smp models require), runs ``model`` and crops the logits back to ``(N, C, H, W)``."""

    def __init__(self, model: nn.Module, multiple: int) -> None:
        super().__init__()
        self.model = model
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        logits = self.model(F.pad(x, (0, pad_w, 0, pad_h)))
        return logits[..., :height, :width]


@dataclass
class Entry:
    """A model to time: ``label`` as shown and a builder, which raises ``ImportError`` when
    its library is missing. ``ours``: a semseg model; ``at_defaults``: at its default
    configuration."""

    label: str
    build: Callable[[], nn.Module]
    ours: bool = False
    at_defaults: bool = False


@dataclass
class Group:
    """Entries timed in turns; ``entries[0]`` is ours. ``same_architecture`` makes the
    ours / theirs ratio a like-for-like comparison; ``note`` says what differs."""

    title: str
    entries: list[Entry]
    same_architecture: bool = False
    note: str = ""


@dataclass
class Result:
    """What was measured for one entry; ``missing`` holds the ImportError when not built,
    ``model`` the model until it has been timed."""

    entry: Entry
    model: nn.Module | None = None
    parameters: int = 0
    gmac: float = 0.0
    times: dict[int, list[float]] = field(default_factory=dict)
    profile: dict[str, tuple[float, int]] = field(default_factory=dict)
    missing: str = ""


def ours(name: str, **kwargs: object) -> Entry:
    arguments = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return Entry(
        f"{name}({arguments})", lambda: create_model(name, NUM_CLASSES, **kwargs),
        ours=True, at_defaults=not kwargs,
    )  # fmt: skip


def deeplabv3plus_one_decoder_conv() -> Entry:
    """``deeplabv3plus()`` with only the first of its two decoder convolutions, the decoder
    depth smp builds: separates the cost of that architectural choice from the code's."""

    def build() -> nn.Module:
        model = create_model("deeplabv3plus", NUM_CLASSES)
        model.decoder = model.decoder[:1]
        return model

    return Entry("deeplabv3plus() with decoder[:1] (diagnostic)", build, ours=True)


def torchvision_model(name: str) -> Entry:
    def build() -> nn.Module:
        from torchvision.models import segmentation

        constructor = getattr(segmentation, name)
        return DictOutput(constructor(weights=None, weights_backbone=None, num_classes=NUM_CLASSES))

    return Entry(f"torchvision {name}", build)


def smp_model(architecture: str, encoder: str, multiple: int, **kwargs: object) -> Entry:
    def build() -> nn.Module:
        import segmentation_models_pytorch as smp

        model = getattr(smp, architecture)(
            encoder_name=encoder, encoder_weights=None, classes=NUM_CLASSES, **kwargs
        )
        return Padded(model, multiple)

    arguments = "".join(f", {key}={value!r}" for key, value in kwargs.items())
    return Entry(f"smp {architecture}({encoder!r}{arguments})", build)


def groups() -> list[Group]:
    """Every semseg model once at its defaults, grouped with the references it is compared
    to, plus the one non-default configuration a reference needs."""
    paired = {
        "deeplabv3plus": Group(
            "DeepLabV3+ ResNet-50, output stride 16",
            [
                ours("deeplabv3plus"),
                smp_model("DeepLabV3Plus", "resnet50", 16, decoder_atrous_rates=(6, 12, 18)),
                deeplabv3plus_one_decoder_conv(),
            ],
            same_architecture=True,
            note="Both: ResNet-50 at output stride 16 (layer4 dilated), ASPP with depthwise "
            "separable 3x3 branches at rates 6, 12, 18, a 48-channel stride-4 skip, 256 "
            "channels. smp adds one separable 3x3 conv after ASPP (at stride 16) and merges "
            "the skip with one separable 3x3 conv; ours merges with two (at stride 4), the "
            "paper's choice; the diagnostic row drops our second one, and its ratio is its "
            "latency / smp's. smp runs on 368x480 (padded), 2.2% more pixels.",
        ),
        "mobile_unet": Group(
            "Real-time yardstick",
            [ours("mobile_unet"), torchvision_model("lraspp_mobilenet_v3_large")],
            note="Same encoder, different heads: LR-ASPP on MobileNetV3-Large dilated to output "
            "stride 16 (logits at stride 8) against MobileNetV3-Large at output stride 32 "
            "with a U-Net decoder to stride 4.",
        ),
        "unet": Group(
            "U-Net yardstick",
            [
                ours("unet"),
                smp_model("Unet", "resnet34", 32),
                smp_model("Unet", "resnet18", 32),
            ],
            note="Different architectures: ours is the paper's U-Net (64 to 1024 channels, "
            "two 3x3 convolutions per level, a full-resolution decoder level); smp's has a "
            "ResNet encoder and a (256, 128, 64, 32, 16)-channel decoder. smp runs on "
            "384x480 (padded), 6.7% more pixels.",
        ),
    }
    result = [paired.get(name) or Group(name, [ours(name)]) for name in list_models()]
    result.append(
        Group(
            "DeepLabV3 ResNet-50, output stride 8",
            [
                ours("deeplabv3", backbone="resnet50", output_stride=8, separable=False),
                torchvision_model("deeplabv3_resnet50"),
            ],
            same_architecture=True,
            note="Both: ResNet-50 at output stride 8 (layer3 and layer4 dilated), ASPP with "
            "regular 3x3 branches at rates 12, 24, 36, 256 channels, a 1x1 classifier at "
            "stride 8 and bilinear upsampling. torchvision adds a 3x3 256-channel conv-BN-ReLU "
            "after ASPP and BatchNorm in the pooling branch; no auxiliary head is built "
            "(``weights=None``).",
        )
    )
    return result


def size(entry: Entry) -> tuple[int, float]:
    """Parameters and batch-1 conv GMAC of ``entry``, from a copy built on the meta device."""
    with torch.device("meta"):
        model = entry.build().eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.empty(1, 3, HEIGHT, WIDTH, device="meta"))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2e9


def build(entry: Entry) -> Result:
    try:
        model = entry.build().eval()
    except ImportError as error:
        return Result(entry, missing=str(error))
    return Result(entry, model, *size(entry))


def time_group(
    results: list[Result], batch: int, target_s: float, min_runs: int, max_runs: int
) -> None:
    """Time the built models of ``results`` in turns at ``batch``; store seconds per call."""
    built = [r for r in results if r.model is not None]
    image = torch.randn(batch, 3, HEIGHT, WIDTH)
    calls = {r.entry.label: (lambda model=r.model, image=image: model(image)) for r in built}
    slowest = 0.0
    for r in built:
        start = time.perf_counter()
        logits = calls[r.entry.label]()
        slowest = max(slowest, time.perf_counter() - start)
        if logits.shape != (batch, NUM_CLASSES, HEIGHT, WIDTH):
            raise RuntimeError(f"{r.entry.label} returned shape {tuple(logits.shape)}")
    runs = min(max_runs, max(min_runs, round(target_s / slowest)))
    for label, times in time_in_turns(calls, 0, runs).items():
        next(r for r in built if r.entry.label == label).times[batch] = times


def profile_calls(result: Result) -> None:
    """Self CPU milliseconds and call count per operator of a batch-1 call, averaged over
    ``PROFILE_CALLS`` calls."""
    image = torch.randn(1, 3, HEIGHT, WIDTH)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(PROFILE_CALLS):
            result.model(image)
    result.profile = {
        event.key: (event.self_cpu_time_total / 1000 / PROFILE_CALLS, event.count // PROFILE_CALLS)
        for event in prof.key_averages()
    }


def milliseconds(times: list[float]) -> str:
    return f"{1000 * statistics.median(times):.0f} ({1000 * min(times):.0f})"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def model_rows(measured: list[tuple[Group, list[Result]]]) -> list[str]:
    lines = [
        "| model (11 classes) | parameters | conv GMAC | b=1 median (min) ms "
        "| b=4 median (min) ms | b=4 ms per image | runs b=1, b=4 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    return lines + [result_row(r) for _, rs in measured for r in rs if r.entry.at_defaults]


def result_row(r: Result) -> str:
    per_image = 1000 * statistics.median(r.times[4]) / 4
    return (
        f"| {r.entry.label} | {r.parameters:,} | {r.gmac:.2f} | {milliseconds(r.times[1])} "
        f"| {milliseconds(r.times[4])} | {per_image:.0f} "
        f"| {len(r.times[1])}, {len(r.times[4])} |"
    )


def comparison_rows(measured: list[tuple[Group, list[Result]]]) -> list[str]:
    lines = []
    for group, results in measured:
        if len(group.entries) < 2:
            continue
        kind = "same architecture" if group.same_architecture else "yardstick, not a ratio"
        lines += [
            f"### {group.title} ({kind})",
            "",
            group.note,
            "",
            "| model | parameters | conv GMAC | b=1 median (min) ms | b=4 median (min) ms "
            "| ours / theirs b=1 | ours / theirs b=4 | runs |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        mine = results[0]
        theirs = next((r for r in results if not r.entry.ours and not r.missing), None)
        for r in results:
            if r.missing:
                lines.append(f"| {r.entry.label} | not installed: {r.missing} | | | | | | |")
                continue
            ratios = ["-", "-"]
            if not r.entry.ours:
                ratios = [ratio(mine, r, batch) for batch in BATCHES]
            elif r is not mine and theirs is not None:
                ratios = [f"{ratio(r, theirs, batch)} (this / theirs)" for batch in BATCHES]
            lines.append(
                f"| {r.entry.label} | {r.parameters:,} | {r.gmac:.2f} "
                f"| {milliseconds(r.times[1])} | {milliseconds(r.times[4])} "
                f"| {ratios[0]} | {ratios[1]} | {len(r.times[1])}, {len(r.times[4])} |"
            )
        lines.append("")
        lines += profile_rows(results)
    return lines


def ratio(numerator: Result, denominator: Result, batch: int) -> str:
    """Median latency of ``numerator`` over that of ``denominator`` at ``batch``."""
    value = statistics.median(numerator.times[batch]) / statistics.median(denominator.times[batch])
    return f"{value:.2f}"


def profile_rows(results: list[Result]) -> list[str]:
    """Operators with the most self CPU time in a profiled batch-1 call of each model."""
    profiled = [r for r in results if r.profile]
    if len(profiled) < 2:
        return []

    def most(key: str) -> float:
        return max(r.profile.get(key, (0.0, 0))[0] for r in profiled)

    top = sorted({key for r in profiled for key in r.profile}, key=most, reverse=True)
    top = top[:PROFILE_TOP]
    header = " | ".join(f"{r.entry.label} ms (calls)" for r in profiled)
    lines = [
        f"Profile at batch 1 (self CPU time per operator and call count, mean of "
        f"{PROFILE_CALLS} calls, top {PROFILE_TOP} operators):",
        "",
        f"| operator | {header} |",
        "| --- |" + " ---: |" * len(profiled),
    ]
    for key in top:
        cells = " | ".join("{:.1f} ({})".format(*r.profile.get(key, (0.0, 0))) for r in profiled)
        lines.append(f"| `{key}` | {cells} |")
    totals_row = " | ".join(f"{sum(ms for ms, _ in r.profile.values()):.1f}" for r in profiled)
    lines += [f"| total | {totals_row} |", ""]
    return lines


def fcn_resnet50_note() -> list[str]:
    entry = torchvision_model("fcn_resnet50")
    try:
        parameters, gmac = size(entry)
    except ImportError as error:
        return [f"torchvision fcn_resnet50: not installed ({error})."]
    return [
        "### torchvision fcn_resnet50 (not timed)",
        "",
        f"{entry.label} ({parameters:,} parameters, {gmac:.1f} conv GMAC at batch 1) is not "
        "the FCN of Long et al.: a ResNet-50 dilated to output stride 8 with a 3x3 "
        "conv-BN-ReLU head (2048 to 512 channels), dropout, a 1x1 classifier and bilinear "
        "upsampling, no skip layers and no learned upsampling. It has nothing in common with "
        "our `fcn8s`, `fcn16s` and `fcn32s` (VGG16, fc6 and fc7 as convolutions, score "
        "layers on pool3 and pool4, transposed convolutions), which neither torchvision nor "
        "smp implements; it is listed for its size only.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target-s", type=float, default=15.0)
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--max-runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reference_speed.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    started = time.perf_counter()

    measured: list[tuple[Group, list[Result]]] = []
    for group in groups():
        results = [build(entry) for entry in group.entries]
        with torch.inference_mode():
            for batch in BATCHES:
                time_group(results, batch, args.target_s, args.min_runs, args.max_runs)
            if group.same_architecture:
                for r in results:
                    if r.model is not None:
                        profile_calls(r)
        for r in results:
            if r.model is not None:
                print(result_row(r), flush=True)
                r.model = None
        gc.collect()
        measured.append((group, results))
    load_after = os.getloadavg()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    minutes = (time.perf_counter() - started) / 60

    lines = [
        "# Speed of semseg models and of reference implementations (CPU, 360x480)",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {cpu_name()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs; torch.set_num_threads({args.threads}) "
        f"(torch.get_num_threads() = {torch.get_num_threads()}), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"- load average (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in load_before)} before, "
        f"{', '.join(f'{v:.1f}' for v in load_after)} after; the run took {minutes:.1f} min "
        f"(process CPU time: {usage.ru_utime / 60:.1f} min user, {usage.ru_stime / 60:.1f} min "
        "system)",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {version('torchvision')}, segmentation-models-pytorch "
        f"{version('segmentation-models-pytorch')}, timm {version('timm')}",
        "- latency: eval mode, torch.inference_mode, fp32, NCHW, random input, "
        f"{NUM_CLASSES} classes; one warm-up call, then median (fastest) of `runs` calls "
        f"(target {args.target_s:g} s per model, {args.min_runs} to {args.max_runs} calls); "
        "models of one group timed in turns",
        "- conv GMAC: multiply-accumulates of convolutions and matrix products at batch 1 "
        "(torch.utils.flop_counter on the meta device); other operators are not counted",
        "",
        "## Every semseg model at its defaults",
        "",
        *model_rows(measured),
        "",
        "## Against reference implementations",
        "",
        "Ratio = our median latency / theirs, in the same process, timed in turns.",
        "",
        *comparison_rows(measured),
        *fcn_resnet50_note(),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
