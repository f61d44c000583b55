import re

import albumentations as A
import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.utils.data import DataLoader

import semseg.data.dataset as dataset_module
from semseg.data.dataset import FileDataset, MaskSizeError, PreloadMemoryError, SyntheticDataset
from semseg.data.formats import list_split
from semseg.data.synthetic import render_scene
from semseg.data.transforms import train_augmentation
from semseg.labels import LabelError

MEAN = np.array([0.485, 0.456, 0.406])[:, None, None]
STD = np.array([0.229, 0.224, 0.225])[:, None, None]


def _pixels(image: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: (3, H, W) tensor -> (3, H, W) float64 values in 0..255."""
    return (image.double().numpy() * STD + MEAN) * 255


# --- FileDataset ------------------------------------------------------------------------


def test_file_dataset_tensors(make_camvid, random_pair):
    pairs = [random_pair(i, size=(6, 8)) for i in range(3)]
    dataset = FileDataset(list_split(make_camvid({"train": pairs}), "train"))
    assert len(dataset) == 3
    assert dataset.name(2) == "train_002"
    for index, (raw_image, raw_mask) in enumerate(pairs):
        image, mask = dataset[index]
        assert image.shape == (3, 6, 8)
        assert image.dtype == torch.float32
        expected = (raw_image.transpose(2, 0, 1) / 255.0 - MEAN) / STD
        np.testing.assert_allclose(image.numpy(), expected, rtol=0, atol=1e-5)
        assert mask.shape == (6, 8)
        assert mask.dtype == torch.int64
        np.testing.assert_array_equal(mask.numpy(), np.where(raw_mask == 11, 255, raw_mask))
        np.testing.assert_array_equal(dataset.read_mask(index), mask.numpy())


def test_file_dataset_batches(make_camvid, random_pair):
    dataset = FileDataset(
        list_split(make_camvid({"val": [random_pair(i) for i in range(4)]}), "val"),
        augmentation=train_augmentation((4, 4), photometric=0.2),
    )
    images, masks = next(iter(DataLoader(dataset, batch_size=4)))
    assert images.shape == (4, 3, 4, 4)
    assert masks.shape == (4, 4, 4)
    assert masks.dtype == torch.int64


def test_mask_size_mismatch_names_both_files(make_camvid, random_pair):
    image, _ = random_pair(0, size=(6, 8))
    _, mask = random_pair(1, size=(6, 9))
    root = make_camvid({"train": [(image, mask)]})
    dataset = FileDataset(list_split(root, "train"))
    with pytest.raises(MaskSizeError) as error:
        dataset[0]
    message = str(error.value)
    assert str(root / "trainannot" / "train_000.png") in message
    assert str(root / "train" / "train_000.png") in message
    assert "9x6" in message and "8x6" in message


def test_label_outside_classes_names_file(make_camvid, random_pair):
    image, mask = random_pair(0)
    mask[2, 3] = 12  # CamVid raw values are 0..11
    root = make_camvid({"train": [(image, mask)]})
    with pytest.raises(LabelError, match=re.escape(str(root / "trainannot" / "train_000.png"))):
        FileDataset(list_split(root, "train"))[0]


def test_preloaded_samples_equal_decoded_ones_and_survive_writes(make_camvid, random_pair):
    root = make_camvid({"train": [random_pair(i, size=(12, 16)) for i in range(3)]})
    augmentation = train_augmentation((8, 8), photometric=0.2)
    decoded = FileDataset(list_split(root, "train"), augmentation, seed=5)
    preloaded = FileDataset(list_split(root, "train"), augmentation, seed=5, preload=True)
    for epoch in (0, 1):
        decoded.set_epoch(epoch)
        preloaded.set_epoch(epoch)
        for index in range(3):
            for ours, theirs in zip(preloaded[index], decoded[index], strict=True):
                assert torch.equal(ours, theirs)
    image, mask = preloaded.read(1)
    image[:] = 0
    mask[:] = 0
    for ours, theirs in zip(preloaded.read(1), decoded.read(1), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_preload_reads_every_file_when_made(make_camvid, random_pair):
    image, mask = random_pair(0)
    mask[2, 3] = 12  # CamVid raw values are 0..11
    root = make_camvid({"train": [random_pair(1), (image, mask)]})
    FileDataset(list_split(root, "train"))  # reads nothing yet
    with pytest.raises(LabelError, match=re.escape(str(root / "trainannot" / "train_001.png"))):
        FileDataset(list_split(root, "train"), preload=True)


def test_preload_refuses_what_does_not_fit_in_memory(make_camvid, random_pair, monkeypatch):
    root = make_camvid({"train": [random_pair(i, size=(6, 8)) for i in range(3)]})
    # 3 frames of 6x8 pixels at 4 bytes a pixel: 576 bytes
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 575)
    with pytest.raises(PreloadMemoryError, match=r"3 frames .* set data\.preload=false"):
        FileDataset(list_split(root, "train"), preload=True)
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 576)
    assert len(FileDataset(list_split(root, "train"), preload=True)) == 3


# --- SyntheticDataset -------------------------------------------------------------------


def test_synthetic_matches_renderer():
    dataset = SyntheticDataset("val", length=3, image_size=(40, 48))
    assert len(dataset) == 3
    image, mask = dataset[2]
    raw_image, raw_mask = render_scene(1_000_002, height=40, width=48)
    np.testing.assert_allclose(_pixels(image), raw_image.transpose(2, 0, 1), atol=1e-3)
    np.testing.assert_array_equal(mask.numpy(), raw_mask)
    assert mask.dtype == torch.int64
    assert dataset.name(2) == "scene_1000002"


def test_synthetic_splits_differ_and_repeat():
    size = (40, 48)
    first = {split: SyntheticDataset(split, 2, size)[0] for split in ("train", "val", "test")}
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not torch.equal(first[a][1], first[b][1])
    again_image, again_mask = SyntheticDataset("train", 2, size)[0]
    assert torch.equal(again_image, first["train"][0])
    assert torch.equal(again_mask, first["train"][1])


@pytest.mark.parametrize(
    ("split", "length", "error", "message"),
    [
        ("training", 4, ValueError, "'training'"),
        ("train", 0, ValueError, "got 0"),
    ],
)
def test_synthetic_bad_arguments(split, length, error, message):
    with pytest.raises(error, match=message):
        SyntheticDataset(split, length)


def test_synthetic_index_out_of_range():
    with pytest.raises(IndexError):
        SyntheticDataset("train", 2, (40, 48))[2]


# --- augmentation -----------------------------------------------------------------------


def _augmented(seed: int = 0) -> SyntheticDataset:
    return SyntheticDataset(
        "train", 6, (48, 64), augmentation=train_augmentation((32, 40)), seed=seed
    )


def test_augmentation_is_a_function_of_seed_epoch_index():
    dataset = _augmented()
    dataset.set_epoch(3)
    image, mask = dataset[4]
    for other in (0, 5, 1):  # draws of other samples must not leak into sample 4
        dataset[other]
    again = _augmented()  # a fresh pipeline, as in another worker or a resumed run
    again.set_epoch(3)
    assert torch.equal(again[4][0], image)
    assert torch.equal(again[4][1], mask)
    assert torch.equal(dataset[4][0], image)

    again.set_epoch(4)
    assert not torch.equal(again[4][0], image)
    assert not torch.equal(_augmented(seed=1)[4][0], dataset[4][0])


@pytest.mark.parametrize("nested", [False, True])
def test_augmentation_draws_are_independent(array_dataset, nested):
    """Flip and crop position come from separate draws: in 200 samples every combination of
    (flipped or not) x (crop in the upper or lower half of its range) occurs often."""
    height, width = 64, 48
    image = np.repeat(np.arange(width, dtype=np.uint8)[None, :, None], height, 0).repeat(3, 2)
    rows = np.repeat(np.arange(height, dtype=np.uint8)[:, None], width, 1)  # mask = row index
    augmentation = train_augmentation((32, width), scale_range=(1, 1), photometric=0)
    if nested:
        augmentation = A.Compose([A.Compose([A.RandomCrop(32, width), A.HorizontalFlip()])])
    dataset = array_dataset([(image, rows)] * 200, augmentation)
    counts = np.zeros((2, 2), dtype=int)
    for index in range(len(dataset)):
        out_image, out_mask = dataset[index]
        top = int(out_mask[0, 0])  # first row of the crop, 0..32
        flipped = bool(out_image[0, 0, 0] > out_image[0, 0, -1])
        counts[int(top >= 16), int(flipped)] += 1
    # independent fair draws: each cell ~50 (binomial sd 6); correlated draws empty two cells
    assert counts.min() >= 25, counts


@pytest.fixture
def quadrants() -> tuple[np.ndarray, np.ndarray]:
    """A 192x256 mask of four labels with a label-10 box and a void box; the image paints
    label k as grey level 20 k (void as 0)."""
    mask = np.zeros((192, 256), dtype=np.uint8)
    mask[:96, :128], mask[:96, 128:], mask[96:, :128], mask[96:, 128:] = 1, 5, 8, 3
    mask[130:170, 30:90] = 10
    mask[30:60, 160:220] = 255
    grey = (20 * np.where(mask == 255, 0, mask)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), mask


def test_image_and_mask_move_together(array_dataset, quadrants):
    augmentation = train_augmentation((128, 160), scale_range=(0.5, 2.0), photometric=0)
    dataset = array_dataset([quadrants] * 40, augmentation)
    agree = labelled = interior_wrong = interior = 0
    for index in range(len(dataset)):
        image, mask = dataset[index]
        grey, mask = np.rint(_pixels(image)), mask.numpy()
        assert (grey[0] == grey[1]).all() and (grey[0] == grey[2]).all()
        matches = grey[0] == 20 * mask
        known = mask != 255
        agree += (matches & known).sum()
        labelled += known.sum()
        # away from label edges and crop borders bilinear and nearest sampling must agree
        lowest = ndimage.minimum_filter(mask, 3, mode="constant", cval=255)
        highest = ndimage.maximum_filter(mask, 3, mode="constant", cval=255)
        inside = known & (lowest == highest)
        interior_wrong += (~matches & inside).sum()
        interior += inside.sum()
    assert agree / labelled > 0.97
    assert interior > 0.8 * labelled
    assert interior_wrong == 0


def test_padding_is_ignored(array_dataset, random_pair):
    image, mask = random_pair(0, size=(20, 30), values=range(11))
    augmentation = train_augmentation((40, 50), scale_range=(1, 1), photometric=0)
    dataset = array_dataset([(image, mask)] * 12, augmentation)
    flips = 0
    for index in range(len(dataset)):
        out_image, out_mask = dataset[index]
        out_image, out_mask = _pixels(out_image), out_mask.numpy()
        assert out_mask.shape == (40, 50)
        labelled = np.argwhere(out_mask != 255)
        (top, left), (bottom, right) = labelled.min(0), labelled.max(0) + 1
        assert (bottom - top, right - left) == (20, 30)
        assert (out_mask == 255).sum() == 40 * 50 - 20 * 30
        inner_mask = out_mask[top:bottom, left:right]
        inner_image = np.rint(out_image[:, top:bottom, left:right]).transpose(1, 2, 0)
        flipped = not np.array_equal(inner_mask, mask)
        flips += flipped
        expected = (image[:, ::-1], mask[:, ::-1]) if flipped else (image, mask)
        np.testing.assert_array_equal(inner_mask, expected[1])
        np.testing.assert_array_equal(inner_image, expected[0])
        outside = np.ones((40, 50), dtype=bool)
        outside[top:bottom, left:right] = False
        np.testing.assert_allclose(out_image[:, outside], 0, atol=1e-3)  # padded with black
    assert 0 < flips < len(dataset)
