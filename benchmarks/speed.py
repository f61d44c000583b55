"""Speed of semseg on this CPU, in one run: engines x precisions per model against the matmul
roof, the real-time model end to end, scaling, top operators, training throughput, and the
reference implementations.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/speed.py [--sections roof engines ...]
        [--models mobile_unet unet16 deeplabv3plus_r18 | all] [--threads 2] [--budget-s 6]
        [--data ../shared/data/camvid] [--compile] [--out benchmarks/results/speed.md]

Sections (``--sections``, default all but ``references``; ``roof`` always runs first when a
section needs it):

- ``roof``: a 2048x2048 matmul in fp32, bf16 (and int8 with ``torch._int_mm``), and a 3x3
  64->64 channels-last convolution at 1x64x180x240 in fp32 and bf16: the GFLOP/s this CPU
  reaches on the best case of each precision, measured in this run.
- ``engines``: every engine at 1x3x360x480 per model (untrained weights, 11 classes), timed in
  turns: torch fp32 eager NCHW, torch fp32 as the ``Predictor`` ran it before issue 13 (BatchNorm
  folded, channels-last), torch bf16, ``torch.compile`` (``--compile``, with its compile
  time), ONNX Runtime fp32 and int8 (its static quantizer), OpenVINO fp32, bf16 and int8
  (NNCF, calibrated on ``--data``'s train images, else synthetic scenes). Ratios are paired
  (median over rounds of the engine's time over torch fp32's in the same round). FLOPs of
  convolutions and matrix products from ``torch.utils.flop_counter``; achieved GFLOP/s over
  the roof of the same precision; per model, where the time goes (dense and depthwise
  convolutions, timed per module with hooks, and everything else); and what ``auto`` picks.
- ``accuracy`` (with ``--checkpoint``, a trained CamVid model): CamVid val mIoU of every
  engine, and the fraction of pixels whose class equals fp32 PyTorch's, with the time per
  image of the whole split.
- ``realtime``: the real-time model (``mobile_unet``) end to end on ``--data``'s val PNGs at
  360x480, batch 1: decode, normalise, infer, softmax and argmax through the ``Predictor``
  (write nothing), in frames per second, per engine, with the time per stage.
- ``scaling``: the real-time model's latency against image size (360x480, 720x960,
  1080x1920 whole and tiled in 360x480 tiles), batch size and thread count.
- ``profile``: the real-time model's top operators, torch fp32 and bf16 (``torch.profiler``)
  and OpenVINO bf16 (its per-layer counters).
- ``training``: training steps per model as the ``Trainer`` takes them (batch 8, 180x240,
  AdamW, channels-last), fp32 against bf16 autocast, in images/s.
- ``references``: torchvision's and segmentation_models_pytorch's models in the separate
  environment of ``benchmarks/README.md``: fp32 eager against fp32 eager, and best against
  best (the reference exported to ONNX and run on ONNX Runtime and OpenVINO). The rebuild of
  LR-ASPP (the registry's ``lraspp_mobilenet_v3_large``) stands in for torchvision's where
  torchvision is missing.

The host is shared: every table names its rounds, and the load average is recorded (a busy
host is flagged). Compare ratios of one run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from harness import Report, markdown_table, milliseconds, paired_ratio, rounds_for, time_in_turns
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from semseg.checkpoint import Checkpoint
from semseg.data.io import read_image
from semseg.data.synthetic import render_scene
from semseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from semseg.hardware import describe_machine
from semseg.inference.auto import AutoModel, ProbeCache
from semseg.inference.backends import (
    Engine,
    ModelSource,
    TorchModel,
    backend_installed,
    build_engine,
    model_source,
)
from semseg.inference.export import export_onnx
from semseg.inference.fuse import FusedConv2d, fuse_conv_bn
from semseg.inference.predictor import Predictor
from semseg.inference.tta import InferenceOptions, class_indices
from semseg.labels import CAMVID
from semseg.models import create_model, list_models

HEIGHT, WIDTH = 360, 480
NUM_CLASSES = CAMVID.num_classes
HEADLINE = {
    "mobile_unet": ("mobile_unet", {}),
    "unet16": ("unet", {"base_channels": 16}),
    "deeplabv3plus_r18": ("deeplabv3plus", {"backbone": "resnet18"}),
}
"""The three models of issue 13's table: the real-time model, the CamVid recipe's U-Net, and
DeepLabV3+ on ResNet-18."""
SECTIONS = (
    "roof", "engines", "accuracy", "realtime", "scaling", "profile", "training", "references"
)  # fmt: skip
Run = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Models and engines


def model_specs(names: list[str]) -> dict[str, tuple[str, dict]]:
    if names == ["all"]:
        return {**HEADLINE, **{n: (n, {}) for n in list_models()}}
    return {n: HEADLINE.get(n, (n, {})) for n in names}


def random_checkpoint(name: str, arguments: dict, folder: Path) -> tuple[nn.Module, Path]:
    """An untrained model for CamVid's 11 classes (speed does not depend on the weights),
    saved as a checkpoint so that the exporter and the engines take it as a user's."""
    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES, **arguments).eval()
    path = folder / f"{name}-{abs(hash(str(arguments))) % 10**6}.pt"
    Checkpoint(
        model_name=name,
        model_args=arguments,
        labels=CAMVID,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        state_dict=model.state_dict(),
    ).save(path)
    return model, path


