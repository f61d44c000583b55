"""``semseg demo``: train the demo recipe on synthetic road scenes and show what it learned."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from semseg.checkpoint import Checkpoint
from semseg.config import Recipe, load_recipe
from semseg.data.io import write_png
from semseg.engine.build import build_dataset
from semseg.engine.trainer import Trainer
from semseg.inference.predictor import Predictor
from semseg.report import scores_table
from semseg.visualize import colorize, overlay

DEMO_PICTURES = 6


def run_demo(out_dir: Path, overrides: Sequence[str] = (), device: str | None = None) -> dict:
    """Train (or finish training) ``recipes/demo.yaml`` in ``out_dir``, then evaluate the best
    checkpoint on the validation scenes, print the per-class table and write
    ``scores.json``, ``curves.png`` and ``examples/*.png`` (image | truth | prediction).

    Returns:
        The validation scores (``Evaluation.to_dict`` form).
    """
    recipe = load_recipe("demo", list(overrides))
    trainer = Trainer(recipe, out_dir, resume=True, device=device)
    click.echo(
        f"demo: training {recipe.model.name} on {len(trainer.train_set)} synthetic scenes "
        f"for {recipe.train.epochs} epochs (run folder {out_dir})"
    )
    trainer.fit()
    best = out_dir / "best.pt"
    trainer.model.load_state_dict(Checkpoint.load(best).state_dict)
    scores = trainer.validate(trainer.model).to_dict(trainer.labels)
    click.echo(f"\nvalidation ({len(trainer.val_set)} scenes), best checkpoint {best}:")
    click.echo(scores_table(scores))
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=2))
    _write_examples(Predictor.from_checkpoint(best, device), recipe, out_dir / "examples")
    click.echo(f"\npictures: {out_dir / 'examples'}, training curves: {out_dir / 'curves.png'}")
    return scores


def _write_examples(predictor: Predictor, recipe: Recipe, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    val_set = build_dataset(recipe.data, recipe.data.val_split)
    labels = predictor.labels
    for index in range(min(DEMO_PICTURES, len(val_set))):
        image, truth = val_set.read(index)
        prediction = predictor.predict(image, probabilities=False).labels
        classes = sorted(set(np.unique(truth)) | set(np.unique(prediction)))
        classes = [int(c) for c in classes if c < labels.num_classes]
        panel = np.concatenate(
            [
                image,
                colorize(truth, labels),
                overlay(image, prediction, labels, alpha=0.6, classes=classes),
            ],
            axis=1,
        )
        write_png(folder / f"{val_set.name(index)}.png", panel)
