"""Drivable space from predictions: class selection, the Python function and the files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from semseg.data.synthetic import render_scene
from semseg.inference.drivable import draw_drivable, extract_drivable
from semseg.inference.drivable_files import drivable_class_ids, drivable_files, predict_drivable
from semseg.inference.predictor import Predictor
from semseg.labels import CAMVID, LabelSet

from .inference_support import tiny_checkpoint, write_image


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.from_checkpoint(tiny_checkpoint(tmp_path_factory), "cpu")


def test_default_is_the_class_named_road_in_any_case():
    assert drivable_class_ids(CAMVID) == [3]
    lower = LabelSet(("sky", "road", "car"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)))
    assert drivable_class_ids(lower) == [1]


def test_without_a_road_class_the_error_asks_for_classes():
    labels = LabelSet(("sky", "asphalt"), ((0, 0, 0), (1, 1, 1)))
    with pytest.raises(
        ValueError, match=r"no class named Road among \['sky', 'asphalt'\].*--classes"
    ):
        drivable_class_ids(labels)


def test_classes_by_name_any_case_or_id():
    assert drivable_class_ids(CAMVID, ["Road", "pavement"]) == [3, 4]
    assert drivable_class_ids(CAMVID, ["4", 3, "Road"]) == [3, 4]


@pytest.mark.parametrize(("classes", "message"), [(["Lawn"], "'Lawn'"), (["11"], "class id 11")])
def test_unknown_classes_are_named_with_the_choices(classes, message):
    with pytest.raises(ValueError, match=rf"{message}.*Sky"):
        drivable_class_ids(CAMVID, classes)


def test_predict_drivable_extracts_from_the_predicted_labels(predictor):
    image = render_scene(20, 64, 80)[0]
    space = predict_drivable(predictor, image)
    expected = extract_drivable(predictor.predict(image).labels, drivable_classes=[3])
    np.testing.assert_array_equal(space.mask, expected.mask)
    np.testing.assert_array_equal(space.boundary, expected.boundary)
    assert space.polygon == expected.polygon


def test_drivable_files_write_mask_json_and_overlay(predictor, tmp_path):
    image = render_scene(21, 64, 80)[0]
    path = write_image(tmp_path / "in" / "road.png", image)
    failures = drivable_files(
        predictor, [path], tmp_path / "out", classes=["Road", "Pavement"], progress=False
    )
    assert failures == []
    space = extract_drivable(predictor.predict(image).labels, drivable_classes=[3, 4])
    mask = np.asarray(Image.open(tmp_path / "out" / "road_drivable.png"))
    np.testing.assert_array_equal(mask, space.mask * 255)
    record = json.loads((tmp_path / "out" / "road_drivable.json").read_text())
    assert record["classes"] == ["Road", "Pavement"]
    assert record["image"] == str(path)
    assert record["boundary"] == space.boundary.tolist()
    assert record["polygon"] == [list(p) for p in space.polygon]
    overlay = np.asarray(Image.open(tmp_path / "out" / "road_drivable_overlay.png"))
    np.testing.assert_array_equal(overlay, draw_drivable(image, space, alpha=0.4))


def test_drivable_files_report_broken_images(predictor, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    failures = drivable_files(predictor, [broken], tmp_path / "out", progress=False)
    assert [path for path, _ in failures] == [broken]
    assert f"{broken}: cannot decode image" in failures[0][1]
