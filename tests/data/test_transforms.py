import re

import numpy as np
import pytest
import torch

from semseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor, train_augmentation
from semseg.labels import IGNORE_INDEX


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    mask = rng.integers(0, 11, (12, 20), dtype=np.uint8)
    return image, mask


def _run(augmentation, image, mask, seed):
    augmentation.set_random_seed(seed)
    out = augmentation(image=image, mask=mask)
    return out["image"], out["mask"]


def test_imagenet_statistics():
    np.testing.assert_allclose(IMAGENET_MEAN, (0.485, 0.456, 0.406))
    np.testing.assert_allclose(IMAGENET_STD, (0.229, 0.224, 0.225))


def test_to_tensor_matches_numpy(pair):
    image = pair[0]
    tensor = to_tensor(image)
    assert tensor.shape == (3, 12, 20)
    assert tensor.dtype == torch.float32
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((image / 255.0 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(tensor.numpy(), expected, rtol=0, atol=1e-5)


def test_to_tensor_is_contiguous_and_exact_for_every_uint8_value():
    """The lookup table against float32 arithmetic in NumPy, value by value."""
    image = np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=1).reshape(16, 16, 3)
    tensor = to_tensor(image)
    assert tensor.is_contiguous() and tensor.shape == (3, 16, 16)
    mean, std = np.float32(IMAGENET_MEAN), np.float32(IMAGENET_STD)
    expected = (image.astype(np.float32) / np.float32(255) - mean) / std
    np.testing.assert_array_equal(tensor.numpy(), expected.transpose(2, 0, 1))


def test_to_tensor_custom_statistics(pair):
    image = pair[0]
    tensor = to_tensor(image, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    np.testing.assert_allclose(tensor.numpy(), image.transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)


def test_fixed_size_without_randomness_is_identity(pair):
    image, mask = pair
    augmentation = train_augmentation((12, 20), scale_range=(1, 1), hflip=False, photometric=0)
    out_image, out_mask = _run(augmentation, image, mask, seed=5)
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)


def test_flip_moves_image_and_mask_together(pair):
    image, mask = pair
    augmentation = train_augmentation((12, 20), scale_range=(1, 1), photometric=0)
    flipped = 0
    for seed in range(20):
        out_image, out_mask = _run(augmentation, image, mask, seed)
        if np.array_equal(out_mask, mask[:, ::-1]):
            np.testing.assert_array_equal(out_image, image[:, ::-1])
            flipped += 1
        else:
            np.testing.assert_array_equal(out_mask, mask)
            np.testing.assert_array_equal(out_image, image)
    assert 0 < flipped < 20


def test_mask_scaled_by_nearest_neighbour(pair):
    image, mask = pair
    augmentation = train_augmentation((24, 40), scale_range=(2, 2), hflip=False, photometric=0)
    out_image, out_mask = _run(augmentation, image, mask, seed=0)
    assert out_image.shape == (24, 40, 3)
    np.testing.assert_array_equal(out_mask, mask.repeat(2, axis=0).repeat(2, axis=1))


def test_random_scale_keeps_mask_values(pair):
    image, mask = pair
    mask[:4] = 255
    augmentation = train_augmentation((8, 8), scale_range=(0.5, 2.0), photometric=0)
    for seed in range(10):
        _, out_mask = _run(augmentation, image, mask, seed)
        assert out_mask.shape == (8, 8)
        assert set(np.unique(out_mask)) <= set(np.unique(mask))


def test_photometric_changes_image_not_mask(pair):
    image, mask = pair
    augmentation = train_augmentation((12, 20), scale_range=(1, 1), hflip=False, photometric=0.4)
    changed = 0
    for seed in range(10):
        out_image, out_mask = _run(augmentation, image, mask, seed)
        np.testing.assert_array_equal(out_mask, mask)
        changed += not np.array_equal(out_image, image)
    assert changed > 0


@pytest.mark.parametrize("scale_range", [(0, 1), (2, 1), (-1, 2)])
def test_bad_scale_range(scale_range):
    with pytest.raises(ValueError, match=re.escape(str(scale_range))):
        train_augmentation((8, 8), scale_range=scale_range)


def _crops(augmentation, image, mask, seeds):
    return [_run(augmentation, image, mask, seed) for seed in seeds]


def test_class_balanced_crop_is_drawn_per_present_class():
    # One pixel of class 3 in a 40x60 field of class 0: a uniform 4x4 crop holds it with
    # probability 16 / (37 * 57) = 0.8%; a balanced one whenever class 3 is drawn, which is
    # half the time (two classes present), and only then.
    image = np.zeros((40, 60, 3), np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[30, 50] = 3
    balanced = train_augmentation(
        (4, 4), (1, 1), hflip=False, photometric=0, class_balanced_crops=1.0
    )
    uniform = train_augmentation((4, 4), (1, 1), hflip=False, photometric=0)
    seeds = range(400)
    hits = sum(3 in m for _, m in _crops(balanced, image, mask, seeds))
    assert 160 <= hits <= 240  # binomial(400, 0.5): mean 200, sd 10
    assert sum(3 in m for _, m in _crops(uniform, image, mask, seeds)) <= 12


def test_class_balanced_crop_keeps_the_pixel_it_chose_and_ignores_void():
    # Class 3 at the image corners and nothing but void elsewhere: every balanced crop holds
    # a class-3 pixel (void is never drawn), the window stays inside the image, and image and
    # mask are cut at the same place.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = np.full((20, 30), IGNORE_INDEX, np.uint8)
    for row, column in [(0, 0), (0, 29), (19, 0), (19, 29)]:
        mask[row, column] = 3
    balanced = train_augmentation(
        (6, 8), (1, 1), hflip=False, photometric=0, class_balanced_crops=1.0
    )
    corners_seen = set()
    for cropped_image, cropped_mask in _crops(balanced, image, mask, range(100)):
        assert cropped_mask.shape == (6, 8)
        assert 3 in cropped_mask
        # locate the crop by its image content; the mask must match at the same offset
        matches = [
            (top, left)
            for top in range(15)
            for left in range(23)
            if np.array_equal(image[top : top + 6, left : left + 8], cropped_image)
        ]
        assert len(matches) == 1
        top, left = matches[0]
        np.testing.assert_array_equal(mask[top : top + 6, left : left + 8], cropped_mask)
        corners_seen.add((top, left))
    assert corners_seen == {(0, 0), (0, 22), (14, 0), (14, 22)}


def test_class_balanced_crop_without_labels_falls_back_to_uniform():
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.full((20, 30), IGNORE_INDEX, np.uint8)
    balanced = train_augmentation((6, 8), (1, 1), photometric=0, class_balanced_crops=1.0)
    assert all(m.shape == (6, 8) for _, m in _crops(balanced, image, mask, range(10)))


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_class_balanced_crop_fraction_is_checked(fraction):
    with pytest.raises(ValueError, match=r"class_balanced_crops must lie in \[0, 1\]"):
        train_augmentation((4, 4), class_balanced_crops=fraction)
