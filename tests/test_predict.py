"""Predictor, inference options (padding, tiling, flip and scale TTA) and predict_files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from semseg.data.synthetic import SYNTHETIC_LABELS, render_scene
from semseg.inference.files import expand_inputs, output_stems, plan_batches, predict_files
from semseg.inference.predictor import Predictor
from semseg.inference.tta import InferenceOptions, InputSizeError, class_indices
from semseg.visualize import legend_panel

from .inference_support import random_image, tiny_checkpoint, write_image

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor.from_checkpoint(checkpoint, "cpu")


def pointwise_predictor(options: InferenceOptions | None = None) -> Predictor:
    """A 1x1-convolution model: each pixel's logits depend on that pixel only."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, SYNTHETIC_LABELS.num_classes, kernel_size=1)
    return Predictor(model, SYNTHETIC_LABELS, MEAN, STD, "cpu", options)


def pointwise_probabilities(image: np.ndarray, model: nn.Module) -> np.ndarray:
    """(C, H, W) float64 softmax of the 1x1 convolution, in NumPy; ``image`` (H, W, 3) RGB
    values in 0..255 (uint8 or float)."""
    x = (image.astype(np.float64) / 255 - np.array(MEAN)) / np.array(STD)
    weight = model.weight.detach().double().numpy()[:, :, 0, 0]
    logits = (
        np.einsum("hwc,kc->khw", x, weight) + model.bias.detach().double().numpy()[:, None, None]
    )
    exp = np.exp(logits - logits.max(axis=0))
    return exp / exp.sum(axis=0)


def test_pointwise_prediction_matches_numpy():
    predictor = pointwise_predictor()
    image = random_image(0, 12, 17)
    prediction = predictor.predict(image)
    expected = pointwise_probabilities(image, predictor.model)
    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-5)
    assert prediction.probabilities.dtype == np.float32
    np.testing.assert_array_equal(prediction.labels, expected.argmax(axis=0))
    np.testing.assert_allclose(prediction.confidence, expected.max(axis=0), atol=1e-5)


@pytest.mark.parametrize(("tile", "overlap"), [((7, 9), 0.5), ((16, 16), 0.25), ((5, 31), 0.0)])
def test_sliding_window_of_a_pointwise_model_equals_whole_image(tile, overlap):
    image = random_image(1, 29, 33)
    whole = pointwise_predictor().predict(image)
    tiled = pointwise_predictor(InferenceOptions(tile_size=tile, overlap=overlap)).predict(image)
    np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-6)
    np.testing.assert_array_equal(tiled.labels, whole.labels)


def test_sliding_window_with_a_tile_equal_to_the_image_equals_whole(predictor, checkpoint):
    image = render_scene(3, 64, 80)[0]
    tiled = Predictor.from_checkpoint(
        checkpoint, "cpu", InferenceOptions(tile_size=(64, 80))
    ).predict(image)
    whole = predictor.predict(image)
    np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-6)
    np.testing.assert_array_equal(tiled.labels, whole.labels)


