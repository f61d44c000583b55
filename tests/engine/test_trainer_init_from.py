"""model.init_from in training: a run starts from another's weights; a resume does not reread."""

import pytest
import torch

from semseg.checkpoint import Checkpoint
from semseg.config import load_recipe
from semseg.engine.trainer import Trainer
from semseg.models import create_model
from tests.data.test_groups import FRAMES, write_camvid
from tests.engine.test_trainer import TINY


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A finished tiny run on the synthetic scenes (8 classes)."""
    out = tmp_path_factory.mktemp("source")
    Trainer(load_recipe("demo", [*TINY, "train.epochs=1"]), out, progress=False).fit()
    return out


def test_same_classes_start_from_every_weight(synthetic_run, tmp_path, capsys):
    source = synthetic_run / "best.pt"
    recipe = load_recipe("demo", [*TINY, "seed=5", f"model.init_from={source}"])
    trainer = Trainer(recipe, tmp_path, progress=False)
    weights = Checkpoint.load(source).state_dict
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    n = len(weights)
    assert f"model.init_from {source}: loaded {n} of {n} tensors" in capsys.readouterr().out


def test_other_classes_start_with_a_fresh_classifier(synthetic_run, tmp_path, capsys):
    root = write_camvid(tmp_path / "camvid", FRAMES)
    source = synthetic_run / "best.pt"
    overrides = [
        *TINY, f"data.root={root}", "data.format=camvid", "augment.crop_size=[24,32]",
        f"model.init_from={source}", "train.epochs=1",
    ]  # fmt: skip
    trainer = Trainer(load_recipe("demo", overrides), tmp_path / "run", progress=False)
    torch.manual_seed(0)  # the recipe's seed: the initialisation a run without init_from gets
    fresh = create_model("unet", 11, base_channels=4, depth=2).state_dict()
    weights = Checkpoint.load(source).state_dict
    for name, value in trainer.model.state_dict().items():
        expected = fresh[name] if name.startswith("classifier.") else weights[name]
        assert torch.equal(value, expected), name
    report = capsys.readouterr().out
    assert "re-initialised (the classes differ, 8 in the checkpoint" in report
    assert "11 here (Sky, Building, Pole and 8 more)" in report

    trainer.fit()
    source.rename(source.with_suffix(".moved"))  # a resume must not need it
    try:
        longer = load_recipe("demo", [*overrides[:-1], "train.epochs=2"])
        resumed = Trainer(longer, tmp_path / "run", resume=True, progress=False)
        assert "model.init_from" not in capsys.readouterr().out
        resumed.fit()
    finally:
        source.with_suffix(".moved").rename(source)
    assert Checkpoint.load(tmp_path / "run" / "last.pt").training["epoch"] == 2


def test_a_missing_checkpoint_is_named(tmp_path):
    recipe = load_recipe("demo", [*TINY, f"model.init_from={tmp_path / 'nothing.pt'}"])
    with pytest.raises(ValueError, match=r"nothing\.pt: checkpoint not found"):
        Trainer(recipe, tmp_path / "run", progress=False)
