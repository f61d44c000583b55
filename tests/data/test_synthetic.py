import cv2
import numpy as np
import pytest
from scipy import ndimage
from sklearn.ensemble import RandomForestClassifier

from semseg.data.synthetic import SYNTHETIC_LABELS, render_scene
from semseg.labels import CAMVID

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, CAR, PEDESTRIAN = range(8)


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeds 0..49 at the default 128x160."""
    return [render_scene(seed) for seed in range(50)]


def test_label_set_is_camvid_subset():
    assert SYNTHETIC_LABELS.names == (
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "Car",
        "Pedestrian",
    )
    for name, colour in zip(SYNTHETIC_LABELS.names, SYNTHETIC_LABELS.colours, strict=True):
        assert colour == CAMVID.colours[CAMVID.names.index(name)], name
    assert dict(SYNTHETIC_LABELS.raw_to_train) == {i: i for i in range(8)}


def test_same_seed_is_byte_identical_regardless_of_state():
    image, mask = render_scene(7)
    np.random.seed(123)
    global_state = np.random.get_state()[1].copy()
    render_scene(8)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        again_image, again_mask = render_scene(7)
    finally:
        cv2.setNumThreads(threads)
    assert image.tobytes() == again_image.tobytes()
    assert mask.tobytes() == again_mask.tobytes()
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)


def test_different_seeds_differ():
    images, masks = zip(*(render_scene(seed) for seed in range(5)), strict=True)
    for i in range(5):
        for j in range(i + 1, 5):
            assert (masks[i] != masks[j]).mean() > 0.05
            assert not np.array_equal(images[i], images[j])


@pytest.mark.parametrize("size", [(128, 160), (64, 80), (360, 480), (96, 200)])
def test_shapes_dtypes_and_label_range(size):
    height, width = size
    image, mask = render_scene(3, height, width)
    assert image.shape == (height, width, 3)
    assert image.dtype == np.uint8
    assert mask.shape == (height, width)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= set(range(8))
    np.testing.assert_array_equal(SYNTHETIC_LABELS.encode(mask), mask)


def test_geometry_scales_with_size():
    small = render_scene(4, 128, 160)[1]
    large = render_scene(4, 256, 320)[1]
    # Nearest-neighbour downsampling of the 2x render differs only along class boundaries.
    assert (large[::2, ::2] == small).mean() > 0.95


def test_every_class_appears_in_most_scenes(scenes):
    present = np.array([np.bincount(mask.ravel(), minlength=8) > 0 for _, mask in scenes])
    rates = present.mean(axis=0)
    for name, rate in zip(SYNTHETIC_LABELS.names, rates, strict=True):
        assert rate >= 0.8, f"{name} appears in only {rate:.0%} of scenes"


def _pole_widths(masks: list[np.ndarray]) -> np.ndarray:
    """Bounding-box width in pixels of every connected Pole component."""
    widths = []
    for mask in masks:
        components, _ = ndimage.label(mask == POLE)
        widths += [cols.stop - cols.start for _, cols in ndimage.find_objects(components)]
    return np.array(widths)


def test_poles_are_thin(scenes):
    widths = _pole_widths([mask for _, mask in scenes])
    assert (widths == 1).any()
    # Poles standing close together may merge into one wider component.
    assert (widths <= 3).mean() > 0.9


def test_pole_width_scales_with_image_width():
    seeds = range(20)
    narrow = _pole_widths([render_scene(seed, 128, 160)[1] for seed in seeds])
    wide = _pole_widths([render_scene(seed, 256, 320)[1] for seed in seeds])
    assert 1.7 < wide.mean() / narrow.mean() < 2.3


def test_distant_cars_are_small(scenes):
    heights = []
    for _, mask in scenes:
        components, _ = ndimage.label(mask == CAR)
        heights += [rows.stop - rows.start for rows, _ in ndimage.find_objects(components)]
    assert min(heights) < 8
    assert max(heights) > 30


def test_sky_above_road(scenes):
    for _, mask in scenes:
        rows = np.arange(mask.shape[0])[:, None]
        sky_rows = np.broadcast_to(rows, mask.shape)[mask == SKY]
        road_rows = np.broadcast_to(rows, mask.shape)[mask == ROAD]
        assert sky_rows.max() < road_rows.min()
        assert (mask[-1] == ROAD).any()


def test_image_matches_mask(scenes):
    pixels = {c: [] for c in range(8)}
    for image, mask in scenes[:10]:
        for c in range(8):
            pixels[c].append(image[mask == c].astype(np.float64))
    stacked = {c: np.concatenate(p) for c, p in pixels.items()}
    mean = {c: p.mean(axis=0) for c, p in stacked.items()}
    assert np.linalg.norm(mean[SKY] - mean[ROAD]) > 40
    assert mean[TREE][1] > mean[TREE][2]  # green dominates blue in vegetation
    assert np.linalg.norm(mean[PAVEMENT] - mean[ROAD]) > 15
    for c, p in stacked.items():
        assert p.std(axis=0).min() > 0, SYNTHETIC_LABELS.names[c]


def test_per_pixel_noise(scenes):
    # Poles are painted flat, so vertical neighbours inside one differ only by noise (the
    # illumination gradient changes by well under one level per pixel).
    for image, mask in scenes[:10]:
        both = (mask[1:] == POLE) & (mask[:-1] == POLE)
        step = np.abs(image[1:].astype(int) - image[:-1].astype(int))[both]
        assert np.median(step) >= 2


def test_lane_markings_are_painted_but_labelled_road(scenes):
    brightness = [image[mask == ROAD].mean(axis=1) for image, mask in scenes[:10]]
    road = np.concatenate(brightness)
    assert np.percentile(road, 99.5) > np.median(road) + 60


def test_single_pixel_colour_is_not_a_perfect_classifier(scenes):
    train = scenes[:20]
    test = scenes[20:30]
    x = np.concatenate([image.reshape(-1, 3) for image, _ in train])
    y = np.concatenate([mask.ravel() for _, mask in train])
    pick = np.random.default_rng(0).choice(len(x), 20000, replace=False)
    forest = RandomForestClassifier(20, min_samples_leaf=20, random_state=0, n_jobs=1)
    forest.fit(x[pick], y[pick])
    truth = np.concatenate([mask.ravel() for _, mask in test])
    pred = forest.predict(np.concatenate([image.reshape(-1, 3) for image, _ in test]))
    confusion = np.bincount(8 * truth + pred, minlength=64).reshape(8, 8)
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    assert iou.mean() < 0.7


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 0, "height": 16}, "height"),
        ({"seed": 0, "width": 8}, "width"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        render_scene(**kwargs)