def test_tiling_a_large_image_stays_close_to_whole_image(predictor, checkpoint):
    image = render_scene(4, 96, 160)[0]
    options = InferenceOptions(tile_size=(64, 80), overlap=0.5, tile_batch_size=2)
    tiled = Predictor.from_checkpoint(checkpoint, "cpu", options).predict(image)
    whole = predictor.predict(image)
    assert tiled.labels.shape == (96, 160)
    np.testing.assert_allclose(tiled.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert (tiled.labels == whole.labels).mean() > 0.9


def test_flip_tta_on_a_mirror_symmetric_image_equals_no_tta():
    """Mirroring a symmetric image changes nothing, and a pointwise model commutes with the
    mirror, so the two passes agree with plain inference."""
    half = random_image(2, 10, 7)
    image = np.concatenate([half, half[:, ::-1]], axis=1)
    plain = pointwise_predictor().predict(image)
    flipped = pointwise_predictor(InferenceOptions(hflip=True)).predict(image)
    np.testing.assert_allclose(flipped.probabilities, plain.probabilities, atol=1e-6)


def test_flip_tta_averages_the_unmirrored_probabilities(predictor, checkpoint):
    image = render_scene(5, 64, 80)[0]
    tta = Predictor.from_checkpoint(checkpoint, "cpu", InferenceOptions(hflip=True))
    mirrored = predictor.predict(np.ascontiguousarray(image[:, ::-1])).probabilities[:, :, ::-1]
    expected = (predictor.predict(image).probabilities + mirrored) / 2
    np.testing.assert_allclose(tta.predict(image).probabilities, expected, atol=1e-6)


def test_scale_one_only_equals_plain(predictor, checkpoint):
    image = render_scene(6, 64, 80)[0]
    scaled = Predictor.from_checkpoint(checkpoint, "cpu", InferenceOptions(scales=(1.0,)))
    np.testing.assert_array_equal(
        scaled.predict(image).probabilities, predictor.predict(image).probabilities
    )


def test_multi_scale_averages_resized_probabilities():
    """Oracle: OpenCV's bilinear resizing (pixel-centre aligned, as PyTorch's
    align_corners=False) of the image down and of the NumPy probabilities back up."""
    image = random_image(3, 16, 24)
    predictor = pointwise_predictor(InferenceOptions(scales=(0.5, 1.0)))
    result = predictor.predict(image).probabilities
    small = cv2.resize(image.astype(np.float32), (12, 8), interpolation=cv2.INTER_LINEAR)
    low = pointwise_probabilities(small, predictor.model).astype(np.float32)
    back = np.stack([cv2.resize(p, (24, 16), interpolation=cv2.INTER_LINEAR) for p in low])
    expected = (back + pointwise_probabilities(image, predictor.model)) / 2
    np.testing.assert_allclose(result, expected, atol=1e-4)


def test_batched_prediction_equals_one_at_a_time(predictor):
    images = [render_scene(seed, 64, 80)[0] for seed in (7, 8, 9)]
    batched = predictor.predict_batch(images)
    for image, prediction in zip(images, batched, strict=True):
        single = predictor.predict(image)
        np.testing.assert_allclose(prediction.probabilities, single.probabilities, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        InferenceOptions(),
        InferenceOptions(hflip=True),
        InferenceOptions(scales=(0.75, 1.0)),
        InferenceOptions(tile_size=(32, 48), overlap=0.5),
    ],
    ids=["plain", "hflip", "scales", "tiled"],
)
def test_labels_only_prediction_equals_the_argmax_of_the_probabilities(checkpoint, options):
    predictor = Predictor.from_checkpoint(checkpoint, "cpu", options)
    images = [render_scene(seed, 64, 80)[0] for seed in (3, 4)]
    full = predictor.predict_batch(images)
    fast = predictor.predict_batch(images, probabilities=False)
    for with_probabilities, labels_only in zip(full, fast, strict=True):
        assert labels_only.probabilities is None
        assert labels_only.labels.dtype == np.uint8
        assert labels_only.labels.shape == (64, 80)
        np.testing.assert_array_equal(labels_only.labels, with_probabilities.labels)
        np.testing.assert_array_equal(
            labels_only.labels, with_probabilities.probabilities.argmax(axis=0)
        )


def test_class_indices_is_numpy_argmax_with_the_first_index_on_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(2, 5, 7, 9)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(
        class_indices(torch.from_numpy(scores)).numpy(), scores.argmax(axis=1)
    )
    channels_last = torch.from_numpy(scores).contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(class_indices(channels_last).numpy(), scores.argmax(axis=1))


def test_labels_only_prediction_matches_numpy_and_has_no_confidence():
    predictor = pointwise_predictor()
    image = random_image(1, 12, 17)
    prediction = predictor.predict(image, probabilities=False)
    expected = pointwise_probabilities(image, predictor.model)
    np.testing.assert_array_equal(prediction.labels, expected.argmax(axis=0))
    with pytest.raises(ValueError, match="labels only; predict with probabilities=True"):
        _ = prediction.confidence


