"""Training: learning-rate schedule, a run's files, exact resume after a kill."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from semseg.checkpoint import Checkpoint, CheckpointError
from semseg.config import load_recipe
from semseg.engine.trainer import Trainer, learning_rate_factor
from semseg.models.backbones import create_vgg

TINY = [
    "data.synthetic_train_size=12",
    "data.synthetic_val_size=3",
    "data.synthetic_image_size=[48,64]",
    "augment.crop_size=[40,48]",
    "model.base_channels=4",
    "model.depth=2",
    "train.batch_size=4",
    "train.epochs=3",
    "train.threads=1",
    "train.warmup_steps=2",
]


def test_poly_schedule_matches_formula():
    assert learning_rate_factor(0, 10, "poly", 0) == 1.0
    assert learning_rate_factor(5, 10, "poly", 0) == pytest.approx(0.5**0.9)
    assert learning_rate_factor(10, 10, "poly", 0) == 0.0
    assert learning_rate_factor(0, 10, "poly", 4) == pytest.approx(0.25)
    assert learning_rate_factor(3, 10, "poly", 4) == pytest.approx(1.0)
    assert learning_rate_factor(7, 10, "poly", 4) == pytest.approx((1 - 3 / 6) ** 0.9)
    assert learning_rate_factor(5, 10, "cosine", 0) == pytest.approx(0.5)
    assert learning_rate_factor(3, 10, "constant", 0) == 1.0


def test_run_writes_checkpoints_logs_and_curves(tmp_path):
    recipe = load_recipe("demo", [*TINY, "train.val_every=2"])
    evaluation = Trainer(recipe, tmp_path, progress=False).fit()
    assert {"last.pt", "best.pt", "metrics.jsonl", "curves.png", "recipe.yaml"} <= {
        p.name for p in tmp_path.iterdir()
    }
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    # validated every 2 epochs and after the last one
    assert ["val" in r for r in records] == [False, True, True]
    assert ["val_s" in r for r in records] == [False, True, True]
    assert all(math.isfinite(r["train_loss"]) for r in records)
    # wall seconds: images / (images per second) is the training part's time
    for r in records:
        assert r["train_s"] > 0
        assert r["train_s"] * r["images_per_s"] == pytest.approx((12 // 4) * 4)
    last = Checkpoint.load(tmp_path / "last.pt")
    assert last.training["epoch"] == 3
    assert last.training["global_step"] == 3 * (12 // 4)
    assert last.labels.names[3] == "Road"
    best = Checkpoint.load(tmp_path / "best.pt")
    best_miou = max(r["val"]["miou"] for r in records if "val" in r)
    assert best.training["best_miou"] == pytest.approx(best_miou)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "confusion_matrix.png", "per_class_scores.png"
    ]  # fmt: skip
    assert evaluation.to_dict(Trainer(recipe, tmp_path, resume=True).labels)["miou"] == (
        pytest.approx(records[-1]["val"]["miou"])
    )


def _final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.load(out_dir / "last.pt").state_dict


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    overrides = [*TINY, "train.checkpoint_every=1", "train.val_every=10"]
    reference = tmp_path / "reference"
    Trainer(load_recipe("demo", overrides), reference, progress=False).fit()

    killed = tmp_path / "killed"
    script = (
        "import sys; from semseg.config import load_recipe; "
        "from semseg.engine.trainer import Trainer; "
        f"Trainer(load_recipe('demo', {overrides!r}), sys.argv[1], progress=False).fit()"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(killed)])
    deadline = time.monotonic() + 120
    while not (killed / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = Checkpoint.load(killed / "last.pt").training
    assert interrupted["global_step"] < 9, "the run finished before it could be killed"

    Trainer(load_recipe("demo", overrides), killed, resume=True, progress=False).fit()
    expected, resumed = _final_weights(reference), _final_weights(killed)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    reference_log = (reference / "metrics.jsonl").read_text().splitlines()
    resumed_log = (killed / "metrics.jsonl").read_text().splitlines()
    assert _without_speed(resumed_log) == _without_speed(reference_log)


def _without_speed(lines: list[str]) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in ("images_per_s", "train_s", "val_s")}
        for line in lines
    ]


def test_resume_refuses_another_model_or_recipe(tmp_path):
    Trainer(load_recipe("demo", [*TINY, "train.epochs=1"]), tmp_path, progress=False).fit()
    other_model = load_recipe(
        None,
        base={"model": {"name": "encoder_decoder", "widths": [4, 8]}, "train": {"epochs": 1}},
    )
    with pytest.raises(CheckpointError, match="unet"):
        Trainer(other_model, tmp_path, resume=True)
    changed = load_recipe("demo", [*TINY, "train.lr=0.5"])
    with pytest.raises(CheckpointError, match=r"train\.lr"):
        Trainer(changed, tmp_path, resume=True)
    preloaded = load_recipe("demo", [*TINY, "train.epochs=1", "data.preload=true"])
    assert Trainer(preloaded, tmp_path, resume=True).recipe.data.preload  # changes no sample
    longer = load_recipe("demo", [*TINY, "train.epochs=2"])
    trainer = Trainer(longer, tmp_path, resume=True, progress=False)
    assert trainer.state["epoch"] == 1
    trainer.fit()
    assert Checkpoint.load(tmp_path / "last.pt").training["epoch"] == 2


# naive on a 1/16-wide VGG16: the smallest model that takes encoder_weights.
NAIVE = [
    *TINY[:4],
    "model.name=naive",
    "model.width_divisor=16",
    "train.batch_size=4",
    "train.epochs=1",
    "train.threads=1",
]


def _vgg_weights(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision-format state dict for the 1/16-wide VGG16, plus a classifier entry that
    fits nothing."""
    torch.manual_seed(1)
    state = {
        k: torch.randn_like(v)
        for k, v in create_vgg("vgg16", width_divisor=16).state_dict().items()
    }
    torch.save({**state, "classifier.6.weight": torch.randn(1000, 256)}, path)
    return state


def test_encoder_weights_are_reported_and_not_needed_to_resume(tmp_path):
    weights = tmp_path / "vgg16.pth"
    state = _vgg_weights(weights)
    recipe = load_recipe("demo", [*NAIVE, f"model.encoder_weights={weights}"])
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    report = trainer.encoder_report
    assert sorted(report.loaded) == sorted(state)
    assert report.skipped == [("classifier.6.weight", "the model has no such entry")]
    assert report.missing == []
    torch.testing.assert_close(trainer.model.encoder.features[0].weight, state["features.0.weight"])
    trainer.fit()

    weights.unlink()  # the weights are in last.pt now
    longer = load_recipe("demo", [*NAIVE, f"model.encoder_weights={weights}", "train.epochs=2"])
    resumed = Trainer(longer, tmp_path / "run", resume=True, progress=False)
    assert resumed.encoder_report is None
    saved = Checkpoint.load(tmp_path / "run" / "last.pt").state_dict
    torch.testing.assert_close(resumed.model.state_dict()["encoder.features.0.weight"],
                               saved["encoder.features.0.weight"])  # fmt: skip
    resumed.fit()
    assert Checkpoint.load(tmp_path / "run" / "last.pt").training["epoch"] == 2
