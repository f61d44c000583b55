"""Inference speed per model and backend at 1x3x360x480 and 4x3x360x480 on this machine.

    .venv/bin/python benchmarks/inference.py [--models unet16 unet64 encoder_decoder]
        [--threads 2] [--repeats 3] [--checkpoint runs/demo/best.pt] [--out FILE]

Backends, all float32:

- ``torch no_grad``: eager PyTorch, NCHW, under ``torch.no_grad``;
- ``torch``: the same under ``torch.inference_mode``;
- ``torch channels_last``: model and input in NHWC memory format;
- ``torch fused``: Conv2d + BatchNorm2d pairs folded into one convolution
  (:func:`semseg.fuse.fuse_conv_bn`);
- ``torch fused channels_last``: both (what :class:`semseg.inference.predictor.Predictor` runs);
- ``onnxruntime``: the file ``semseg export`` writes, on ONNX Runtime's CPU provider.

Then, for ``unet16`` at batch 1, the fused channels-last model and ONNX Runtime with 1 and 2
threads. With ``--checkpoint`` (a trained model), its float32 ONNX file against the int8 one
``semseg export --quantize`` writes (calibrated on 8 synthetic scenes): speed, mIoU on 8 other
synthetic 360x480 scenes and the fraction of pixels whose top class agrees.

The machine may be shared: backends are timed in turns (one run of each, repeated) so load
from other processes spreads over all of them, and each cell gives the images/s of the fastest
run and, in brackets, of the median run, over ``--repeats`` runs after one warm-up run. The
load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from semseg.checkpoint import load_checkpoint, save_checkpoint
from semseg.data.synthetic import render_scene
from semseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from semseg.engine.metrics import ConfusionMatrix
from semseg.inference.export import export_onnx
from semseg.inference.fuse import fuse_conv_bn
from semseg.inference.onnx_model import OnnxModel
from semseg.labels import CAMVID
from semseg.models import create_model

HEIGHT, WIDTH = 360, 480
BATCHES = (1, 4)
MODELS = {
    "unet16": ("unet", {"base_channels": 16}),
    "unet64": ("unet", {}),
    "encoder_decoder": ("encoder_decoder", {}),
}
Run = Callable[[torch.Tensor], torch.Tensor]


def torch_backend(model: nn.Module, channels_last: bool, inference_mode: bool = True) -> Run:
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    context = torch.inference_mode if inference_mode else torch.no_grad

    def run(images: torch.Tensor) -> torch.Tensor:
        with context():
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            return model(images)

    return run


def torch_backends(model: nn.Module) -> dict[str, Run]:
    fused = fuse_conv_bn(model)
    return {
        "torch no_grad": torch_backend(model, channels_last=False, inference_mode=False),
        "torch": torch_backend(model, channels_last=False),
        "torch channels_last": torch_backend(model, channels_last=True),
        "torch fused": torch_backend(fused, channels_last=False),
        "torch fused channels_last": torch_backend(fused, channels_last=True),
    }


def timings(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` runs of each, timed in turns after one warm-up run of each."""
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def rate(images: int, seconds: list[float]) -> str:
    """'fastest (median)' images per second."""
    return f"{images / min(seconds):.2f} ({images / statistics.median(seconds):.2f})"


