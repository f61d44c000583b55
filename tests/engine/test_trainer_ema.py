"""Weight EMA in training: what is validated and kept, and an exact resume."""

import pytest
import torch

from semseg.checkpoint import build_model_from, load_checkpoint
from semseg.config import load_recipe
from semseg.engine.evaluate import evaluate_dataset
from semseg.engine.trainer import Trainer
from tests.engine.test_trainer import TINY


def test_best_checkpoint_holds_the_validated_average(tmp_path):
    recipe = load_recipe("demo", [*TINY, "train.epochs=1", "train.ema={decay: 0.9}"])
    trainer = Trainer(recipe, tmp_path, progress=False)
    trainer.fit()
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert last["training"]["ema"]["updates"] == last["training"]["global_step"] == 3
    averaged = last["training"]["ema"]["state_dict"]
    for name, value in best["model"]["state_dict"].items():
        assert torch.equal(value, averaged[name]), name
    trained = last["model"]["state_dict"]
    assert not all(torch.equal(trained[n], averaged[n]) for n in trained)
    # the recorded score is that of the averaged weights
    scores = evaluate_dataset(build_model_from(best), trainer.val_set, trainer.labels.num_classes)
    recorded = last["training"]["history"][-1]["val"]["miou"]
    assert scores.scores.miou == pytest.approx(recorded, abs=1e-9)


def test_decay_zero_follows_the_trained_weights(tmp_path):
    recipe = load_recipe("demo", [*TINY, "train.epochs=1", "train.ema={decay: 0.0}"])
    Trainer(recipe, tmp_path, progress=False).fit()
    last = load_checkpoint(tmp_path / "last.pt")
    for name, value in last["model"]["state_dict"].items():
        assert torch.equal(value, last["training"]["ema"]["state_dict"][name]), name


class StopTrainingError(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_average(tmp_path, monkeypatch):
    overrides = [*TINY, "train.checkpoint_every=1", "train.val_every=1", "train.ema={decay: 0.8}"]
    reference = tmp_path / "reference"
    Trainer(load_recipe("demo", overrides), reference, progress=False).fit()

    interrupted = tmp_path / "interrupted"
    trainer = Trainer(load_recipe("demo", overrides), interrupted, progress=False)
    step = trainer._train_step
    calls = []

    def stop_after_four(*args):
        if len(calls) == 4:
            raise StopTrainingError
        calls.append(1)
        return step(*args)

    monkeypatch.setattr(trainer, "_train_step", stop_after_four)
    with pytest.raises(StopTrainingError):
        trainer.fit()
    assert load_checkpoint(interrupted / "last.pt")["training"]["global_step"] == 4
    Trainer(load_recipe("demo", overrides), interrupted, resume=True, progress=False).fit()
    for name in ("last.pt", "best.pt"):
        expected, resumed = load_checkpoint(reference / name), load_checkpoint(interrupted / name)
        pairs = [(expected["model"]["state_dict"], resumed["model"]["state_dict"])]
        if name == "last.pt":
            pairs.append(
                (
                    expected["training"]["ema"]["state_dict"],
                    resumed["training"]["ema"]["state_dict"],
                )
            )
            assert resumed["training"]["ema"]["updates"] == expected["training"]["ema"]["updates"]
        for want, got in pairs:
            assert want.keys() == got.keys()
            for key in want:
                assert torch.equal(want[key], got[key]), (name, key)
