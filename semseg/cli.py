"""The ``semseg`` command line: demo, train, evaluate, predict, export, drivable, serve, check,
stats, models."""

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
from semseg.data.io import DEFAULT_MAX_PIXELS
from semseg.inference.drivable import HOLE_FRACTION, ISLAND_FRACTION

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
    # albumentations asks PyPI for a newer version on import; the command line runs offline.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


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


def _max_pixels_option(
    default: int | None, default_text: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--max-pixels", default=default, show_default=default_text or True,
        type=click.IntRange(min=1),
        help="Refuse images whose header claims more pixels, before decoding them "
        "(decompression bombs).",
    )  # fmt: skip


@main.command()
@click.option("--recipe", required=True, help="Recipe file, or a shipped recipe name (demo).")
@_data_option
@_format_option
@click.option("--out", type=click.Path(file_okay=False), help="Run folder [runs/<recipe>].")
@_overrides_option
@click.argument("more_overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt if present.")
@_max_pixels_option(None, f"the recipe's data.max_pixels, {DEFAULT_MAX_PIXELS}")
@click.option(
    "--holdout",
    multiple=True,
    metavar="GROUP",
    help="Validate on this group of frames (CamVid: a drive, e.g. 0006R0) and train on the "
    "other frames of the train and val splits (data.holdout_groups); repeatable.",
)
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
    max_pixels: int | None,
    holdout: tuple[str, ...],
    device: str | None,
) -> None:
    """Train a model; keeps OUT/best.pt (val mIoU) and OUT/last.pt.

    Under torchrun (torchrun --nproc_per_node=N -m semseg train ...) every process trains with
    DistributedDataParallel: train.batch_size is per process, rank 0 writes OUT.
    """
    from semseg.engine import distributed
    from semseg.engine.trainer import Trainer

    limit = (f"data.max_pixels={max_pixels}",) if max_pixels is not None else ()
    extra = overrides + more_overrides + limit
    if holdout:
        extra += ("data.holdout_groups=[" + ", ".join(holdout) + "]",)
    config = _recipe_with_data(recipe, extra, data, data_format)
    run_name = "-".join([Path(recipe).stem, *(["holdout", *holdout] if holdout else [])])
    out_dir = Path(out or Path("runs") / run_name)
    with distributed.process_group(device) as process_device:
        trainer = Trainer(config, out_dir, resume=resume, device=str(process_device))
        if trainer.is_main:
            click.echo(f"training precision: {trainer.precision} ({trainer.precision_reason})")
        if trainer.is_main and trainer.encoder_report is not None:
            source = config.model.arguments["encoder_weights"]
            click.echo(f"encoder weights from {source}: {trainer.encoder_report}")
        evaluation = trainer.fit()
    if not trainer.is_main:
        return
    if evaluation is not None:
        from semseg.report import scores_table

        click.echo(scores_table(evaluation.to_dict(trainer.labels)))
    click.echo(f"run folder: {out_dir}")


