"""Weight EMA in training: what is validated and kept, and an exact resume."""

import pytest
import torch

from semseg.checkpoint import Checkpoint
from semseg.config import load_recipe
from semseg.engine.evaluate import evaluate
from semseg.engine.trainer import Trainer
from semseg.inference.predictor import Predictor
from tests.engine.test_trainer import TINY


def test_best_checkpoint_holds_the_validated_average(tmp_path):
    recipe = load_recipe("demo", [*TINY, "train.epochs=1", "train.ema={decay: 0.9}"])
    trainer = Trainer(recipe, tmp_path, progress=False)
    trainer.fit()
    last, best = Checkpoint.load(tmp_path / "last.pt"), Checkpoint.load(tmp_path / "best.pt")
    assert last.training["ema"]["updates"] == last.training["global_step"] == 3
    averaged = last.training["ema"]["state_dict"]
    for name, value in best.state_dict.items():
        assert torch.equal(value, averaged[name]), name
    trained = last.state_dict
    assert not all(torch.equal(trained[n], averaged[n]) for n in trained)
    # the recorded score is that of the averaged weights, as semseg evaluate scores best.pt
    scores = evaluate(Predictor.from_checkpoint(best, "cpu"), trainer.val_set)
    recorded = last.training["history"][-1]["val"]["miou"]
    assert scores.scores.miou == pytest.approx(recorded, abs=1e-9)


def test_decay_zero_follows_the_trained_weights(tmp_path):
    recipe = load_recipe("demo", [*TINY, "train.epochs=1", "train.ema={decay: 0.0}"])
    Trainer(recipe, tmp_path, progress=False).fit()
    last = Checkpoint.load(tmp_path / "last.pt")
    for name, value in last.state_dict.items():
        assert torch.equal(value, last.training["ema"]["state_dict"][name]), name


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
    assert Checkpoint.load(interrupted / "last.pt").training["global_step"] == 4
    Trainer(load_recipe("demo", overrides), interrupted, resume=True, progress=False).fit()
    for name in ("last.pt", "best.pt"):
        expected, resumed = Checkpoint.load(reference / name), Checkpoint.load(interrupted / name)
        pairs = [(expected.state_dict, resumed.state_dict)]
        if name == "last.pt":
            want, got = expected.training["ema"], resumed.training["ema"]
            pairs.append((want["state_dict"], got["state_dict"]))
            assert got["updates"] == want["updates"]
        for want, got in pairs:
            assert want.keys() == got.keys()
            for key in want:
                assert torch.equal(want[key], got[key]), (name, key)