def test_labels_only_prediction_checks_the_input_size(predictor):
    with pytest.raises(InputSizeError, match=r"3x9 pixels.*minimum input 4x4"):
        predictor.predict(random_image(0, 3, 9), probabilities=False)


def test_predict_rejects_arrays_that_are_not_rgb_uint8(predictor):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        predictor.predict(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="float32"):
        predictor.predict(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="one size"):
        predictor.predict_batch([random_image(0, 8, 8), random_image(0, 8, 9)])


def test_an_image_smaller_than_the_stride_is_an_input_size_error(predictor):
    assert predictor.output_stride == 4  # depth 2
    with pytest.raises(InputSizeError, match=r"3x9 pixels.*minimum input 4x4"):
        predictor.predict(random_image(0, 3, 9))
    predictor.predict(random_image(0, 4, 4))  # exactly one stride is accepted


def test_a_scale_that_shrinks_below_the_stride_is_named(checkpoint):
    small_scale = Predictor.from_checkpoint(checkpoint, "cpu", InferenceOptions(scales=(0.25, 1)))
    with pytest.raises(InputSizeError, match=r"at scale 0.25 it is 3x3"):
        small_scale.predict(random_image(0, 12, 12))


def test_a_tile_smaller_than_the_stride_is_refused(checkpoint):
    with pytest.raises(ValueError, match=r"tile_size \(2, 8\).*output stride 4"):
        Predictor.from_checkpoint(checkpoint, "cpu", InferenceOptions(tile_size=(2, 8)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": (0, 8)}, "tile_size"),
        ({"tile_size": (8,)}, "tile_size"),
        ({"overlap": 1.0}, "overlap"),
        ({"window": "box"}, "window 'box'"),
        ({"tile_batch_size": 0}, "tile_batch_size"),
        ({"scales": ()}, "scales"),
        ({"scales": (1.0, -0.5)}, "scales"),
    ],
)
def test_inference_options_name_the_bad_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InferenceOptions(**kwargs)


def test_expand_inputs_reads_folders_globs_and_files_once(tmp_path, monkeypatch):
    for name in ("b.png", "a.jpg", "notes.txt", "clip.mp4"):
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    found = expand_inputs(["in", "in/*.png", "in/notes.txt"])
    assert [p.name for p in found] == ["a.jpg", "b.png", "clip.mp4", "notes.txt"]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        expand_inputs(["missing.png"])
    with pytest.raises(FileNotFoundError, match=r"nothing\*.png"):
        expand_inputs(["nothing*.png"])


def test_output_stems_are_distinct(tmp_path):
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "x_1.jpg"]
    assert output_stems(paths) == ["x", "x_1", "x_1_1"]
    assert output_stems([tmp_path / "x.mp4", tmp_path / "x.png"]) == ["x", "x_1"]


def test_plan_batches_groups_equal_sizes():
    sizes = [(4, 4), (5, 4), (4, 4), (4, 4), (5, 4)]
    assert plan_batches(sizes, 2) == [[0, 2], [3], [1, 4]]
    assert plan_batches(sizes, 1) == [[0], [2], [3], [1], [4]]
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches(sizes, 0)


