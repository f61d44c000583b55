"""Overlays and their legend: every class listed is shown, whatever the image height."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from semseg.data.formats import VOC
from semseg.labels import CAMVID, LabelSet
from semseg.visualize import legend_panel, overlay


def swatches(panel: np.ndarray, labels: LabelSet) -> list[int]:
    """Class ids whose colour fills a solid 6x6 block of ``panel`` (a swatch; the anti-aliased
    class names never hold one)."""
    found = []
    for class_id, colour in enumerate(labels.colours):
        solid = (panel == np.array(colour, dtype=np.uint8)).all(axis=-1)
        if sliding_window_view(solid, (6, 6)).all(axis=(-1, -2)).any():
            found.append(class_id)
    return found


@pytest.mark.parametrize(
    ("labels", "height"), [(VOC, 128), (CAMVID, 128), (VOC, 40), (CAMVID, 360), (VOC, 16)]
)
def test_legend_shows_every_class(labels: LabelSet, height: int) -> None:
    classes = list(range(labels.num_classes))
    panel = legend_panel(labels, classes, height)
    assert panel.shape[0] == height and panel.dtype == np.uint8
    assert swatches(panel, labels) == classes


def test_classes_that_fit_stay_in_one_column() -> None:
    one = legend_panel(CAMVID, range(11), 360)
    two = legend_panel(CAMVID, range(11), 128)  # ten 12-pixel rows fit in 128 - 4 pixels
    assert two.shape[1] == 2 * one.shape[1] - 2 * (20 - 12)  # rows of 20 px there, 12 here


def test_overlay_legend_lists_the_present_classes_of_a_short_image() -> None:
    label_map = np.repeat(np.arange(21, dtype=np.uint8), 8)[None].repeat(128, axis=0)
    image = np.zeros((128, 168, 3), dtype=np.uint8)
    picture = overlay(image, label_map, VOC, alpha=1.0)
    assert picture.shape[0] == 128
    assert swatches(picture[:, 168:], VOC) == list(range(21))
    few = overlay(image, np.where(label_map < 3, label_map, 255), VOC, alpha=1.0)
    assert swatches(few[:, 168:], VOC) == [0, 1, 2]
