"""``semseg evaluate`` and ``semseg.engine.evaluate.evaluate``: one scorer, through the
predictor, equal to what ``semseg predict`` writes; ONNX files; mixed image sizes; plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from semseg.checkpoint import Checkpoint
from semseg.cli import main
from semseg.config import DataConfig, load_recipe
from semseg.data.synthetic import render_scene
from semseg.engine.build import build_dataset
from semseg.engine.evaluate import evaluate
from semseg.inference.export import export_onnx
from semseg.inference.predictor import Predictor
from semseg.inference.tta import InferenceOptions
from semseg.labels import CAMVID
from semseg.models import create_model

from .inference_support import tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def onnx_file(checkpoint, tmp_path_factory):
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def run(*args) -> object:
    """The CLI with the engine pinned: ``auto`` would pick by a timing probe (bf16 where it is
    faster), and these tests compare exact counts across commands."""
    args = [str(a) for a in args]
    if args[0] in ("predict", "evaluate"):
        model_file = args[args.index("--checkpoint") + 1]
        backend = "onnxruntime" if model_file.endswith(".onnx") else "torch"
        args += ["--backend", backend, "--precision", "fp32"]
    return CliRunner().invoke(main, args)


def scores_of(result, path) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(path.read_text())


def numpy_scores(predictions: list[np.ndarray], masks: list[np.ndarray], classes: int) -> dict:
    """Independent oracle: per-class IoU from NumPy counts, void (255) skipped."""
    confusion = np.zeros((classes, classes), dtype=np.int64)
    for predicted, truth in zip(predictions, masks, strict=True):
        keep = truth != 255
        np.add.at(confusion, (truth[keep].astype(int), predicted[keep].astype(int)), 1)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return {"per_class_iou": iou, "miou": float(np.nanmean(iou)), "confusion": confusion}


def test_scores_are_those_of_the_label_maps_predict_writes(checkpoint, tmp_path):
    val = _val(checkpoint)  # the checkpoint's own validation scenes
    folder = tmp_path / "images"
    folder.mkdir()
    masks = []
    for index in range(len(val)):
        image, mask = val.read(index)
        Image.fromarray(image).save(folder / f"{index}.png")
        masks.append(mask)
    assert run("predict", "--checkpoint", checkpoint, folder, "--out", tmp_path / "out",
               "--hflip").exit_code == 0  # fmt: skip
    written = [
        np.asarray(Image.open(tmp_path / "out" / f"{i}_labels.png")) for i in range(len(val))
    ]
    expected = numpy_scores(written, masks, val.labels.num_classes)
    scores = scores_of(
        run("evaluate", "--checkpoint", checkpoint, "--json", tmp_path / "s.json", "--hflip"),
        tmp_path / "s.json",
    )
    assert scores["confusion_matrix"] == expected["confusion"].tolist()
    assert scores["miou"] == pytest.approx(expected["miou"])


def test_an_onnx_file_scores_as_the_checkpoint_it_came_from(checkpoint, onnx_file, tmp_path):
    pt = scores_of(run("evaluate", "--checkpoint", checkpoint, "--json", tmp_path / "pt.json"),
                   tmp_path / "pt.json")  # fmt: skip
    onnx = scores_of(run("evaluate", "--checkpoint", onnx_file, "--json", tmp_path / "o.json"),
                     tmp_path / "o.json")  # fmt: skip
    assert abs(pt["miou"] - onnx["miou"]) < 1e-3  # the data comes from the ONNX file's recipe
    agreement = np.trace(np.array(pt["confusion_matrix"])) / np.sum(pt["confusion_matrix"])
    assert agreement > 0  # a real score, not an empty one


def test_mixed_image_sizes_work_with_a_batch_and_score_as_one_at_a_time(checkpoint, tmp_path):
    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index, (height, width) in enumerate([(64, 80), (48, 64), (64, 80), (40, 56)]):
            image = render_scene(index, height, width)[0]
            Image.fromarray(image).save(root / split / f"0001TP_{index:03d}.png")
            mask = rng.integers(0, 12, (height, width), dtype=np.uint8)
            Image.fromarray(mask, mode="L").save(root / f"{split}annot" / f"0001TP_{index:03d}.png")
    stored = Checkpoint.load(checkpoint)
    stored.labels = CAMVID  # the tiny model has 8 outputs: give it CamVid's 11
    stored.state_dict = _camvid_model(stored).state_dict()
    stored.save(tmp_path / "camvid.pt")
    val = build_dataset(DataConfig(root=str(root), format="camvid"), "val")
    predictor = Predictor.from_checkpoint(tmp_path / "camvid.pt", "cpu")
    batched = evaluate(predictor, val, batch_size=3).to_dict(val.labels)
    single = evaluate(predictor, val, batch_size=1).to_dict(val.labels)
    assert batched["confusion_matrix"] == single["confusion_matrix"]
    result = run(
        "evaluate", "--checkpoint", tmp_path / "camvid.pt", "--data", root, "--format", "camvid",
        "--batch-size", "2", "--json", tmp_path / "c.json",
    )  # fmt: skip
    from_cli = scores_of(result, tmp_path / "c.json")
    assert from_cli["confusion_matrix"] == single["confusion_matrix"]


def test_data_alone_keeps_the_checkpoints_format(checkpoint, tmp_path):
    # The tiny checkpoint's recipe is synthetic; a folder given alone is read as synthetic
    # (which needs no files) rather than detected, so scoring still works.
    result = run("evaluate", "--checkpoint", checkpoint, "--data", tmp_path, "--json",
                 tmp_path / "s.json")  # fmt: skip
    assert scores_of(result, tmp_path / "s.json")["miou"] >= 0


def test_plots_are_written_with_class_names(checkpoint, tmp_path):
    result = run("evaluate", "--checkpoint", checkpoint, "--plots", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    for name in ("per_class_scores.png", "confusion_matrix.png"):
        with Image.open(tmp_path / "plots" / name) as picture:
            assert picture.width > 300 and picture.height > 200


def test_tta_options_change_what_is_scored(checkpoint):
    val = _val(checkpoint)
    plain = evaluate(Predictor.from_checkpoint(checkpoint, "cpu"), val).to_dict(val.labels)
    options = InferenceOptions(hflip=True, scales=(0.5, 1.0))
    tta = evaluate(Predictor.from_checkpoint(checkpoint, "cpu", options), val)
    assert tta.to_dict(val.labels)["confusion_matrix"] != plain["confusion_matrix"]


def test_classes_that_differ_from_the_datasets_are_named(checkpoint):
    stored = Checkpoint.load(checkpoint)
    predictor = Predictor(_camvid_model(stored), CAMVID, stored.mean, stored.std)
    with pytest.raises(ValueError, match="do not match the dataset"):
        evaluate(predictor, _val(checkpoint))


def test_recipes_lists_and_shows_the_shipped_recipes():
    listing = run("recipes")
    assert listing.exit_code == 0
    assert "demo" in listing.output and "camvid" in listing.output
    shown = run("recipes", "show", "demo", "train.epochs=3")
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.output)["train"]["epochs"] == 3
    assert run("recipes", "show", "nope").exit_code == 1


def _val(checkpoint):
    return build_dataset(load_recipe(base=Checkpoint.load(checkpoint).recipe).data, "val")


def _camvid_model(checkpoint):
    return create_model(checkpoint.model_name, 11, **checkpoint.model_args).eval()


def test_on_image_sees_every_sample_once_with_what_was_scored(checkpoint):
    val = _val(checkpoint)
    seen = {}
    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    total = evaluate(
        predictor, val, batch_size=2, on_image=lambda i, p, m: seen.update({i: (p, m)})
    )
    assert sorted(seen) == list(range(len(val)))
    for index, (labels, mask) in seen.items():
        np.testing.assert_array_equal(labels, predictor.predict(val.read(index)[0]).labels)
        np.testing.assert_array_equal(mask, val.read(index)[1])
    oracle = numpy_scores([p for p, _ in seen.values()], [m for _, m in seen.values()], 8)
    assert (
        total.scores.to_dict(val.labels.names)["confusion_matrix"] == oracle["confusion"].tolist()
    )