def speed_rows(label: str, runs: dict[str, Run], repeats: int, baseline: str) -> list[str]:
    """Table rows: images/s at each batch size, and batch-1 speed relative to ``baseline``."""
    seconds = {}
    for batch in BATCHES:
        images = torch.randn(batch, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
        calls = {name: (lambda run=run, x=images: run(x)) for name, run in runs.items()}
        seconds[batch] = timings(calls, repeats)
    reference = min(seconds[1][baseline])
    rows = []
    for name in runs:
        rows.append(
            f"| {label} | {name} | {rate(1, seconds[1][name])} | {rate(4, seconds[4][name])} "
            f"| {reference / min(seconds[1][name]):.2f}x |"
        )
        print(rows[-1], flush=True)
    return rows


def random_checkpoint(name: str, arguments: dict, folder: Path) -> tuple[nn.Module, Path]:
    """An untrained model for CamVid's 11 classes, saved as a checkpoint for the exporter."""
    torch.manual_seed(0)
    model = create_model(name, CAMVID.num_classes, **arguments).eval()
    path = folder / f"{name}.pt"
    payload = {
        "model": {"name": name, "arguments": arguments, "state_dict": model.state_dict()},
        "labels": CAMVID.to_dict(),
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    }
    save_checkpoint(path, payload)
    return model, path


def thread_rows(folder: Path, repeats: int) -> list[str]:
    model, checkpoint = random_checkpoint(*MODELS["unet16"], folder)
    fused = torch_backend(fuse_conv_bn(model), channels_last=True)
    onnx_path = export_onnx(checkpoint, folder / "threads.onnx")
    images = torch.randn(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        session = OnnxModel(onnx_path, threads)
        calls = {"torch": lambda: fused(images), "ort": lambda s=session: s(images)}
        seconds = timings(calls, repeats)
        rows.append(f"| {threads} | {rate(1, seconds['torch'])} | {rate(1, seconds['ort'])} |")
        print(rows[-1], flush=True)
    return rows


def scenes(seeds: range, mean: list[float], std: list[float]) -> tuple[torch.Tensor, np.ndarray]:
    """(N, 3, 360, 480) normalised synthetic scenes and their (N, 360, 480) label maps."""
    pairs = [render_scene(seed, HEIGHT, WIDTH) for seed in seeds]
    images = torch.stack([to_tensor(image, mean, std) for image, _ in pairs])
    return images, np.stack([mask for _, mask in pairs])


def int8_rows(checkpoint: Path, folder: Path, repeats: int) -> list[str]:
    stored = load_checkpoint(checkpoint)
    norm = stored["normalisation"]
    calibration = [render_scene(seed, HEIGHT, WIDTH)[0] for seed in range(100, 108)]
    runs = {
        "onnxruntime float32": OnnxModel(export_onnx(checkpoint, folder / "fp32.onnx")),
        "onnxruntime int8": OnnxModel(
            export_onnx(checkpoint, folder / "int8.onnx", calibration=calibration)
        ),
    }
    images, masks = scenes(range(1000, 1008), norm["mean"], norm["std"])
    classes = len(stored["labels"]["names"])
    predicted = {name: [run(x[None]).argmax(1) for x in images] for name, run in runs.items()}
    miou = {}
    for name, maps in predicted.items():
        confusion = ConfusionMatrix(classes)
        for labels, mask in zip(maps, masks, strict=True):
            confusion.update(labels, torch.from_numpy(mask)[None].long())
        miou[name] = confusion.compute().miou
    same = [(a == b).float().mean() for a, b in zip(*predicted.values(), strict=True)]
    rows = speed_rows(checkpoint.name, runs, repeats, baseline="onnxruntime float32")
    return [
        *(f"{row} {miou[name]:.4f} |" for name, row in zip(runs, rows, strict=True)),
        f"\nTop class of int8 equals float32 on {float(np.mean(same)):.2%} of the pixels.",
    ]


def describe(checkpoint: Path) -> str:
    stored = load_checkpoint(checkpoint)
    model, training = stored["model"], stored["training"]
    data = stored["recipe"]["data"]
    return (
        f"{model['name']} {model['arguments']}, {training['epoch']} epochs on {data['format']} "
        f"data, validation mIoU {training['best_miou']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint for int8 rows")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/inference.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    header = "| model | backend | images/s at 1x3x360x480 | images/s at 4x3x360x480 |"
    lines = [
        "# Inference speed by backend at 360x480",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, {platform.system()} {platform.release()}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}",
        f"- each cell: images/s of the fastest (median) of {args.repeats} runs after a warm-up,",
        "  backends timed in turns; untrained models with 11 classes on random input",
        "",
        f"{header} batch 1 vs torch |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for label in args.models:
            name, arguments = MODELS[label]
            model, checkpoint = random_checkpoint(name, arguments, Path(folder))
            onnx_path = export_onnx(checkpoint, Path(folder) / f"{label}.onnx")
            runs = {**torch_backends(model), "onnxruntime": OnnxModel(onnx_path, args.threads)}
            lines += speed_rows(label, runs, args.repeats, baseline="torch")
        lines += [
            "",
            "Threads, unet16 at 1x3x360x480, images/s:",
            "",
            "| threads | torch fused channels_last | onnxruntime |",
            "| ---: | ---: | ---: |",
            *thread_rows(Path(folder), args.repeats),
        ]
        torch.set_num_threads(args.threads)
        if args.checkpoint is not None:
            lines += [
                "",
                f"Int8 (`semseg export --quantize`), trained checkpoint `{args.checkpoint}` "
                f"({describe(args.checkpoint)}):",
                "",
                f"{header} batch 1 vs float32 | mIoU, 8 synthetic scenes |",
                "| --- | --- | ---: | ---: | ---: | ---: |",
                *int8_rows(args.checkpoint, Path(folder), args.repeats),
            ]
    load_after = os.getloadavg()[0]
    lines.append(
        f"\nLoad average (1 min): {load_before:.2f} at the start, {load_after:.2f} at the end."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