def test_predict_files_writes_every_output(predictor, tmp_path):
    image = render_scene(10, 64, 80)[0]
    path = write_image(tmp_path / "in" / "scene.png", image)
    failures = predict_files(
        predictor, [path], tmp_path / "out", alpha=0.3, probabilities=True, confidence=True,
        progress=False,
    )  # fmt: skip
    assert failures == []
    expected = predictor.predict(image)
    out = tmp_path / "out"
    labels = Image.open(out / "scene_labels.png")
    assert labels.mode == "P"
    np.testing.assert_array_equal(np.asarray(labels), expected.labels)
    palette = np.array(labels.getpalette()[: 3 * 8]).reshape(8, 3)
    np.testing.assert_array_equal(palette, np.array(SYNTHETIC_LABELS.colours))
    overlay = np.asarray(Image.open(out / "scene_overlay.png"))
    colours = np.array(SYNTHETIC_LABELS.colours)[expected.labels]
    np.testing.assert_allclose(overlay[:, :80], 0.7 * image + 0.3 * colours, atol=0.51)
    classes = sorted(np.unique(expected.labels).tolist())
    assert overlay.shape[1] == 80 + legend_panel(SYNTHETIC_LABELS, classes, 64).shape[1]
    stored = np.load(out / "scene_probabilities.npz")
    assert stored["probabilities"].dtype == np.float16
    np.testing.assert_allclose(stored["probabilities"], expected.probabilities, atol=1e-3)
    assert list(stored["class_names"]) == list(SYNTHETIC_LABELS.names)
    confidence = np.asarray(Image.open(out / "scene_confidence.png"))
    assert confidence.dtype == np.uint8
    np.testing.assert_allclose(confidence, expected.probabilities.max(0) * 255, atol=0.51)


def test_same_stems_from_two_folders_get_their_own_outputs(predictor, tmp_path):
    first = write_image(tmp_path / "a" / "x.png", render_scene(11, 64, 80)[0])
    second = write_image(tmp_path / "b" / "x.png", render_scene(12, 64, 80)[0])
    predict_files(predictor, [first, second], tmp_path / "out", progress=False)
    for path, stem in ((first, "x"), (second, "x_1")):
        written = np.asarray(Image.open(tmp_path / "out" / f"{stem}_labels.png"))
        np.testing.assert_array_equal(written, predictor.predict(np.array(Image.open(path))).labels)


def test_batches_of_mixed_sizes_give_the_same_files(predictor, tmp_path):
    paths = [
        write_image(tmp_path / "in" / f"{i}.png", render_scene(i, *size)[0])
        for i, size in enumerate([(64, 80), (48, 64), (64, 80), (64, 80), (48, 64)])
    ]
    predict_files(predictor, paths, tmp_path / "one", batch_size=1, progress=False)
    predict_files(predictor, paths, tmp_path / "three", batch_size=3, progress=False)
    for i in range(5):
        one = np.asarray(Image.open(tmp_path / "one" / f"{i}_labels.png"))
        three = np.asarray(Image.open(tmp_path / "three" / f"{i}_labels.png"))
        np.testing.assert_array_equal(one, three)


def test_an_undecodable_or_too_small_image_is_reported_and_the_rest_go_on(predictor, tmp_path):
    good = write_image(tmp_path / "in" / "good.png", render_scene(13, 64, 80)[0])
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    tiny = write_image(tmp_path / "in" / "tiny.png", random_image(0, 2, 2))
    failures = predict_files(predictor, [broken, good, tiny], tmp_path / "out", progress=False)
    assert [path for path, _ in failures] == [broken, tiny]
    assert str(broken) in failures[0][1] and "cannot decode" in failures[0][1]
    assert str(tiny) in failures[1][1] and "minimum input" in failures[1][1]
    assert (tmp_path / "out" / "good_labels.png").is_file()
    assert not (tmp_path / "out" / "broken_labels.png").exists()


def test_an_output_that_would_overwrite_an_input_is_refused(predictor, tmp_path):
    scene = write_image(tmp_path / "scene.png", render_scene(14, 64, 80)[0])
    earlier = write_image(tmp_path / "scene_overlay.png", render_scene(15, 64, 80)[0])
    before = earlier.read_bytes()
    with pytest.raises(ValueError, match=r"scene_overlay.png.*overwrite the input"):
        predict_files(predictor, [scene, earlier], tmp_path, progress=False)
    assert earlier.read_bytes() == before
    assert not (tmp_path / "scene_labels.png").exists()