def _scales(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None


def _inference_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Tiling and test-time augmentation options (see InferenceOptions), threads."""
    options = [
        click.option("--tile-size", nargs=2, type=int, metavar="H W",
                     help="Sliding-window tiles of H x W pixels (default: the whole image)."),
        click.option("--overlap", default=0.25, show_default=True,
                     help="Fraction of a tile shared with its neighbour, 0..1."),
        click.option("--window", type=click.Choice(["gaussian", "uniform"]), default="gaussian",
                     show_default=True, help="Weights of tile logits where tiles overlap."),
        click.option("--tile-batch-size", default=4, show_default=True,
                     help="Tiles per forward pass (bounds memory)."),
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


def _file_inference_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """What every command that segments files takes: the pixel limit, the inference and
    engine options and the torch device."""
    command = click.option("--device", help="torch device (PyTorch checkpoints).")(command)
    return _max_pixels_option(DEFAULT_MAX_PIXELS)(_inference_options(_engine_options(command)))


def _load_predictor(
    checkpoint: Any, device: str | None, inference: dict[str, Any], images: int | None = None
) -> Any:
    """The predictor of ``checkpoint`` (a path or a loaded Checkpoint) with the command's
    inference options and engine (``--backend``, ``--precision``: what ``auto`` chose for
    ``images`` images is said on stderr); ``--threads`` sets PyTorch's process-wide thread
    count (said on stderr) and ONNX Runtime's or OpenVINO's for the model."""
    import torch

    from semseg.checkpoint import Checkpoint
    from semseg.inference.predictor import Predictor
    from semseg.inference.tta import InferenceOptions

    inference = dict(inference)
    threads = inference.pop("threads")
    backend, precision = inference.pop("backend", None), inference.pop("precision", "fp32")
    options = InferenceOptions(**{**inference, "tile_size": inference["tile_size"] or None})
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint.load(checkpoint)
    if threads is not None and not checkpoint.is_onnx:
        torch.set_num_threads(threads)
        click.echo(f"PyTorch threads set to {threads}", err=True)
    return Predictor.from_checkpoint(
        checkpoint, device, options, threads, backend, precision, images, report=_say_beside_bars
    )


def _say_beside_bars(line: str) -> None:
    """One line on stderr on a line of its own: ``auto`` decides on the first image, while
    the progress bar is drawn, and tqdm clears the bar for the line and redraws it."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


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
@_data_option
@_format_option
@click.option(
    "--split",
    help="Split to score (val, test...) [default: the recipe's validation frames: the held-out "
    "groups of data.holdout_groups, else data.val_split].",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write scores here.")
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False),
    help="Write per_class_scores.png and confusion_matrix.png into this folder.",
)
@click.option(
    "--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
    help="Images of one size per forward pass (per process).",
)  # fmt: skip
@click.option("--no-boundary", is_flag=True, help="Skip the boundary F1 score.")
@_max_pixels_option(None, "the checkpoint's data.max_pixels")
@_inference_options
@_engine_options
@click.option("--device", help="torch device (cuda:LOCAL_RANK under torchrun).")
@_friendly_errors
def evaluate(
    checkpoint: str,
    data: str | None,
    data_format: str | None,
    split: str | None,
    json_path: str | None,
    plots_dir: str | None,
    batch_size: int,
    no_boundary: bool,
    max_pixels: int | None,
    device: str | None,
    **inference: Any,
) -> None:
    """Score a checkpoint (.pt) or an exported .onnx file: per-class IoU, mIoU, accuracies,
    fwIoU, boundary F1.

    The model runs exactly as `semseg predict` runs it, with the same inference options, so
    the scores are those of the label maps predict writes. The dataset is the one the model
    was trained on (from its recipe) unless --data / --format say otherwise; --data alone
    keeps the recipe's format. Under torchrun each process scores every WORLD_SIZE-th image
    and the counts are summed: rank 0 prints and writes the scores.
    """
    from semseg.checkpoint import Checkpoint
    from semseg.engine import distributed
    from semseg.engine.build import build_dataset, build_datasets
    from semseg.engine.evaluate import evaluate as score
    from semseg.report import scores_table

    model_file = Checkpoint.load(checkpoint)
    data_config = _evaluation_data(model_file, data, data_format)
    if max_pixels is not None:
        data_config = data_config.model_copy(update={"max_pixels": max_pixels})
    with distributed.process_group(device) as process_device:
        if split is None:
            dataset = build_datasets(data_config).val
            held_out = data_config.holdout_groups
            split = f"held-out {', '.join(held_out)}" if held_out else data_config.val_split
        else:
            dataset = build_dataset(data_config, split)
        predictor = _load_predictor(model_file, str(process_device), inference, len(dataset))
        try:
            evaluation = score(
                predictor, dataset, batch_size=batch_size, workers=data_config.workers,
                boundary=not no_boundary, progress=True, description=f"evaluate {split}",
            )  # fmt: skip
        except ValueError as error:
            raise click.ClickException(f"{checkpoint}: {error}") from None
        result = evaluation.to_dict(predictor.labels)
        main_process = distributed.is_main_process()
    if not main_process:
        return
    click.echo(scores_table(result))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
        click.echo(f"scores written to {json_path}")
    if plots_dir:
        from semseg.plots import plot_scores

        written = plot_scores(result, plots_dir, f"{Path(checkpoint).name} on {split}")
        click.echo(f"plots written to {', '.join(map(str, written))}")


