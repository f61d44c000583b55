"""The dataset check: every problem of every kind listed at once, counted per kind."""

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from semseg.cli import main
from semseg.config import load_recipe
from semseg.data.check import PROBLEM_KINDS, DatasetCheckError, check_dataset
from semseg.engine.trainer import Trainer


def _broken_camvid(root: Path, png_claiming) -> dict[str, Path]:
    """A CamVid layout whose train split holds one problem of each kind (and one good
    sample), and a clean val split. Returns the file each kind is about."""
    rng = np.random.default_rng(0)

    def image(path: Path, size=(6, 8), **kwargs) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, **kwargs)
        return path

    def mask(path: Path, values=(0, 3, 11), size=(6, 8), mode="L") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.choice(np.array(values, np.uint8), size)).convert(mode).save(path)
        return path

    train, annot = root / "train", root / "trainannot"
    odd_masks = {
        "size": {"size": (5, 8)},
        "mode": {"mode": "RGB"},
        "values": {"values": (3, 40, 12)},
    }
    for name in ("good", "cut", "cut_jpeg", "size", "mode", "values", "bomb"):
        mask(annot / f"{name}.png", **odd_masks.get(name, {}))
        if name == "cut_jpeg":
            image(train / f"{name}.jpg", size=(32, 40))
        elif name == "bomb":
            png_claiming(train / "bomb.png", 60000, 60000)
        else:
            image(train / f"{name}.png")
    for cut in (train / "cut.png", train / "cut_jpeg.jpg"):
        cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    image(train / "lonely.png")
    mask(annot / "orphan.png")
    image(root / "val" / "v.png")
    mask(root / "valannot" / "v.png")
    return {
        "undecodable": train / "cut.png",
        "oversized": train / "bomb.png",
        "mask_mode": annot / "mode.png",
        "mask_size": annot / "size.png",
        "label_values": annot / "values.png",
        "image_without_mask": train / "lonely.png",
        "mask_without_image": annot / "orphan.png",
    }


def test_every_problem_is_listed_with_a_count_per_kind(tmp_path, png_claiming):
    about = _broken_camvid(tmp_path, png_claiming)
    result = check_dataset(tmp_path)
    assert result.splits == ("train", "val")
    assert result.samples == 8  # 7 train pairs (the unpaired two are not samples) + 1 val
    assert result.counts() == {kind: 1 for kind in PROBLEM_KINDS} | {"undecodable": 2}
    by_kind = {kind: [p.message for p in result.problems if p.kind == kind] for kind in about}
    for kind, path in about.items():
        assert any(message.startswith(str(path)) for message in by_kind[kind]), (kind, by_kind)
    assert any("cut_jpeg.jpg" in message for message in by_kind["undecodable"])
    assert "[12, 40]" in by_kind["label_values"][0]
    assert "mask is 8x5 (WxH)" in by_kind["mask_size"][0]
    assert "good" not in str(result)
    with pytest.raises(DatasetCheckError) as error:
        result.raise_for_problems()
    assert "8 problems" in str(error.value) and str(about["mask_without_image"]) in str(error.value)


def test_a_clean_split_has_no_problems(tmp_path, png_claiming):
    _broken_camvid(tmp_path, png_claiming)
    result = check_dataset(tmp_path, ["val"], "camvid")
    assert (result.samples, result.problems, result.counts()) == (1, [], {})
    result.raise_for_problems()
    assert result.summary() == f"{tmp_path}: 1 samples checked in val; no problems"


def test_colours_outside_the_palette_are_label_values(tmp_path):
    spec = {"classes": [{"name": "road", "colour": [128, 64, 128]}], "masks": "colour"}
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump(spec))
    for folder in ("images", "masks"):
        (tmp_path / "train" / folder).mkdir(parents=True)
    Image.new("RGB", (4, 3), (9, 9, 9)).save(tmp_path / "train" / "images" / "a.png")
    Image.new("RGB", (4, 3), (1, 2, 3)).save(tmp_path / "train" / "masks" / "a.png")
    result = check_dataset(tmp_path)
    assert result.counts() == {"label_values": 1}
    assert "(1, 2, 3)" in result.problems[0].message


def test_semseg_check_prints_every_problem_and_fails(tmp_path, png_claiming):
    about = _broken_camvid(tmp_path, png_claiming)
    result = CliRunner().invoke(main, ["check", "--data", str(tmp_path)])
    assert result.exit_code == 1
    for kind, path in about.items():
        assert f"{PROBLEM_KINDS[kind]}: {path}" in result.output
    assert re.search(r"\n\s+2  undecodable or truncated\n", result.output)
    assert "8 problems" in result.output and "Traceback" not in result.output
    clean = CliRunner().invoke(main, ["check", "--data", str(tmp_path), "--split", "val"])
    assert clean.exit_code == 0 and "no problems" in clean.output
    limited = CliRunner().invoke(
        main, ["check", "--data", str(tmp_path), "--split", "val", "--max-pixels", "47"]
    )
    assert limited.exit_code == 1 and "2 problems" in limited.output  # the image and its mask


def test_training_checks_the_data_first(tmp_path, png_claiming):
    about = _broken_camvid(tmp_path / "data", png_claiming)
    recipe = load_recipe("demo", ["data.format=camvid", f"data.root={tmp_path / 'data'}"])
    with pytest.raises(DatasetCheckError) as error:
        Trainer(recipe, tmp_path / "run", progress=False)
    for path in about.values():
        assert str(path) in str(error.value)
    assert not (tmp_path / "run").exists()
