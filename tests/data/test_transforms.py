import re

import numpy as np
import pytest
import torch

from semseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor, train_augmentation


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