def _evaluation_data(checkpoint: Any, data: str | None, data_format: str | None) -> Any:
    """The data section to score on: the checkpoint's recipe's, with ``--data`` replacing the
    root (keeping the recipe's format unless ``--format`` names one)."""
    from semseg.config import DataConfig

    if checkpoint.recipe is not None:
        config = load_recipe(base=checkpoint.recipe).data
    elif data is None:
        raise click.UsageError(
            f"{checkpoint.source} carries no recipe (an ONNX file exported by an older semseg): "
            "give --data (and --format)"
        )
    else:
        config = DataConfig(root=data, format=data_format)
    update: dict[str, Any] = {}
    if data is not None:
        update["root"] = data
    if data_format is not None:
        update["format"] = data_format
    return config.model_copy(update=update) if update else config


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
@_file_inference_options
@_friendly_errors
def predict(
    checkpoint: str,
    inputs: tuple[str, ...],
    out: str,
    alpha: float,
    batch_size: int,
    probabilities: bool,
    confidence: bool,
    max_pixels: int,
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
        predictor, paths, Path(out), alpha, batch_size, probabilities, confidence,
        max_pixels=max_pixels,
    )  # fmt: skip
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
    from semseg.checkpoint import Checkpoint
    from semseg.inference.export import compare_onnx, export_onnx

    if calibration and not quantize:
        raise click.UsageError("--calibration is used only with --quantize")
    model_file = Checkpoint.load(checkpoint)
    images = _calibration_images(model_file, calibration, calibration_size) if quantize else None
    quantizer = "nncf" if backend == "openvino" else "onnxruntime"
    export_onnx(model_file, out, opset, images, quantizer)
    kind = (
        f"int8 {export_format} ({quantizer}, calibrated on {len(images)} images)"
        if images
        else export_format
    )
    click.echo(f"{kind} model written to {out}")
    if check:
        from semseg.data.synthetic import render_scene
        from semseg.hardware import describe_machine
        from semseg.inference.backends import Engine, build_engine, model_source

        machine = describe_machine()
        if backend == "openvino" and images and not machine.openvino_int8:
            click.echo(
                f"OpenVINO does not run int8 files on {machine.cpu_model} (no AMX-INT8 or "
                "AVX-VNNI); checking with onnxruntime instead"
            )
            backend = "onnxruntime"
        engine = build_engine(model_source(out), Engine(backend, precision))
        parity = compare_onnx(model_file, out, render_scene(0, 360, 480)[0], engine)
        click.echo(
            f"{backend} {precision} vs PyTorch fp32 on 360x480: max |logit difference| "
            f"{parity.max_abs_difference:.2e}, argmax agreement {parity.argmax_agreement:.4%}"
        )