def calibration_images(data: Path | None, count: int) -> tuple[list[np.ndarray], str]:
    """``count`` training images of CamVid at ``data`` (spread over the split), else
    synthetic road scenes; and what they are."""
    train = sorted((data / "train").glob("*.png")) if data is not None else []
    if train:
        step = max(len(train) // count, 1)
        chosen = train[::step][:count]
        return [read_image(p) for p in chosen], f"{len(chosen)} CamVid train images"
    return [render_scene(s, HEIGHT, WIDTH)[0] for s in range(count)], "synthetic scenes"


@dataclass
class Engines:
    """The engines of one model, built: label -> callable, plus what could not be built."""

    runs: dict[str, Run]
    missing: dict[str, str]
    setup_s: dict[str, float]


def build_engines(
    model: nn.Module,
    checkpoint: Path,
    folder: Path,
    calibration: list[np.ndarray],
    threads: int,
    compile_: bool,
) -> Engines:
    machine = describe_machine()
    source = model_source(checkpoint)
    fp32_onnx = export_onnx(checkpoint, folder / f"{checkpoint.stem}.onnx")
    source = ModelSource(source.name, source.key, source.module, lambda: fp32_onnx)
    runs: dict[str, Run] = {}
    missing: dict[str, str] = {}
    setup: dict[str, float] = {}

    def add(label: str, build: Callable[[], Run]) -> None:
        start = time.perf_counter()
        try:
            runs[label] = build()
        except (ImportError, ValueError) as error:
            missing[label] = str(error).split(":")[0] if "pip install" in str(error) else str(error)
        setup[label] = time.perf_counter() - start

    def eager(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images)

    add("torch fp32 eager NCHW", lambda: eager)
    add("torch fp32 fused channels-last", lambda: build_engine(source, Engine("torch", "fp32")))
    add("torch bf16", lambda: build_engine(source, Engine("torch", "bf16")))
    if compile_:
        for precision in ("fp32", "bf16"):
            add(f"torch {precision} compiled", lambda p=precision: compiled(source, p, threads))
    add("onnxruntime fp32", lambda: build_engine(source, Engine("onnxruntime"), threads=threads))
    if backend_installed("onnxruntime"):
        int8 = export_onnx(
            checkpoint, folder / f"{checkpoint.stem}-ort-int8.onnx", calibration=calibration
        )
        add(
            "onnxruntime int8",
            lambda: build_engine(int8_source(int8), Engine("onnxruntime"), threads=threads),
        )
    add("openvino fp32", lambda: build_engine(source, Engine("openvino"), threads=threads))
    if machine.bf16_instructions:
        add(
            "openvino bf16",
            lambda: build_engine(source, Engine("openvino", "bf16"), threads=threads),
        )
    else:
        missing["openvino bf16"] = "no bf16 arithmetic on this CPU"
    if backend_installed("openvino") and not machine.openvino_int8:
        missing["openvino int8 (NNCF)"] = (
            "refused on CPUs without AMX-INT8 or AVX-VNNI: OpenVINO ran a trained U-Net's int8 "
            "file to 48% of fp32's labels on AMD EPYCs (Zen 2, and Zen 4 with AVX-512 VNNI)"
        )
    elif backend_installed("openvino"):
        try:
            nncf = export_onnx(
                checkpoint,
                folder / f"{checkpoint.stem}-nncf-int8.onnx",
                calibration=calibration,
                quantizer="nncf",
            )
            add(
                "openvino int8 (NNCF)",
                lambda: build_engine(int8_source(nncf), Engine("openvino"), threads=threads),
            )
        except ImportError as error:
            missing["openvino int8 (NNCF)"] = str(error)
    return Engines(runs, missing, setup)


def int8_source(path: Path) -> ModelSource:
    return ModelSource(str(path), "int8", None, lambda: path, int8=True)


def compiled(source: ModelSource, precision: str, threads: int) -> Run:
    """A compiled torch engine, compiled here by one call at 1x3x360x480 (the compile time
    is the setup of its row)."""
    run = build_engine(source, Engine("torch", precision, compiled=True), threads=threads)
    run(torch.zeros(1, 3, HEIGHT, WIDTH))
    return run


def conv_flops(model: nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """(dense, depthwise) FLOPs of the model's convolutions at ``images`` (2 per
    multiply-accumulate), from the convolutions' output sizes."""
    totals = {"dense": 0.0, "depthwise": 0.0}

    def hook(module: nn.Conv2d, _: tuple, output: torch.Tensor) -> None:
        per_output = 2 * (module.in_channels // module.groups) * np.prod(module.kernel_size)
        kind = "depthwise" if module.groups > 1 and module.groups == module.in_channels else "dense"
        totals[kind] += float(output.numel() * per_output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model(images)
    for handle in handles:
        handle.remove()
    return totals["dense"], totals["depthwise"]


def conv_time_split(run: TorchModel, images: torch.Tensor, calls: int = 3) -> dict[str, float]:
    """Seconds per call in dense and depthwise convolutions (timed per module with hooks;
    PyTorch runs the CPU kernels synchronously), fastest of ``calls``."""
    per_call: list[dict[str, float]] = []
    current = {"dense": 0.0, "depthwise": 0.0}
    started: dict[int, float] = {}

    def before(module: nn.Module, _: tuple) -> None:
        started[id(module)] = time.perf_counter()

    def after(module: nn.Conv2d | FusedConv2d, _: tuple, __: torch.Tensor) -> None:
        # weight (out, in / groups, kH, kW): depthwise has one input channel per group
        depthwise = module.groups > 1 and module.weight.shape[1] == 1
        current["depthwise" if depthwise else "dense"] += time.perf_counter() - started[id(module)]

    convs = [m for m in run.module.modules() if isinstance(m, (nn.Conv2d, FusedConv2d))]
    handles = [m.register_forward_pre_hook(before) for m in convs]
    handles += [m.register_forward_hook(after) for m in convs]
    for _ in range(calls):
        current.update(dense=0.0, depthwise=0.0)
        run(images)
        per_call.append(dict(current))
    for handle in handles:
        handle.remove()
    return min(per_call, key=lambda c: c["dense"] + c["depthwise"])


# ---------------------------------------------------------------------------------------------
# Sections


def roof_section(report: Report, budget_s: float) -> dict[str, float]:
    """GFLOP/s of the best case per precision: returns precision -> matmul GFLOP/s."""
    a32, b32 = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    a8 = torch.randint(-128, 127, (2048, 2048), dtype=torch.int8)
    b8 = torch.randint(-128, 127, (2048, 2048), dtype=torch.int8)
    conv32 = nn.Conv2d(64, 64, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    conv16 = nn.Conv2d(64, 64, 3, padding=1, bias=False).to(torch.bfloat16)
    conv16 = conv16.to(memory_format=torch.channels_last)
    x32 = torch.randn(1, 64, 180, 240).contiguous(memory_format=torch.channels_last)
    x16 = x32.bfloat16()
    calls = {
        "matmul fp32": lambda: a32 @ b32,
        "matmul bf16": lambda: a16 @ b16,
        "matmul int8 (torch._int_mm)": lambda: torch._int_mm(a8, b8),
        "conv 3x3 64->64 fp32": lambda: conv32(x32),
        "conv 3x3 64->64 bf16": lambda: conv16(x16),
    }
    flops = {
        "matmul": 2 * 2048**3,
        "conv": 2 * 64 * 64 * 9 * 180 * 240,
    }
    with torch.inference_mode():
        times = time_in_turns(calls, warmup=2, rounds=30, budget_s=budget_s)
    rows, roof = [], {}
    for name, values in times.items():
        rate = flops[name.split()[0]] / min(values) / 1e9
        rows.append([name, milliseconds(values), f"{rate:.0f}", len(values)])
        if name.startswith("matmul"):
            roof[name.split()[1]] = rate
    report.section(
        "Roof: the best case of each precision",
        "2048x2048 matrix product; 3x3 convolution 64->64 channels at 1x64x180x240, "
        "channels-last. GFLOP/s from the fastest call (2 FLOPs per multiply-accumulate).",
    )
    report.table(["kernel", "median (fastest) ms", "GFLOP/s", "rounds"], rows)
    return roof


def engines_section(
    report: Report, specs: dict, roof: dict[str, float], args: argparse.Namespace, folder: Path
) -> dict[str, dict[str, float]]:
    """Returns model -> engine -> fastest seconds at 1x3x360x480."""
    calibration, calibration_text = calibration_images(args.data, 8)
    report.section(
        "Engines x precisions at 1x3x360x480, batch 1",
        f"Untrained weights, 11 classes, random input; int8 calibrated on {calibration_text}. "
        "Each cell: median (fastest) ms over the rounds, engines timed in turns; ratio: median "
        "over rounds of the engine's time over `torch fp32 fused channels-last`'s in the same "
        "round (below 1 is faster). GFLOP/s: convolution and matmul FLOPs "
        "(torch.utils.flop_counter) over the fastest call; roof: the matmul of the same "
        "precision above (int8 against the int8 matmul).",
    )
    fastest: dict[str, dict[str, float]] = {}
    for label, (name, arguments) in specs.items():
        model, checkpoint = random_checkpoint(name, arguments, folder)
        images = torch.randn(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(images)
        flops = counter.get_total_flops()
        engines = build_engines(
            model,
            checkpoint,
            folder,
            calibration,
            args.threads,
            args.compile and label == "mobile_unet",
        )
        calls = {n: (lambda r=r, x=images: r(x)) for n, r in engines.runs.items()}
        start = time.perf_counter()
        for call in calls.values():
            call()
        round_s = time.perf_counter() - start
        rounds = rounds_for(round_s, args.budget_s)
        times = time_in_turns(calls, warmup=1, rounds=rounds)
        baseline = times["torch fp32 fused channels-last"]
        rows = []
        for engine, values in times.items():
            precision = "int8" if "int8" in engine else ("bf16" if "bf16" in engine else "fp32")
            rate = flops / min(values) / 1e9
            roof_rate = roof.get(precision)
            share = f"{100 * rate / roof_rate:.0f}%" if roof_rate else "-"
            setup = f"{engines.setup_s[engine]:.1f}"
            rows.append(
                [
                    engine,
                    milliseconds(values),
                    f"{paired_ratio(values, baseline):.2f}",
                    f"{rate:.0f}",
                    share,
                    setup,
                ]
            )
        rows += [
            [engine, f"not run: {why}", "", "", "", ""] for engine, why in engines.missing.items()
        ]
        report.add(
            "",
            f"### {label}: `{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})`",
            "",
            f"{million_parameters(model):.2f} M parameters, {flops / 1e9:.2f} GFLOP per image "
            f"(convolutions and matrix products); {rounds} rounds.",
        )
        report.table(
            [
                "engine",
                "median (fastest) ms",
                "ratio to torch fp32",
                "GFLOP/s",
                "of roof",
                "setup s",
            ],
            rows,
        )
        report.add(*where_time_goes(model, engines, images, times, roof))
        report.add(*auto_choice(checkpoint, images, args.threads))
        fastest[label] = {engine: min(values) for engine, values in times.items()}
    return fastest


def where_time_goes(
    model: nn.Module, engines: Engines, images: torch.Tensor, times: dict, roof: dict
) -> list[str]:
    """Dense and depthwise convolutions against everything else, torch fp32 and bf16."""
    dense_flops, depthwise_flops = conv_flops(model, images)
    rows = []
    for engine in ("torch fp32 fused channels-last", "torch bf16"):
        run = engines.runs.get(engine)
        if not isinstance(run, TorchModel):
            continue
        split = conv_time_split(run, images)
        total = min(times[engine])
        other = max(total - split["dense"] - split["depthwise"], 0.0)
        precision = "bf16" if "bf16" in engine else "fp32"
        dense_rate = dense_flops / max(split["dense"], 1e-9) / 1e9
        depthwise_rate = depthwise_flops / max(split["depthwise"], 1e-9) / 1e9
        depthwise = f"{1000 * split['depthwise']:.1f} ({depthwise_rate:.0f} GFLOP/s)"
        rows.append(
            [
                engine,
                f"{1000 * split['dense']:.1f} ({dense_rate:.0f} GFLOP/s, "
                f"{100 * dense_rate / roof[precision]:.0f}% of roof)",
                depthwise if depthwise_flops else "-",
                f"{1000 * other:.1f} ({100 * other / total:.0f}% of the call)",
            ]
        )
    share = 100 * depthwise_flops / max(dense_flops + depthwise_flops, 1)
    return [
        f"Where the time goes (per-module hooks on the convolutions, an activation or residual "
        f"sum fused into one counting as its convolution's; 'other' is the rest of the fastest "
        f"call: activations, additions, pooling, upsampling, padding, layout conversions). "
        f"Depthwise convolutions are {share:.1f}% of the convolution FLOPs.",
        "",
        *markdown_table(["engine", "dense conv ms", "depthwise conv ms", "other ms"], rows),
        "",
    ]


def auto_choice(checkpoint: Path, images: torch.Tensor, threads: int) -> list[str]:
    """What ``--backend auto --precision auto`` picks for this model (fresh probe)."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        model = AutoModel(
            model_source(checkpoint),
            threads=threads,
            report=lines.append,
            cache=ProbeCache(Path(folder) / "probe.json"),
        )
        start = time.perf_counter()
        model(images)
        spent = time.perf_counter() - start
    return [
        f"`auto` (fresh probe, {spent:.1f} s including building the candidates): "
        f"{lines[-1].removeprefix('auto: ')}",
        "",
    ]


def accuracy_section(report: Report, args: argparse.Namespace, folder: Path) -> None:
    from semseg.config import DataConfig
    from semseg.engine.build import build_dataset
    from semseg.engine.metrics import ConfusionMatrix

    if args.checkpoint is None or args.data is None:
        report.section("CamVid val accuracy per engine", "No --checkpoint or no CamVid: skipped.")
        return
    stored = Checkpoint.load(args.checkpoint)
    labels, mean, std = stored.labels, stored.mean, stored.std
    dataset = build_dataset(DataConfig(format="camvid", root=str(args.data)), "val")
    calibration, calibration_text = calibration_images(args.data, 16)
    source = model_source(args.checkpoint)
    engines = build_engines(source.module(), args.checkpoint, folder, calibration, args.threads,
                            False)  # fmt: skip
    del engines.runs["torch fp32 eager NCHW"]
    stride = int(getattr(source.module(), "output_stride", 1))
    predictors = {
        name: Predictor(run, labels, mean, std, output_stride=stride)
        for name, run in engines.runs.items()
    }
    confusion = {name: ConfusionMatrix(labels.num_classes) for name in predictors}
    same = dict.fromkeys(predictors, 0.0)
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    pixels = 0
    count = min(args.val_images, len(dataset))
    for index in range(count):
        image, mask = dataset.read(index)
        predicted = {}
        for name, predictor in predictors.items():
            start = time.perf_counter()
            predicted[name] = predictor.predict(image).labels
            seconds[name].append(time.perf_counter() - start)
            confusion[name].update(torch.from_numpy(predicted[name])[None].long(),
                                   torch.from_numpy(mask)[None].long())  # fmt: skip
        reference = predicted["torch fp32 fused channels-last"]
        for name, labels_map in predicted.items():
            same[name] += float((labels_map == reference).sum())
        pixels += reference.size
    baseline = seconds["torch fp32 fused channels-last"]
    rows = []
    for name in predictors:
        miou = confusion[name].compute().miou
        ratio = paired_ratio(seconds[name], baseline)
        rows.append([name, f"{100 * miou:.2f}", f"{100 * same[name] / pixels:.2f}%",
                     milliseconds(seconds[name]), f"{ratio:.2f}"])  # fmt: skip
    training = stored.training or {"epoch": "?", "best_miou": float("nan")}
    report.section(
        "CamVid val accuracy per engine",
        f"`{args.checkpoint}`: {stored.model_name} {stored.model_args}, "
        f"{training['epoch']} epochs (best val mIoU {training['best_miou']:.4f} "
        f"at training). The first {count} of {len(dataset)} val images through "
        "`Predictor.predict`, engines in "
        f"turns per image; int8 calibrated on {calibration_text}. Agreement: pixels whose class "
        "equals torch fp32's; time: median (fastest) ms per image.",
    )
    report.table(["engine", "mIoU %", "agreement with fp32", "ms per image", "ratio"], rows)


def realtime_section(report: Report, args: argparse.Namespace, folder: Path) -> None:
    val = sorted((args.data / "val").glob("*.png")) if args.data is not None else []
    frames = val[: args.frames]
    if not frames:
        report.section("Real-time model end to end", "No CamVid val images: skipped.")
        return
    calibration, calibration_text = calibration_images(args.data, 8)
    model, checkpoint = random_checkpoint("mobile_unet", {}, folder)
    engines = build_engines(model, checkpoint, folder, calibration, args.threads, False)
    del engines.runs["torch fp32 eager NCHW"]
    stride = int(model.output_stride)
    predictors = {
        name: Predictor(run, CAMVID, IMAGENET_MEAN, IMAGENET_STD, output_stride=stride)
        for name, run in engines.runs.items()
    }
    chosen: list[str] = []
    with tempfile.TemporaryDirectory() as cache:
        probes = ProbeCache(Path(cache) / "probe.json")
        auto = AutoModel(model_source(checkpoint), threads=args.threads, images=len(frames),
                         report=chosen.append, cache=probes)  # fmt: skip
        predictors["auto"] = Predictor(auto, CAMVID, IMAGENET_MEAN, IMAGENET_STD,
                                       output_stride=stride)  # fmt: skip
        for predictor in predictors.values():  # first calls: OpenVINO's, auto's probe
            predictor.predict(read_image(frames[0]))
    engines.runs["auto"] = auto

    def frame_loop(predictor: Predictor) -> Callable[[], object]:
        def run() -> None:
            for path in frames:
                predictor.predict(read_image(path), probabilities=False)

        return run

    calls = {name: frame_loop(p) for name, p in predictors.items()}
    times = time_in_turns(calls, warmup=0, rounds=3)
    rows = []
    stages = {}
    for name, values in times.items():
        fps = len(frames) / min(values)
        stages[name] = stage_times(engines.runs[name], predictors[name], frames[:10])
        s = stages[name]
        rows.append(
            [
                name,
                f"{fps:.1f}",
                f"{len(frames) / statistics.median(values):.1f}",
                f"{1000 * s['decode']:.1f}",
                f"{1000 * s['normalise']:.1f}",
                f"{1000 * s['infer']:.1f}",
                f"{1000 * s['argmax']:.1f}",
                f"{1000 * s['softmax_argmax']:.1f}",
            ]
        )
    report.section(
        "Real-time model end to end: mobile_unet at 360x480, batch 1",
        f"{len(frames)} CamVid val PNGs per round, 3 rounds, engines in turns: `read_image` "
        "(PNG decode), then `Predictor.predict(image, probabilities=False)` (normalise, infer "
        "with the model padding itself to its stride, argmax of the logits, crop), writing "
        "nothing. FPS from the fastest (median) round. Stage times: median over 10 frames "
        "timed stage by stage; the last column is what asking for the probabilities as well "
        f"(softmax, then argmax) costs instead of the argmax. int8 calibrated on "
        f"{calibration_text}. `auto` is what `semseg predict` runs for {len(frames)} images "
        f"({chosen[-1].removeprefix('auto: ')}). Untrained weights: speed does not depend on "
        "them; the trained model's accuracy per engine is the accuracy section's (with "
        "`--checkpoint`) and the README's.",
    )
    report.table(
        [
            "engine",
            "FPS (fastest round)",
            "FPS (median round)",
            "decode ms",
            "normalise ms",
            "infer ms",
            "argmax ms",
            "softmax+argmax ms",
        ],
        rows,
    )


def stage_times(run: Run, predictor: Predictor, frames: list[Path]) -> dict[str, float]:
    samples: dict[str, list[float]] = {
        k: [] for k in ("decode", "normalise", "infer", "softmax_argmax", "argmax")
    }
    for path in frames:
        t0 = time.perf_counter()
        image = read_image(path)
        t1 = time.perf_counter()
        batch = to_tensor(image, predictor.mean, predictor.std)[None]
        pad_h, pad_w = (
            -batch.shape[2] % predictor.output_stride,
            -batch.shape[3] % predictor.output_stride,
        )
        batch = F.pad(batch, (0, pad_w, 0, pad_h), mode="reflect")
        t2 = time.perf_counter()
        with torch.inference_mode():
            logits = run(batch)
            t3 = time.perf_counter()
            probabilities = logits.float().softmax(1)
            class_indices(probabilities).byte().numpy()
            probabilities.numpy()
            t4 = time.perf_counter()
            class_indices(logits).byte().numpy()
            t5 = time.perf_counter()
        for key, value in zip(samples, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            samples[key].append(value)
    return {key: statistics.median(values) for key, values in samples.items()}


def scaling_section(report: Report, args: argparse.Namespace, folder: Path) -> None:
    model, checkpoint = random_checkpoint("mobile_unet", {}, folder)
    source = model_source(checkpoint)
    machine = describe_machine()
    fast = backend_installed("openvino") and machine.bf16_instructions
    best = Engine("openvino", "bf16") if fast else Engine("torch", "bf16")
    engines = {"torch fp32": Engine("torch"), str(best): best}
    stride = int(model.output_stride)
    rng = np.random.default_rng(0)
    built = {n: build_engine(source, e, threads=args.threads) for n, e in engines.items()}

    def predictor(run: Run, options: InferenceOptions | None = None) -> Predictor:
        return Predictor(run, CAMVID, IMAGENET_MEAN, IMAGENET_STD, options=options,
                         output_stride=stride)  # fmt: skip

    rows = []
    sizes = [(360, 480, None), (720, 960, None), (1080, 1920, None), (1080, 1920, (360, 480))]
    for height, width, tile in sizes:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        options = InferenceOptions(tile_size=tile, tile_batch_size=4)
        predictors = {name: predictor(run, options) for name, run in built.items()}
        calls = {n: (lambda p=p, x=image: p.predict(x)) for n, p in predictors.items()}
        round_s = 0.1 * (height * width) / (HEIGHT * WIDTH)
        times = time_in_turns(calls, rounds=rounds_for(round_s, args.budget_s / 2, 3, 10))
        what = f"{height}x{width} " + (f"in {tile[0]}x{tile[1]} tiles" if tile else "whole")
        ratio = paired_ratio(times[str(best)], times["torch fp32"])
        rows.append([what, *(milliseconds(times[n]) for n in built), f"{ratio:.2f}"])
    report.section(
        "Scaling of the real-time model",
        "`Predictor.predict` on a random uint8 image (normalise, pad, infer, softmax, argmax), "
        f"median (fastest) ms, {args.threads} threads; tiles overlap by 0.25, 4 per forward "
        f"pass; ratio: {best} over torch fp32, paired.",
    )
    report.table(["input", *(f"{n} ms" for n in built), "ratio"], rows)

    rows = []
    for batch in (1, 2, 4):
        images = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(batch)]
        predictors = {name: predictor(run) for name, run in built.items()}
        calls = {n: (lambda p=p, x=images: p.predict_batch(x)) for n, p in predictors.items()}
        times = time_in_turns(calls, rounds=3)
        rows.append([batch, *(f"{1000 * min(times[n]) / batch:.1f}" for n in built)])
    report.add("Batch size at 360x480: fastest ms per image.")
    report.table(["batch", *(f"{n} ms/image" for n in built)], rows)

    rows = []
    images = torch.randn(1, 3, 384, 480)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        runs = {n: build_engine(source, e, threads=threads) for n, e in engines.items()}
        times = time_in_turns({n: (lambda r=r: r(images)) for n, r in runs.items()}, rounds=5)
        rows.append([threads, *(milliseconds(times[n]) for n in runs)])
    torch.set_num_threads(args.threads)
    report.add(
        "Threads (torch.set_num_threads, OpenVINO's INFERENCE_NUM_THREADS), the engine alone "
        "at 1x3x384x480: median (fastest) ms."
    )
    report.table(["threads", *(f"{n} ms" for n in engines)], rows)


def profile_section(report: Report, args: argparse.Namespace, folder: Path, top: int = 10) -> None:
    _, checkpoint = random_checkpoint("mobile_unet", {}, folder)
    source = model_source(checkpoint)
    images = torch.randn(1, 3, 384, 480)
    profiles = {}
    for precision in ("fp32", "bf16"):
        run = build_engine(source, Engine("torch", precision))
        run(images)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                run(images)
        profiles[f"torch {precision}"] = {
            e.key: (e.self_cpu_time_total / 1000 / 5, e.count // 5) for e in prof.key_averages()
        }
    keys = sorted(
        {k for p in profiles.values() for k in p},
        key=lambda k: -max(p.get(k, (0, 0))[0] for p in profiles.values()),
    )[:top]
    rows = [
        [f"`{k}`", *("{:.2f} ({})".format(*p.get(k, (0.0, 0))) for p in profiles.values())]
        for k in keys
    ]
    rows.append(["total", *(f"{sum(ms for ms, _ in p.values()):.2f}" for p in profiles.values())])
    report.section(
        "Top operators of the real-time model",
        "mobile_unet at 1x3x384x480 (360x480 padded to its stride), self CPU ms per call and "
        "calls per call, mean of 5 calls (torch.profiler).",
    )
    report.table(["operator", *(f"{n} ms (calls)" for n in profiles)], rows)
    if backend_installed("openvino") and describe_machine().bf16_instructions:
        report.add(
            *openvino_profile(
                export_onnx(checkpoint, folder / "profile.onnx"), images, args.threads, top
            )
        )


def openvino_profile(path: Path, images: torch.Tensor, threads: int, top: int) -> list[str]:
    import openvino

    core = openvino.Core()
    compiled = core.compile_model(
        core.read_model(str(path)),
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            "PERF_COUNT": True,
        },
    )
    request = compiled.create_infer_request()
    array = images.numpy()
    request.infer({0: array})
    totals: dict[str, list[float]] = {}
    for _ in range(5):
        request.infer({0: array})
        for info in request.get_profiling_info():
            key = f"{info.node_type} ({info.exec_type})"
            entry = totals.setdefault(key, [0.0, 0])
            entry[0] += info.real_time.total_seconds() * 1000 / 5
            entry[1] += 1 / 5
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])
    rows = [[f"`{k}`", f"{ms:.2f}", f"{count:.0f}"] for k, (ms, count) in ranked[:top]]
    rows.append(["total", f"{sum(ms for ms, _ in totals.values()):.2f}", ""])
    return [
        "OpenVINO bf16, same input: time per layer type and kernel (`PERF_COUNT`), ms per "
        "call, mean of 5 calls.",
        "",
        *markdown_table(["layer (kernel)", "ms", "layers"], rows),
        "",
    ]


def training_section(report: Report, args: argparse.Namespace, names: list[str]) -> None:
    from semseg.config import load_recipe
    from semseg.engine.trainer import Trainer

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label in names:
            name, arguments = model_specs([label])[label]
            trainers = {}
            for precision in ("fp32", "bf16"):
                overrides = [
                    f"model.name={name}",
                    *(f"model.{k}={v}" for k, v in arguments.items()),
                    "data.synthetic_train_size=8",
                    "data.synthetic_val_size=1",
                    "data.synthetic_image_size=[180,240]",
                    "augment.crop_size=[180,240]",
                    "train.batch_size=8",
                    "train.optimizer=adamw",
                    "train.channels_last=true",
                    f"train.precision={precision}",
                ]
                trainers[precision] = Trainer(
                    load_recipe("demo", overrides),
                    Path(folder) / f"{label}-{precision}",
                    progress=False,
                )
            trainer = trainers["fp32"]
            batch = [trainer.train_set[i] for i in range(8)]
            images = torch.stack([b[0] for b in batch])
            masks = torch.stack([b[1] for b in batch])
            calls = {
                p: (lambda t=t, x=images, y=masks: t._train_step(0, 0, x, y))
                for p, t in trainers.items()
            }
            start = time.perf_counter()
            for call in calls.values():
                call()
            rounds = rounds_for(time.perf_counter() - start, args.budget_s, 2, 8)
            times = time_in_turns(calls, warmup=0, rounds=rounds)
            rows.append(
                [
                    label,
                    milliseconds(times["fp32"]),
                    milliseconds(times["bf16"]),
                    f"{8 / min(times['fp32']):.1f}",
                    f"{8 / min(times['bf16']):.1f}",
                    f"{paired_ratio(times['bf16'], times['fp32']):.2f}",
                    rounds,
                ]
            )
            del trainers
    report.section(
        "Training throughput, fp32 against bf16",
        "`Trainer._train_step` (forward under autocast, float32 loss, backward, AdamW on "
        "float32 weights), batch 8 of 180x240 synthetic scenes, channels-last, 11 or 8 classes; "
        "the two precisions timed in turns. images/s from the fastest step.",
    )
    report.table(
        [
            "model",
            "fp32 step median (fastest) ms",
            "bf16 step ms",
            "fp32 images/s",
            "bf16 images/s",
            "bf16 / fp32 time",
            "rounds",
        ],
        rows,
    )


# ---------------------------------------------------------------------------------------------
# References (torchvision, smp): runnable in the separate environment of benchmarks/README.md


class DictOutput(nn.Module):
    """A torchvision segmentation model returning its ``"out"`` logits as a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


class Padded(nn.Module):
    """Zero-pads at the bottom and right to multiples of ``multiple`` (what smp models
    require), runs ``model`` and crops the logits back."""

    def __init__(self, model: nn.Module, multiple: int) -> None:
        super().__init__()
        self.model, self.multiple = model, multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        logits = self.model(F.pad(x, (0, -width % self.multiple, 0, -height % self.multiple)))
        return logits[..., :height, :width]


def reference_pairs() -> list[tuple[str, Callable[[], nn.Module], Callable[[], nn.Module], bool]]:
    """(title, ours, theirs, same architecture) of every comparison."""

    def torchvision(name: str) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            from torchvision.models import segmentation

            constructor = getattr(segmentation, name)
            return DictOutput(
                constructor(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
            )

        return build

    def smp(
        architecture: str, encoder: str, multiple: int, **kwargs: object
    ) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            import segmentation_models_pytorch

            model = getattr(segmentation_models_pytorch, architecture)(
                encoder_name=encoder, encoder_weights=None, classes=NUM_CLASSES, **kwargs
            )
            return Padded(model, multiple)

        return build

    def ours(name: str, **kwargs: object) -> Callable[[], nn.Module]:
        return lambda: create_model(name, NUM_CLASSES, **kwargs)

    return [
        (
            "DeepLabV3 ResNet-50 OS8 vs torchvision deeplabv3_resnet50",
            ours("deeplabv3", backbone="resnet50", output_stride=8, separable=False),
            torchvision("deeplabv3_resnet50"),
            True,
        ),
        (
            "DeepLabV3+ ResNet-50 OS16 vs smp DeepLabV3Plus",
            ours("deeplabv3plus"),
            smp("DeepLabV3Plus", "resnet50", 16, decoder_atrous_rates=(6, 12, 18)),
            True,
        ),
        (
            "DeepLabV3+ ResNet-34 OS16 vs smp DeepLabV3Plus",
            ours("deeplabv3plus", backbone="resnet34"),
            smp("DeepLabV3Plus", "resnet34", 16, decoder_atrous_rates=(6, 12, 18)),
            True,
        ),
        (
            "LR-ASPP MobileNetV3-Large vs torchvision lraspp_mobilenet_v3_large",
            lraspp_rebuild,
            torchvision("lraspp_mobilenet_v3_large"),
            True,
        ),
        (
            "mobile_unet vs torchvision lraspp_mobilenet_v3_large",
            ours("mobile_unet"),
            torchvision("lraspp_mobilenet_v3_large"),
            False,
        ),
        (
            "mobile_unet vs the LR-ASPP rebuild",
            ours("mobile_unet"),
            lraspp_rebuild,
            False,
        ),
        (
            "unet (16 channels) vs smp Unet ResNet-18",
            ours("unet", base_channels=16),
            smp("Unet", "resnet18", 32),
            False,
        ),
    ]


def lraspp_rebuild() -> nn.Module:
    """semseg's ``lraspp_mobilenet_v3_large``: torchvision's layers on our MobileNetV3."""
    return create_model("lraspp_mobilenet_v3_large", NUM_CLASSES)


def raw_onnx_runs(model: nn.Module, threads: int) -> dict[str, Run]:
    """A model exported to ONNX (no semseg metadata) and run by ONNX Runtime fp32 and
    OpenVINO fp32 / bf16, where installed: a reference's best deployment."""
    buffer = io.BytesIO()
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 64, 64),),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": dynamic, "logits": dynamic},
            opset_version=17,
        )
    data = buffer.getvalue()
    runs: dict[str, Run] = {}
    if backend_installed("onnxruntime"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        runs["onnxruntime fp32"] = lambda x: torch.from_numpy(
            session.run(None, {"image": x.numpy()})[0]
        )
    if backend_installed("openvino"):
        import openvino

        core = openvino.Core()
        precisions = ("f32", "bf16") if describe_machine().bf16_instructions else ("f32",)
        for hint in precisions:
            compiled_model = core.compile_model(
                core.read_model(data, b""),
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": hint,
                    "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_NUM_THREADS": threads,
                },
            )
            request = compiled_model.create_infer_request()
            runs[f"openvino {'fp32' if hint == 'f32' else 'bf16'}"] = lambda x, r=request: (
                torch.from_numpy(np.asarray(r.infer({0: x.numpy()})[0]))
            )
    return runs


def references_section(report: Report, args: argparse.Namespace) -> None:
    images = torch.randn(1, 3, HEIGHT, WIDTH)
    rows, missing = [], []
    for title, build_ours, build_theirs, same in reference_pairs():
        torch.manual_seed(0)
        try:
            theirs = build_theirs().eval()
        except ImportError as error:
            missing.append(f"- {title}: not run, {error} (see benchmarks/README.md)")
            continue
        mine = build_ours().eval()
        folded = fuse_conv_bn(mine).to(memory_format=torch.channels_last)
        our_runs = {
            "ours torch fp32 eager": _eager(mine),
            "ours torch fp32 folded channels-last": _eager(folded, torch.channels_last),
            "ours torch fp32 fused channels-last": TorchModel(mine),
            "ours torch bf16": TorchModel(mine, "bf16"),
            **{f"ours {k}": v for k, v in raw_onnx_runs(mine, args.threads).items()},
        }
        their_runs = {
            "theirs torch fp32 eager": _eager(theirs),
            **{f"theirs {k}": v for k, v in raw_onnx_runs(theirs, args.threads).items()},
        }
        calls = {n: (lambda r=r: r(images)) for n, r in {**our_runs, **their_runs}.items()}
        times = time_in_turns(calls, warmup=1, rounds=rounds_for(2.0, args.budget_s, 3, 10))
        best_ours = min(our_runs, key=lambda n: min(times[n]))
        best_theirs = min(their_runs, key=lambda n: min(times[n]))
        fused, plain = times["ours torch fp32 fused channels-last"], times["ours torch fp32 eager"]
        folded_only = times["ours torch fp32 folded channels-last"]
        reference = times["theirs torch fp32 eager"]
        rows.append(
            [
                title + ("" if same else " (different architectures: a yardstick)"),
                f"{million_parameters(mine):.2f} / {million_parameters(theirs):.2f}",
                milliseconds(fused),
                milliseconds(reference),
                f"{paired_ratio(fused, reference):.2f}",
                f"{paired_ratio(plain, reference):.2f}",
                f"{paired_ratio(fused, folded_only):.2f}",
                f"{best_ours.removeprefix('ours ')} {1000 * min(times[best_ours]):.1f}",
                f"{best_theirs.removeprefix('theirs ')} {1000 * min(times[best_theirs]):.1f}",
                f"{paired_ratio(times[best_ours], times[best_theirs]):.2f}",
            ]
        )
    report.section(
        "Against reference implementations",
        "1x3x360x480, 11 classes, untrained (`weights=None`); each pair timed in turns. Eager "
        "ratio: ours as semseg runs fp32 (BatchNorm folded, activations and residual sums in "
        "the convolutions' oneDNN calls, channels-last) over theirs in plain fp32 eager; code "
        "ratio: our plain eager over theirs (the same work, same layout); activation fusion: "
        "ours as semseg runs over ours folded and channels-last but unfused. Best: the fastest "
        "engine of each side, the reference exported to ONNX and run on ONNX Runtime and "
        "OpenVINO in its best precision; ratio over theirs, paired.",
    )
    report.table(
        [
            "pair",
            "params ours / theirs (M)",
            "ours fp32 ms",
            "theirs fp32 eager ms",
            "eager ratio",
            "code ratio",
            "activation fusion",
            "our best (ms)",
            "their best (ms)",
            "best ratio",
        ],
        rows,
    )
    if missing:
        report.add(*missing)


def million_parameters(model: nn.Module) -> float:
    """Parameters of ``model`` in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def _eager(model: nn.Module, memory_format: torch.memory_format = torch.contiguous_format) -> Run:
    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images.contiguous(memory_format=memory_format))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=[s for s in SECTIONS if s != "references"],
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(HEADLINE),
        help="model labels for engines (names of HEADLINE or the registry, or all)",
    )
    parser.add_argument("--train-models", nargs="+", default=list(HEADLINE))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=6.0, help="seconds of rounds per table")
    parser.add_argument("--frames", type=int, default=30, help="val images per real-time round")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/camvid"))
    parser.add_argument("--compile", action="store_true", help="time torch.compile (mobile_unet)")
    parser.add_argument("--checkpoint", type=Path, help="a trained CamVid checkpoint (accuracy)")
    parser.add_argument("--val-images", type=int, default=101, help="val images for accuracy")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.md"))
    args = parser.parse_args()
    if args.data is not None and not (args.data / "val").is_dir():
        args.data = None
    torch.set_num_threads(args.threads)
    report = Report(
        "Speed on this CPU: engines, precisions, roofline, real time, scaling, training",
        args.threads,
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        roof = (
            roof_section(report, args.budget_s / 2)
            if {"roof", "engines"} & set(args.sections)
            else {}
        )
        if "engines" in args.sections:
            engines_section(report, model_specs(args.models), roof, args, folder)
        if "accuracy" in args.sections:
            accuracy_section(report, args, folder)
        if "realtime" in args.sections:
            realtime_section(report, args, folder)
        if "scaling" in args.sections:
            scaling_section(report, args, folder)
        if "profile" in args.sections:
            profile_section(report, args, folder)
        if "training" in args.sections:
            training_section(report, args, args.train_models)
        if "references" in args.sections:
            references_section(report, args)
    report.write(args.out)


if __name__ == "__main__":
    main()
