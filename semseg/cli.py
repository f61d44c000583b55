"""The ``semseg`` command line: demo, train, evaluate, predict, export, drivable, stats, models."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from semseg.config import Recipe, load_recipe

# Errors a user can cause (bad file, bad key, bad value) are shown as one line without a
# traceback; SEMSEG_DEBUG=1 shows the traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError, KeyError)


def _friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    from semseg.optional import MissingDependencyError

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (*USER_ERRORS, MissingDependencyError) as error:
            if os.environ.get("SEMSEG_DEBUG"):
                raise
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise click.ClickException(str(message)) from None

    return wrapper


@click.group()
@click.version_option(package_name="semseg")
def main() -> None:
    """Semantic segmentation with convolutional networks."""


def _recipe_with_data(
    recipe: str, overrides: tuple[str, ...], data: str | None, data_format: str | None
) -> Recipe:
    extra = list(overrides)
    if data is not None:
        extra += [f"data.root={data}", f"data.format={data_format or 'null'}"]
    elif data_format is not None:
        extra.append(f"data.format={data_format}")
    return load_recipe(recipe, extra)


_data_option = click.option(
    "--data", type=click.Path(file_okay=False), help="Dataset folder (default: synthetic)."
)
_format_option = click.option(
    "--format",
    "data_format",
    type=click.Choice(["camvid", "folder", "voc", "cityscapes", "synthetic"]),
    help="Dataset layout (default: detected from the folder).",
)
_overrides_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value."
)


@main.command()
@click.option("--recipe", required=True, help="Recipe file, or a shipped recipe name (demo).")
@_data_option
@_format_option
@click.option("--out", type=click.Path(file_okay=False), help="Run folder [runs/<recipe>].")
@_overrides_option
@click.argument("more_overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt if present.")
@click.option(
    "--device",
    help="torch device (default: cuda if available, else cpu; cuda:LOCAL_RANK under torchrun).",
)
@_friendly_errors
def train(
    recipe: str,
    data: str | None,
    data_format: str | None,
    out: str | None,
    overrides: tuple[str, ...],
    more_overrides: tuple[str, ...],
    resume: bool,
    device: str | None,
) -> None:
    """Train a model; keeps OUT/best.pt (val mIoU) and OUT/last.pt.

    Under torchrun (torchrun --nproc_per_node=N -m semseg train ...) every process trains with
    DistributedDataParallel: train.batch_size is per process, rank 0 writes OUT.
    """
    from semseg.engine import distributed
    from semseg.engine.trainer import Trainer

    config = _recipe_with_data(recipe, overrides + more_overrides, data, data_format)
    out_dir = Path(out or Path("runs") / Path(recipe).stem)
    with distributed.process_group(device) as process_device:
        trainer = Trainer(config, out_dir, resume=resume, device=str(process_device))
        if trainer.is_main:
            click.echo(f"training precision: {trainer.precision} ({trainer.precision_reason})")
        evaluation = trainer.fit()
    if not trainer.is_main:
        return
    if evaluation is not None:
        from semseg.report import scores_table

        click.echo(scores_table(evaluation.to_dict(trainer.labels)))
    click.echo(f"run folder: {out_dir}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False))
@_data_option
@_format_option
@click.option("--split", default="val", show_default=True, help="Split to score (val, test...).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write scores here.")
@click.option(
    "--batch-size", default=1, show_default=True, help="Images per forward pass (per process)."
)
@click.option("--no-boundary", is_flag=True, help="Skip the boundary F1 score.")
@click.option("--device", help="torch device (cuda:LOCAL_RANK under torchrun).")
@_friendly_errors
def evaluate(
    checkpoint: str,
    data: str | None,
    data_format: str | None,
    split: str,
    json_path: str | None,
    batch_size: int,
    no_boundary: bool,
    device: str | None,
) -> None:
    """Score a checkpoint: per-class IoU, mIoU, accuracies, fwIoU, boundary F1.

    Under torchrun each process scores every WORLD_SIZE-th image and the counts are summed:
    the scores equal a single process's; rank 0 prints and writes them.
    """
    from semseg.checkpoint import load_checkpoint
    from semseg.engine import distributed
    from semseg.engine.build import build_dataset
    from semseg.engine.evaluate import evaluate_dataset
    from semseg.inference.predictor import Predictor
    from semseg.report import scores_table

    with distributed.process_group(device) as process_device:
        predictor = Predictor.from_checkpoint(checkpoint, str(process_device))
        data_config = load_recipe(base=load_checkpoint(checkpoint)["recipe"]).data
        if data is not None:
            data_config = data_config.model_copy(update={"root": data, "format": data_format})
        elif data_format is not None:
            data_config = data_config.model_copy(update={"format": data_format})
        dataset = build_dataset(data_config, split)
        if dataset.labels.names != predictor.labels.names:
            raise click.ClickException(
                f"{checkpoint}: model classes {list(predictor.labels.names)} do not match the "
                f"dataset's {list(dataset.labels.names)}"
            )
        result = evaluate_dataset(
            predictor.model,
            dataset,
            predictor.labels.num_classes,
            batch_size=batch_size,
            boundary=not no_boundary,
            progress=True,
            description=f"evaluate {split}",
        ).to_dict(predictor.labels)
        main_process = distributed.is_main_process()
    if not main_process:
        return
    click.echo(scores_table(result))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
        click.echo(f"scores written to {json_path}")


def _scales(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None


def _inference_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Tiling, padding and test-time augmentation options (see InferenceOptions), threads."""
    options = [
        click.option("--tile-size", nargs=2, type=int, metavar="H W",
                     help="Sliding-window tiles of H x W pixels (default: the whole image)."),
        click.option("--overlap", default=0.25, show_default=True,
                     help="Fraction of a tile shared with its neighbour, 0..1."),
        click.option("--window", type=click.Choice(["gaussian", "uniform"]), default="gaussian",
                     show_default=True, help="Weights of tile logits where tiles overlap."),
        click.option("--tile-batch-size", default=4, show_default=True,
                     help="Tiles per forward pass (bounds memory)."),
        click.option("--pad-mode", type=click.Choice(["reflect", "zeros"]), default="reflect",
                     show_default=True, help="Padding up to the model's output stride."),
        click.option("--hflip", is_flag=True, help="Average with the mirrored image's result."),
        click.option("--scales", default="1.0", show_default=True, callback=_scales,
                     help="Comma-separated image scales whose probabilities are averaged."),
        click.option("--threads", type=click.IntRange(min=1),
                     help="CPU threads (default: one per core; 1 can be faster on a busy CPU)."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _engine_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--backend and --precision (see semseg.inference.auto), both auto by default."""
    from semseg.inference.backends import BACKEND_CHOICES
    from semseg.inference.precision import PRECISION_CHOICES

    options = [
        click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto",
                     show_default=True,
                     help="Inference engine; auto measures the installed ones on the first "
                     "image (once per machine, model and size; cached) and takes the fastest."),
        click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto",
                     show_default=True,
                     help="Arithmetic: bf16 (autocast; softmax, TTA and scores stay fp32) is a "
                     "candidate of auto on CPUs with AVX-512 BF16 or AMX."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _load_predictor(
    checkpoint: str, device: str | None, inference: dict[str, Any], images: int | None
) -> Any:
    from semseg.inference.predictor import load_predictor
    from semseg.inference.tta import InferenceOptions

    threads, backend, precision = (inference.pop(k) for k in ("threads", "backend", "precision"))
    options = InferenceOptions(**{**inference, "tile_size": inference["tile_size"] or None})
    return load_predictor(checkpoint, device, options, threads, backend, precision, images,
                          report=lambda line: click.echo(line, err=True))  # fmt: skip


def _report(failures: list[tuple[Path, str]], total: int, out: str) -> None:
    for _, reason in failures:  # each reason names its file
        click.echo(f"failed: {reason}", err=True)
    click.echo(f"{total - len(failures)} of {total} inputs segmented into {out}")
    if failures:
        names = ", ".join(str(path) for path, _ in failures)
        raise click.ClickException(f"{len(failures)} of {total} inputs failed: {names}")


_model_file_option = click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False),
    help="A .pt checkpoint (PyTorch) or a .onnx file from `semseg export` (ONNX Runtime).",
)
_batch_option = click.option(
    "--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
    help="Images of one size per forward pass.",
)  # fmt: skip


@main.command()
@_model_file_option
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--alpha", default=0.5, show_default=True, help="Overlay opacity, 0..1.")
@_batch_option
@click.option(
    "--probabilities",
    is_flag=True,
    help="Also write STEM_probabilities.npz: float16 (C, H, W) class probabilities.",
)
@click.option(
    "--confidence",
    is_flag=True,
    help="Also write STEM_confidence.png: top-class probability as 8-bit grey.",
)
@_inference_options
@_engine_options
@click.option("--device", help="torch device (PyTorch checkpoints).")
@_friendly_errors
def predict(
    checkpoint: str,
    inputs: tuple[str, ...],
    out: str,
    alpha: float,
    batch_size: int,
    probabilities: bool,
    confidence: bool,
    device: str | None,
    **inference: Any,
) -> None:
    """Segment images, folders, globs and videos (.mp4 .avi .mov .mkv).

    Per image: STEM_labels.png (index PNG) and STEM_overlay.png; per video STEM_overlay.EXT
    at the input's frame rate.
    """
    from semseg.inference.files import expand_inputs, predict_files

    paths = expand_inputs(inputs)
    predictor = _load_predictor(checkpoint, device, inference, len(paths))
    failures = predict_files(
        predictor, paths, Path(out), alpha, batch_size, probabilities, confidence
    )
    _report(failures, len(paths), out)


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False))
@click.option("--format", "export_format", type=click.Choice(["onnx"]), default="onnx",
              show_default=True)  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset version.")
@click.option(
    "--quantize",
    is_flag=True,
    help="Int8 quantization calibrated on --calibration images: ONNX Runtime's static "
    "quantizer, or NNCF's with --backend openvino.",
)
@click.option(
    "--calibration",
    multiple=True,
    metavar="INPUT",
    help="Images, folders or globs for --quantize [default: the checkpoint's training split].",
)
@click.option(
    "--backend",
    type=click.Choice(["onnxruntime", "openvino"]),
    default="onnxruntime",
    show_default=True,
    help="Runtime the file is checked on (and whose quantizer --quantize uses).",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="Precision of the check run (bf16: OpenVINO only).",
)
@click.option(
    "--calibration-size",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Calibrate on at most this many images.",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Compare with PyTorch on a 360x480 synthetic road scene.",
)
@_friendly_errors
def export(
    checkpoint: str,
    export_format: str,
    out: str,
    opset: int,
    quantize: bool,
    calibration: tuple[str, ...],
    calibration_size: int,
    check: bool,
    backend: str,
    precision: str,
) -> None:
    """Export a checkpoint to ONNX (dynamic batch, height, width; classes, colours and
    normalisation in the file's metadata). Run it with `semseg predict --checkpoint OUT`."""
    from semseg.inference.export import compare_onnx, export_onnx

    if calibration and not quantize:
        raise click.UsageError("--calibration is used only with --quantize")
    images = _calibration_images(checkpoint, calibration, calibration_size) if quantize else None
    quantizer = "nncf" if backend == "openvino" else "onnxruntime"
    export_onnx(checkpoint, out, opset, images, quantizer)
    kind = (
        f"int8 {export_format} ({quantizer}, calibrated on {len(images)} images)"
        if images
        else export_format
    )
    click.echo(f"{kind} model written to {out}")
    if check:
        from semseg.data.synthetic import render_scene

        parity = compare_onnx(checkpoint, out, render_scene(0, 360, 480)[0], backend, precision)
        click.echo(
            f"{backend} {precision} vs PyTorch fp32 on 360x480: max |logit difference| "
            f"{parity.max_abs_difference:.2e}, argmax agreement {parity.argmax_agreement:.4%}"
        )


def _calibration_images(checkpoint: str, inputs: tuple[str, ...], count: int) -> list[Any]:
    """The first ``count`` images of ``inputs``, or images spread over the checkpoint's
    training split (not the validation split the model is scored on)."""
    from semseg.data.io import read_image

    if inputs:
        from semseg.inference.files import expand_inputs

        return [read_image(path) for path in expand_inputs(inputs)[:count]]
    from semseg.checkpoint import load_checkpoint
    from semseg.engine.build import build_dataset

    data = load_recipe(base=load_checkpoint(checkpoint)["recipe"]).data
    try:
        dataset = build_dataset(data, data.train_split)
    except (ValueError, OSError) as error:
        raise ValueError(
            f"cannot read {checkpoint}'s training images for calibration ({error}); "
            "pass --calibration IMAGES"
        ) from None
    step = max(len(dataset) // count, 1)
    return [dataset.read(index)[0] for index in range(0, len(dataset), step)[:count]]


@main.command()
@_model_file_option
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--classes", help="Drivable classes: comma-separated names or train ids "
              "(default: the class named Road).")  # fmt: skip
@click.option("--alpha", default=0.4, show_default=True, help="Tint opacity, 0..1.")
@_batch_option
@_inference_options
@_engine_options
@click.option("--device", help="torch device (PyTorch checkpoints).")
@_friendly_errors
def drivable(
    checkpoint: str,
    inputs: tuple[str, ...],
    out: str,
    classes: str | None,
    alpha: float,
    batch_size: int,
    device: str | None,
    **inference: Any,
) -> None:
    """Drivable space of images: STEM_drivable.png (mask), STEM_drivable.json (per-column
    boundary, polygon, area) and STEM_drivable_overlay.png."""
    from semseg.inference.drivable_files import drivable_files
    from semseg.inference.files import expand_inputs

    paths = expand_inputs(inputs)
    predictor = _load_predictor(checkpoint, device, inference, len(paths))
    chosen = [c.strip() for c in classes.split(",")] if classes is not None else None
    failures = drivable_files(predictor, paths, Path(out), chosen, alpha, batch_size)
    _report(failures, len(paths), out)


@main.command()
@_data_option
@_format_option
@click.option("--split", default="train", show_default=True)
@_friendly_errors
def stats(data: str | None, data_format: str | None, split: str) -> None:
    """Class pixel frequencies and median-frequency class weights (both definitions)."""
    from semseg.config import DataConfig
    from semseg.data.stats import class_stats
    from semseg.engine.build import build_dataset

    if data is None:
        config = DataConfig(format=data_format or "synthetic")
    else:
        config = DataConfig(format=data_format, root=data)
    dataset = build_dataset(config, split)
    result = class_stats(dataset)
    eigen = result.median_frequency_weights("present_images")
    pixels = result.median_frequency_weights("all_pixels")
    names = dataset.labels.names
    width = max(len(n) for n in names) + 2
    click.echo(f"{len(dataset)} images in {split}")
    header = f"{'class':<{width}}{'pixels %':>10}{'images':>8}{'w (images)':>12}{'w (pixels)':>12}"
    click.echo(header)
    for i, name in enumerate(names):
        click.echo(
            f"{name:<{width}}{100 * result.frequency[i]:>10.2f}{result.image_counts[i]:>8d}"
            f"{eigen[i]:>12.4f}{pixels[i]:>12.4f}"
        )
    click.echo("\nIn a recipe: loss: {class_weights: median_frequency} computes the first column;")
    click.echo("or paste: loss: {class_weights: [" + ", ".join(f"{w:.4f}" for w in eigen) + "]}")


@main.command()
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    help="Also measure what --backend auto --precision auto picks for this model.",
)
@click.option(
    "--size",
    nargs=2,
    type=int,
    default=(360, 480),
    show_default=True,
    metavar="H W",
    help="Image size of the measurement.",
)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: all).")
@_friendly_errors
def info(checkpoint: str | None, size: tuple[int, int], threads: int | None) -> None:
    """This machine: CPU, the instruction sets that decide speed, threads, runtime versions,
    and what auto picks for precision and backend."""
    import numpy as np
    import torch

    from semseg.engine.trainer import training_precision
    from semseg.hardware import describe_machine
    from semseg.inference.auto import candidate_engines
    from semseg.inference.backends import ModelSource

    if threads is not None:
        torch.set_num_threads(threads)
    machine = describe_machine()
    for line in machine.lines():
        click.echo(line)
    cpu = torch.device("cpu")
    for kind, has_module in (("checkpoints", True), ("ONNX files", False)):
        source = ModelSource(kind, kind, (lambda: None) if has_module else None, Path)
        engines = candidate_engines(machine, "auto", "auto", source, cpu)
        click.echo(f"auto candidates for {kind}: {', '.join(map(str, engines))}")
    click.echo(
        "auto inference choice: the fastest candidate measured on the first image (once per "
        "machine, model and size; cached)"
    )
    precision, reason = training_precision("auto", cpu, machine)
    click.echo(f"auto training precision (train.precision=auto): {precision} ({reason})")
    if checkpoint is not None:
        from semseg.inference.predictor import load_predictor

        lines: list[str] = []
        predictor = load_predictor(checkpoint, "cpu", threads=threads, backend="auto",
                                   precision="auto", report=lines.append)  # fmt: skip
        predictor.predict(np.zeros((*size, 3), dtype=np.uint8))
        click.echo(f"for {checkpoint} at {size[0]}x{size[1]}: {lines[-1]}")


@main.command()
def models() -> None:
    """List the model names a recipe's model.name accepts."""
    from semseg.models import MODELS, list_models

    for name in list_models():
        doc = (MODELS[name].__doc__ or "").strip().splitlines()
        click.echo(f"{name:<22}{doc[0] if doc else ''}")


@main.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@_overrides_option
@click.option("--device", help="torch device.")
@_friendly_errors
def demo(out: str, overrides: tuple[str, ...], device: str | None) -> None:
    """Train the demo recipe on synthetic road scenes, evaluate it, write pictures."""
    from semseg.engine.demo import run_demo

    run_demo(Path(out), overrides, device)


if __name__ == "__main__":
    sys.exit(main())