def _calibration_images(checkpoint: Any, inputs: tuple[str, ...], count: int) -> list[Any]:
    """The first ``count`` images of ``inputs``, or images spread over the checkpoint's
    training split (not the validation split the model is scored on)."""
    from semseg.data.io import read_image

    if inputs:
        from semseg.inference.files import expand_inputs

        return [read_image(path) for path in expand_inputs(inputs)[:count]]
    from semseg.engine.build import build_dataset

    data = load_recipe(base=checkpoint.recipe).data
    try:
        dataset = build_dataset(data, data.train_split)
    except (ValueError, OSError) as error:
        raise ValueError(
            f"cannot read {checkpoint.source}'s training images for calibration ({error}); "
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
@click.option("--hole-fraction", default=HOLE_FRACTION, show_default=True,
              type=click.FloatRange(0, 1),
              help="Enclosed non-drivable regions up to this fraction of the image area become "
              "drivable (lane markings, label noise).")  # fmt: skip
@click.option("--island-fraction", default=ISLAND_FRACTION, show_default=True,
              type=click.FloatRange(0, 1),
              help="Drivable regions touching the bottom row are kept from this fraction of the "
              "image area up.")  # fmt: skip
@_batch_option
@_file_inference_options
@_friendly_errors
def drivable(
    checkpoint: str,
    inputs: tuple[str, ...],
    out: str,
    classes: str | None,
    alpha: float,
    hole_fraction: float,
    island_fraction: float,
    batch_size: int,
    max_pixels: int,
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
    failures = drivable_files(
        predictor, paths, Path(out), chosen, alpha, batch_size,
        hole_fraction=hole_fraction, island_fraction=island_fraction, max_pixels=max_pixels,
    )  # fmt: skip
    _report(failures, len(paths), out)


@main.command()
@_model_file_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 serves other machines too.",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Inference threads, each with --threads CPU threads.",
)
@click.option(
    "--max-upload-mb",
    default=32.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Largest request body (MiB).",
)
@_max_pixels_option(4096 * 4096)
@click.option(
    "--max-queue",
    default=16,
    show_default=True,
    type=click.IntRange(min=0),
    help="Requests that may wait beyond those computing; more get 503.",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a segmentation may take (upload, queue, compute); then 504.",
)
@click.option(
    "--batch-max",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Micro-batching: queued images of one size per forward pass.",
)
@click.option(
    "--batch-wait-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Micro-batching: how long to wait for more images of one size.",
)
@click.option(
    "--api-key",
    envvar="SEMSEG_API_KEY",
    help="Require Authorization: Bearer KEY on /v1/* and /metrics [env SEMSEG_API_KEY].",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow this origin by CORS (repeatable; default: CORS off).",
)
@click.option(
    "--classes",
    help="Drivable classes: comma-separated names or train ids "
    "(default: the class named Road; none when there is no such class).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@_inference_options
@_engine_options
@click.option("--device", help="torch device (PyTorch checkpoints).")
@_friendly_errors
def serve(
    checkpoint: str,
    host: str,
    port: int,
    workers: int,
    max_upload_mb: float,
    max_pixels: int,
    max_queue: int,
    timeout_s: float,
    batch_max: int,
    batch_wait_ms: float,
    api_key: str | None,
    cors_origins: tuple[str, ...],
    classes: str | None,
    log_level: str,
    device: str | None,
    **inference: Any,
) -> None:
    """Serve a model over HTTP: POST /v1/segment, GET /v1/model, /healthz, /readyz, /metrics,
    and a web page at /. Needs the serve extra (pip install 'semseg[serve]')."""
    try:
        import uvicorn

        from semseg.serve.app import create_app
    except ImportError as error:
        raise click.ClickException(
            f"semseg serve needs the serve extra: pip install 'semseg[serve]' ({error})"
        ) from None
    from semseg.checkpoint import Checkpoint
    from semseg.inference.drivable_files import drivable_class_ids
    from semseg.serve.settings import ServeSettings

    if inference["threads"] is None:  # share the cores between the inference threads
        inference["threads"] = max(1, (os.cpu_count() or 1) // workers)
    threads = inference["threads"]
    model_file = Checkpoint.load(checkpoint)
    predictor = _load_predictor(model_file, device, inference)
    if classes is not None:
        drivable = drivable_class_ids(predictor.labels, [c.strip() for c in classes.split(",")])
    else:
        try:
            drivable = drivable_class_ids(predictor.labels)
        except ValueError:
            drivable = []
    settings = ServeSettings(
        max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_queue=max_queue,
        timeout_s=timeout_s, workers=workers, batch_max=batch_max, batch_wait_ms=batch_wait_ms,
        api_key=api_key, cors_origins=cors_origins, drivable_classes=drivable,
    )  # fmt: skip
    app = create_app(predictor, settings, model_file)
    click.echo(
        f"serving {checkpoint} on http://{host}:{port} ({workers} inference thread(s) x "
        f"{threads} CPU thread(s); API key {'required' if api_key else 'off'})"
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@main.command()
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset folder.")
@_format_option
@click.option(
    "--split",
    "splits",
    multiple=True,
    help="A split to check (repeat for more) [default: every split present].",
)
@_max_pixels_option(DEFAULT_MAX_PIXELS)
@_friendly_errors
def check(data: str, data_format: str | None, splits: tuple[str, ...], max_pixels: int) -> None:
    """List every problem of a dataset at once, with a count per kind: undecodable or truncated
    images and masks, images over --max-pixels, masks of the wrong mode or size, label values
    outside the classes, images without masks and masks without images. Reads headers and
    mask values, not a training pass; `semseg train` runs the same check first. Exit status 1
    when there are problems."""
    from semseg.data.check import check_dataset

    result = check_dataset(data, splits or None, data_format, max_pixels, progress=True)
    click.echo(str(result))
    if result.problems:
        raise click.exceptions.Exit(1)


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


@main.group(invoke_without_command=True)
@click.pass_context
def recipes(ctx: click.Context) -> None:
    """List the shipped recipes with their purpose (`semseg recipes show NAME` prints one)."""
    if ctx.invoked_subcommand is not None:
        return
    from semseg.config import recipe_purpose, shipped_recipes

    shipped = shipped_recipes()
    width = max(map(len, shipped)) + 2
    for name, text in shipped.items():
        click.echo(f"{name:<{width}}{recipe_purpose(text)}")


@recipes.command("show")
@click.argument("name")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@_friendly_errors
def recipes_show(name: str, overrides: tuple[str, ...]) -> None:
    """Print recipe NAME (shipped name or file) resolved: defaults filled in, overrides applied."""
    import yaml

    click.echo(
        yaml.safe_dump(load_recipe(name, list(overrides)).to_dict(), sort_keys=False), nl=False
    )


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
    if machine.bf16_instructions:
        click.echo(
            "auto training precision (train.precision=auto): the faster of fp32 and bf16, "
            "measured on the model at the start of each run"
        )
    else:
        precision, reason = training_precision("auto", cpu, machine)
        click.echo(f"auto training precision (train.precision=auto): {precision} ({reason})")
    if checkpoint is not None:
        from semseg.inference.predictor import Predictor

        lines: list[str] = []
        predictor = Predictor.from_checkpoint(checkpoint, "cpu", threads=threads, backend="auto",
                                              precision="auto", report=lines.append)  # fmt: skip
        predictor.predict(np.zeros((*size, 3), dtype=np.uint8))
        click.echo(f"for {checkpoint} at {size[0]}x{size[1]}: {lines[-1]}")


@main.command()
def models() -> None:
    """List the model names a recipe's model.name accepts."""
    from semseg.models import MODELS, list_models

    names = list_models()
    width = max(map(len, names)) + 2
    for name in names:
        doc = (MODELS[name].__doc__ or "").strip().splitlines()
        click.echo(f"{name:<{width}}{doc[0] if doc else ''}")


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
