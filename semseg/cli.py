"""The ``semseg`` command line: demo, train, evaluate, predict, stats, models."""

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
USER_ERRORS = (ValueError, OSError, KeyError)


def _friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
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
@click.option("--device", help="torch device (default: cuda if available, else cpu).")
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
    """Train a model; keeps OUT/best.pt (val mIoU) and OUT/last.pt."""
    from semseg.engine.trainer import Trainer

    config = _recipe_with_data(recipe, overrides + more_overrides, data, data_format)
    out_dir = Path(out or Path("runs") / Path(recipe).stem)
    trainer = Trainer(config, out_dir, resume=resume, device=device)
    evaluation = trainer.fit()
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
@click.option("--batch-size", default=1, show_default=True, help="Images per forward pass.")
@click.option("--no-boundary", is_flag=True, help="Skip the boundary F1 score.")
@click.option("--device", help="torch device.")
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
    """Score a checkpoint: per-class IoU, mIoU, accuracies, fwIoU, boundary F1."""
    from torch.utils.data import DataLoader

    from semseg.checkpoint import load_checkpoint
    from semseg.engine.build import build_dataset
    from semseg.engine.evaluate import evaluate as run_evaluation
    from semseg.predict import Predictor
    from semseg.report import scores_table

    predictor = Predictor.from_checkpoint(checkpoint, device)
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
    result = run_evaluation(
        predictor.model,
        DataLoader(dataset, batch_size=batch_size),
        predictor.labels.num_classes,
        boundary=not no_boundary,
        progress=True,
        description=f"evaluate {split}",
    ).to_dict(predictor.labels)
    click.echo(scores_table(result))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
        click.echo(f"scores written to {json_path}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--alpha", default=0.5, show_default=True, help="Overlay opacity, 0..1.")
@click.option("--device", help="torch device.")
@_friendly_errors
def predict(
    checkpoint: str, inputs: tuple[str, ...], out: str, alpha: float, device: str | None
) -> None:
    """Segment images or folders of images: label-map PNG and overlay per image."""
    from semseg.predict import Predictor, expand_inputs, predict_files

    predictor = Predictor.from_checkpoint(checkpoint, device)
    paths = expand_inputs(inputs)
    failures = predict_files(predictor, paths, Path(out), alpha)
    for path, reason in failures:
        click.echo(f"failed: {path}: {reason}", err=True)
    click.echo(f"{len(paths) - len(failures)} of {len(paths)} inputs segmented into {out}")
    if failures:
        raise click.ClickException(f"{len(failures)} of {len(paths)} inputs failed")


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
