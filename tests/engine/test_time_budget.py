"""``train.time_budget_min``: the number of epochs planned from measured epoch and validation
times, and a run that follows its plan (schedule, last validation, resume)."""

import json

import pytest

from semseg.checkpoint import Checkpoint
from semseg.config import load_recipe
from semseg.engine import trainer as trainer_module
from semseg.engine.trainer import Trainer, learning_rate_factor, planned_epochs
from tests.engine.test_trainer import TINY


def test_plan_counts_epochs_and_validations_left_in_the_budget():
    # 1 epoch of 60 s done, 600 s budget: 540 s left at 60 s an epoch, no validation measured
    assert planned_epochs([{"train_s": 60.0}], 600.0, 80, 10) == 10
    # epochs 1-10 took 50 s each, the validation at 10 took 100 s: 1000 - 600 = 400 s left.
    # Epochs 11..15: 5 x 50 = 250 s plus the last one's validation 100 s = 350 <= 400;
    # 16 would be 300 + 100 = 400 <= 400; 17: 350 + 100 > 400.
    history = [{"train_s": 50.0} for _ in range(10)]
    history[-1]["val_s"] = 100.0
    assert planned_epochs(history, 1000.0, 80, 10) == 16
    # a validation every 2 epochs: 11..14 is 200 s + validations at 12 and 14 (200 s) = 400
    assert planned_epochs(history, 1000.0, 80, 2) == 14
    # never more than the recipe's epochs, never fewer than those done
    assert planned_epochs(history, 1e9, 12, 10) == 12
    assert planned_epochs(history, 100.0, 80, 10) == 10
    assert planned_epochs([], 100.0, 80, 10) == 80
    # the last 3 epochs set the pace: 300 + 300 + 100 + 100 + 100 s done, 1000 s left at 100 s
    paced = [{"train_s": t} for t in (300.0, 300.0, 100.0, 100.0, 100.0)]
    assert planned_epochs(paced, 1900.0, 80, 100) == 5 + 10  # no validation measured yet


def test_a_budgeted_run_trains_what_fits_and_validates_its_last_epoch(tmp_path, monkeypatch):
    """Each epoch is made to report 60 s: a 3.5-minute budget fits 3 of 10 epochs, planned
    after the first; the schedule ends at the third epoch and that epoch validates."""
    real_epoch = Trainer._train_epoch

    def sixty_seconds(self, epoch):
        loss, rate, _ = real_epoch(self, epoch)
        return loss, rate, 60.0

    monkeypatch.setattr(Trainer, "_train_epoch", sixty_seconds)
    overrides = [*TINY, "train.epochs=10", "train.val_every=5", "train.time_budget_min=3.5"]
    recipe = load_recipe("demo", overrides)
    run = Trainer(recipe, tmp_path, progress=False)
    steps = run.steps_per_epoch
    learning_rates = []
    real_step = Trainer._train_step

    def record_lr(self, *args):
        learning_rates.append(self.optimizer.param_groups[-1]["base_lr"])
        value = real_step(self, *args)
        learning_rates[-1] = self.optimizer.param_groups[-1]["lr"] / learning_rates[-1]
        return value

    monkeypatch.setattr(Trainer, "_train_step", record_lr)
    run.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epochs_planned"] for r in records] == [3, 3, 3]
    assert ["val" in r for r in records] == [False, False, True]
    # the first epoch's steps followed the 10-epoch schedule, the rest the 3-epoch one
    expected = [learning_rate_factor(s, 10 * steps, "poly", 2) for s in range(steps)]
    expected += [learning_rate_factor(s, 3 * steps, "poly", 2) for s in range(steps, 3 * steps)]
    assert learning_rates == pytest.approx(expected)
    assert Checkpoint.load(tmp_path / "last.pt").training["epochs"] == 3

    # a resumed run keeps its plan; with more time it plans again from its history
    Trainer(recipe, tmp_path, resume=True, progress=False).fit()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    longer = load_recipe("demo", [*overrides, "train.time_budget_min=5.5"])
    Trainer(longer, tmp_path, resume=True, progress=False).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epochs_planned"] for r in records] == [3, 3, 3, 5, 5]
    assert "val" in records[-1]
    # fewer epochs than the budget allows: the recipe's epochs are the limit
    shorter = load_recipe("demo", [*overrides, "train.time_budget_min=60", "train.epochs=6"])
    Trainer(shorter, tmp_path, resume=True, progress=False).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epochs_planned"] for r in records][5:] == [6]


def test_the_plan_is_announced_when_it_changes(tmp_path, monkeypatch, capsys):
    real_epoch = Trainer._train_epoch
    monkeypatch.setattr(
        Trainer, "_train_epoch", lambda self, epoch: (*real_epoch(self, epoch)[:2], 90.0)
    )
    recipe = load_recipe("demo", [*TINY, "train.epochs=6", "train.time_budget_min=3"])
    Trainer(recipe, tmp_path, progress=False).fit()
    out = capsys.readouterr().out
    assert out.count("time budget") == 1
    assert "time budget 3 min: 90 s per epoch here, training 2 of 6 epochs (was 6)" in out
    assert trainer_module.RESUMABLE_CHANGES.count("train.time_budget_min") == 1
