"""Validation by held-out groups on a tiny CamVid layout whose file names carry the drive."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semseg.cli import main
from semseg.config import DataConfig, RecipeError, load_recipe
from semseg.data.formats import DatasetError
from semseg.data.groups import group_of
from semseg.engine.build import build_datasets

# split -> file stems; drive 0016E5 is in both splits, as in the real CamVid
FRAMES = {
    "train": ["0001TP_006690", "0001TP_006720", "0006R0_f00930", "0006R0_f00960",
              "0006R0_f00990", "0016E5_00390", "0016E5_00420"],
    "val": ["0016E5_07959", "0016E5_07961", "0016E5_07963"],
}  # fmt: skip


def write_camvid(root: Path, frames: dict[str, list[str]], size: tuple[int, int] = (24, 32)):
    """The SegNet CamVid layout with the given stems: RGB images, mode-L masks of 0..11."""
    rng = np.random.default_rng(0)
    for split, stems in frames.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for stem in stems:
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / split / f"{stem}.png"
            )
            Image.fromarray(rng.integers(0, 12, size, dtype=np.uint8)).save(
                root / f"{split}annot" / f"{stem}.png"
            )
    return root


@pytest.fixture
def camvid_root(tmp_path):
    return write_camvid(tmp_path / "camvid", FRAMES)


def _names(dataset):
    return sorted(dataset.name(i) for i in range(len(dataset)))


def test_group_of_reads_the_first_capture_group_or_the_whole_match():
    assert group_of("0016E5_07959", re.compile(r"^([^_]+)_")) == "0016E5"
    assert group_of("Seq05VD_f00000", re.compile(r"^([^_]+)_")) == "Seq05VD"
    assert group_of("aachen_000000_000019_leftImg8bit", re.compile(r"^[a-z]+")) == "aachen"
    assert group_of("nounderscore", re.compile(r"^([^_]+)_")) is None


def test_holdout_trains_on_the_other_groups_of_both_splits(camvid_root):
    data = DataConfig(format="camvid", root=str(camvid_root), holdout_groups=("0006R0",))
    sets = build_datasets(data)
    assert _names(sets.val) == ["0006R0_f00930", "0006R0_f00960", "0006R0_f00990"]
    everything = sorted(FRAMES["train"] + FRAMES["val"])
    assert _names(sets.train) == [n for n in everything if not n.startswith("0006R0")]
    assert sets.groups.frames == {"0001TP": (2, 0), "0006R0": (0, 3), "0016E5": (5, 0)}
    table = sets.groups.table().splitlines()
    assert table[0].split() == ["group", "train", "validate"]
    assert table[2].split() == ["0006R0", "0", "3"]
    assert table[-1].split() == ["total", "7", "3"]


def test_holding_out_a_group_of_both_splits_validates_on_all_its_frames(camvid_root):
    data = DataConfig(format=None, root=str(camvid_root), holdout_groups=("0016E5",))
    sets = build_datasets(data)
    assert _names(sets.val) == sorted(n for n in FRAMES["train"] + FRAMES["val"] if "0016E5" in n)
    assert sets.groups.frames == {"0001TP": (2, 0), "0006R0": (3, 0), "0016E5": (0, 5)}


def test_without_holdout_the_splits_are_used_as_they_are(camvid_root):
    sets = build_datasets(DataConfig(format="camvid", root=str(camvid_root)))
    assert _names(sets.train) == sorted(FRAMES["train"])
    assert _names(sets.val) == sorted(FRAMES["val"])
    assert sets.groups is None


def test_a_group_no_file_has_is_an_error_naming_it_and_the_groups_found(camvid_root):
    data = DataConfig(format="camvid", root=str(camvid_root), holdout_groups=("0006R0", "0005VD"))
    with pytest.raises(DatasetError, match=r"'0005VD' .*found: 0001TP, 0006R0, 0016E5"):
        build_datasets(data)


def test_a_name_the_pattern_does_not_match_is_an_error_naming_the_file(camvid_root):
    data = DataConfig(
        format="camvid", root=str(camvid_root), holdout_groups=("0001",), group_pattern=r"^\d{4}TP"
    )
    with pytest.raises(DatasetError, match=r"0006R0_f00930\.png: data\.group_pattern"):
        build_datasets(data)


def test_a_custom_pattern_and_every_group_held_out(camvid_root):
    by_digits = DataConfig(
        format="camvid", root=str(camvid_root), holdout_groups=("0001",), group_pattern=r"^\d{4}"
    )
    assert build_datasets(by_digits).groups.frames == {
        "0001": (0, 2),
        "0006": (3, 0),
        "0016": (5, 0),
    }
    data = DataConfig(
        format="camvid", root=str(camvid_root), holdout_groups=("0001TP", "0006R0", "0016E5")
    )
    with pytest.raises(DatasetError, match="none is left to train on"):
        build_datasets(data)


def test_holdout_needs_files_with_groups():
    with pytest.raises(ValueError, match="data.holdout_groups needs a dataset folder"):
        build_datasets(DataConfig(format="synthetic", holdout_groups=("a",)))


def test_a_bad_pattern_is_a_recipe_error_naming_the_key():
    with pytest.raises(RecipeError, match=r"data\.group_pattern: .*not a regular expression"):
        load_recipe("camvid", ["data.group_pattern=([a-z"])


def test_train_holdout_option_prints_the_frames_per_group(camvid_root, tmp_path):
    tiny = [
        "augment.crop_size=[24,32]", "model.base_channels=4", "model.depth=2",
        "model.input_scale=1.0", "train.batch_size=4", "train.epochs=1", "train.threads=1",
        "train.warmup_steps=0", "train.val_every=1",
    ]  # fmt: skip
    out = tmp_path / "run"
    arguments = ["train", "--recipe", "camvid", "--data", str(camvid_root), "--out", str(out)]
    result = CliRunner().invoke(main, [*arguments, "--holdout", "0001TP", *tiny])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["0001TP", "0", "2"] in lines and ["0016E5", "5", "0"] in lines
    assert ["total", "8", "2"] in lines
    recipe = load_recipe(str(out / "recipe.yaml"))
    assert recipe.data.holdout_groups == ("0001TP",)
    scores = tmp_path / "scores.json"
    scored = CliRunner().invoke(
        main, ["evaluate", "--checkpoint", str(out / "best.pt"), "--json", str(scores)]
    )
    assert scored.exit_code == 0, scored.output
    # evaluate defaults to the checkpoint's own validation frames: the held-out drive's
    masks = [np.asarray(Image.open(p)) for p in sorted(camvid_root.glob("trainannot/0001TP_*"))]
    labelled = sum(int((m != 11).sum()) for m in masks)
    assert sum(map(sum, json.loads(scores.read_text())["confusion_matrix"])) == labelled
