import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from semseg.data.dataset import FileDataset
from semseg.data.formats import (
    CITYSCAPES,
    VOC,
    DatasetError,
    Sample,
    detect_format,
    list_split,
    list_splits,
)
from semseg.labels import CAMVID, IGNORE_INDEX

SIZE = (6, 8)  # H, W of every test image


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


# --- CamVid -----------------------------------------------------------------------------


def test_camvid_pairs_and_labels(make_camvid, random_pair):
    root = make_camvid(
        {"train": [random_pair(i) for i in range(3)], "val": [random_pair(9, values=[11])]}
    )
    assert detect_format(root) == "camvid"
    files = list_split(root, "train")
    assert files.labels == CAMVID
    assert not files.colour_masks
    names = [f"train_{i:03d}.png" for i in range(3)]
    assert files.samples == tuple(
        Sample(root / "train" / name, root / "trainannot" / name) for name in names
    )
    val = list_split(str(root), "val", "camvid")
    assert [s.mask for s in val.samples] == [root / "valannot" / "val_000.png"]


def test_image_without_mask_names_folder_and_image(make_camvid, random_pair):
    root = make_camvid({"train": [random_pair(i) for i in range(3)]})
    (root / "trainannot" / "train_001.png").unlink()
    with pytest.raises(DatasetError) as error:
        list_split(root, "train")
    message = str(error.value)
    assert str(root / "trainannot") in message
    assert "train_001.png" in message
    assert "train_000.png" not in message


def test_a_camvid_copy_with_only_a_test_split_is_recognised(make_camvid, random_pair):
    root = make_camvid({"test": [random_pair(0)]})
    (root / "notes").mkdir()
    (root / "annot").mkdir()  # no split name before "annot"
    assert detect_format(root) == "camvid"
    assert list_splits(root) == ["test"]
    assert [s.image.name for s in list_split(root, "test").samples] == ["test_000.png"]
    (root / "valannot").mkdir()  # without val/ it is not a split
    assert list_splits(root, "camvid") == ["test"]


def test_unpaired_files_are_listed_when_not_strict(make_camvid, random_pair):
    root = make_camvid({"train": [random_pair(i) for i in range(3)]})
    (root / "trainannot" / "train_001.png").unlink()
    (root / "train" / "train_002.png").rename(root / "train" / "renamed.png")
    files = list_split(root, "train", strict=False)
    assert [s.image.name for s in files.samples] == ["train_000.png"]
    assert files.images_without_masks == (
        root / "train" / "renamed.png",
        root / "train" / "train_001.png",
    )
    assert files.masks_without_images == (root / "trainannot" / "train_002.png",)
    with pytest.raises(DatasetError, match="no mask for 2 image"):
        list_split(root, "train")


def test_empty_image_folder(make_camvid, random_pair):
    root = make_camvid({"train": [random_pair(0)]})
    (root / "val").mkdir()
    (root / "val" / "readme.txt").write_text("no images here")
    (root / "valannot").mkdir()
    with pytest.raises(DatasetError, match=re.escape(f"{root / 'val'}: no images")):
        list_split(root, "val")


def test_missing_split(make_camvid, random_pair):
    root = make_camvid({"train": [random_pair(0)]})
    with pytest.raises(DatasetError, match=re.escape(f"{root / 'test'}: folder not found")):
        list_split(root, "test")


def test_unknown_format(make_camvid, random_pair):
    root = make_camvid({"train": [random_pair(0)]})
    with pytest.raises(DatasetError, match="'kitti'.*camvid, folder, voc, cityscapes"):
        list_split(root, "train", "kitti")


def test_missing_root_and_undetectable_layout(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'nowhere'}: dataset folder")):
        list_split(tmp_path / "nowhere", "train")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path}: cannot tell")):
        list_split(tmp_path, "train")


# --- folder -----------------------------------------------------------------------------

CLASSES = [
    {"name": "road", "colour": [128, 64, 128]},
    {"name": "car", "colour": [0, 0, 142]},
    {"name": "sky", "colour": [70, 130, 180]},
]


def _write_folder(root: Path, spec: dict, masks: list[np.ndarray], split: str = "train") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.yaml").write_text(yaml.safe_dump(spec))
    for i, mask in enumerate(masks):
        _save(root / split / "images" / f"img{i}.jpg", _image(i))
        _save(root / split / "masks" / f"img{i}.png", mask)


def test_folder_index_masks(tmp_path):
    raw = np.array([0, 1, 2, 255] * 12, dtype=np.uint8).reshape(SIZE)
    _write_folder(tmp_path, {"classes": CLASSES, "masks": "index", "void": [255]}, [raw, raw])
    assert detect_format(tmp_path) == "folder"
    files = list_split(tmp_path, "train")
    assert files.labels.names == ("road", "car", "sky")
    assert files.labels.colours == ((128, 64, 128), (0, 0, 142), (70, 130, 180))
    assert dict(files.labels.raw_to_train) == {0: 0, 1: 1, 2: 2, 255: IGNORE_INDEX}
    assert not files.colour_masks
    assert [(s.image.name, s.mask.name) for s in files.samples] == [
        ("img0.jpg", "img0.png"),
        ("img1.jpg", "img1.png"),
    ]
    _, mask = FileDataset(files)[1]
    np.testing.assert_array_equal(mask.numpy(), raw)


def test_folder_colour_masks(tmp_path):
    ids = np.array([0, 1, 2, 255] * 12, dtype=np.uint8).reshape(SIZE)
    colours = np.array([c["colour"] for c in CLASSES] + [[0, 0, 0]], dtype=np.uint8)
    rgb = colours[np.minimum(ids, 3)]  # 255 -> row 3, the void colour
    spec = {"classes": CLASSES, "masks": "colour", "void_colour": [0, 0, 0]}
    _write_folder(tmp_path, spec, [rgb], split="val")
    files = list_split(tmp_path, "val", "folder")
    assert files.colour_masks
    _, mask = FileDataset(files)[0]
    np.testing.assert_array_equal(mask.numpy(), ids)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"classes": CLASSES, "mask": "index"}, r"unknown key\(s\) \['mask'\]"),
        ({"names": ["road"]}, r"unknown key\(s\) \['names'\]"),
        ({"classes": [{"name": "road"}]}, "'classes' must be a list of"),
        ({"classes": CLASSES, "masks": "rgb"}, "'rgb'"),
        ({"classes": [{"name": "road", "colour": [128, 64]}]}, r"\[128, 64\]|\(128, 64\)"),
        ({"classes": CLASSES, "void": [300]}, "300"),
        ({"classes": []}, "no classes"),
    ],
)
def test_folder_bad_labels_yaml_names_file(tmp_path, spec, message):
    _write_folder(tmp_path, spec, [np.zeros(SIZE, np.uint8)])
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "labels.yaml"))) as error:
        list_split(tmp_path, "train", "folder")
    assert re.search(message, str(error.value))


def test_folder_labels_yaml_not_a_mapping(tmp_path):
    # the classes list written at the top level instead of under 'classes:'
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump(CLASSES))
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "labels.yaml"))):
        list_split(tmp_path, "train", "folder")


def test_folder_without_labels_yaml(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'labels.yaml'}: missing")):
        list_split(tmp_path, "train", "folder")


# --- PASCAL VOC -------------------------------------------------------------------------


def _write_voc(base: Path, ids: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """VOC2012 layout under ``base``; returns the raw mask of each id."""
    masks = {}
    for split, names in ids.items():
        for i, name in enumerate(names):
            raw = np.full(SIZE, i % 21, dtype=np.uint8)
            raw[0] = 255  # object border
            raw[1, :3] = 15  # a person
            masks[name] = raw
            _save(base / "JPEGImages" / f"{name}.jpg", _image(i))
            mask = Image.fromarray(raw)
            mask.putpalette(VOC.palette().reshape(-1).tolist())
            (base / "SegmentationClass").mkdir(exist_ok=True)
            mask.save(base / "SegmentationClass" / f"{name}.png")
        list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        list_file.parent.mkdir(parents=True, exist_ok=True)
        list_file.write_text("".join(f"{name}\n" for name in names))
    return masks


@pytest.mark.parametrize("nested", [False, True])
def test_voc(tmp_path, nested):
    root = tmp_path / ("VOCdevkit" if nested else "VOC2012")
    base = root / "VOC2012" if nested else root
    masks = _write_voc(base, {"train": ["2007_000032", "2007_000039"], "val": ["2008_000002"]})
    assert detect_format(root) == "voc"
    files = list_split(root, "train")
    assert files.labels == VOC
    assert [(s.image, s.mask) for s in files.samples] == [
        (base / "JPEGImages" / "2007_000032.jpg", base / "SegmentationClass" / "2007_000032.png"),
        (base / "JPEGImages" / "2007_000039.jpg", base / "SegmentationClass" / "2007_000039.png"),
    ]
    dataset = FileDataset(files)
    _, mask = dataset[1]
    np.testing.assert_array_equal(mask.numpy(), masks["2007_000039"])  # 255 stays 255
    assert len(list_split(root, "val").samples) == 1


def test_voc_label_set():
    assert VOC.num_classes == 21
    assert VOC.names[0] == "background"
    assert VOC.names[15] == "person"
    assert VOC.names[20] == "tvmonitor"
    # the PASCAL VOC colour map, from the devkit's palette
    assert VOC.colours[:9] == (
        (0, 0, 0),
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (0, 0, 128),
        (128, 0, 128),
        (0, 128, 128),
        (128, 128, 128),
        (64, 0, 0),
    )
    assert VOC.colours[15] == (192, 128, 128)
    assert VOC.colours[20] == (0, 64, 128)
    raw = np.array([[0, 20, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(VOC.encode(raw), [[0, 20, 255]])
    with pytest.raises(ValueError, match=r"\[21\]"):
        VOC.encode(np.array([[21]], dtype=np.uint8))


def test_voc_listed_file_missing(tmp_path):
    _write_voc(tmp_path, {"train": ["a", "b"]})
    (tmp_path / "SegmentationClass" / "b.png").unlink()
    id_file = tmp_path / "ImageSets" / "Segmentation" / "train.txt"
    with pytest.raises(DatasetError) as error:
        list_split(tmp_path, "train", "voc")
    assert str(tmp_path / "SegmentationClass" / "b.png") in str(error.value)
    assert str(id_file) in str(error.value)


def test_voc_unpaired_ids_when_not_strict(tmp_path):
    _write_voc(tmp_path, {"train": ["a", "b", "c"]})
    (tmp_path / "SegmentationClass" / "b.png").unlink()
    (tmp_path / "JPEGImages" / "c.jpg").unlink()
    files = list_split(tmp_path, "train", "voc", strict=False)
    assert [s.image.name for s in files.samples] == ["a.jpg"]
    assert files.images_without_masks == (tmp_path / "JPEGImages" / "b.jpg",)
    assert files.masks_without_images == (tmp_path / "SegmentationClass" / "c.png",)
    with pytest.raises(DatasetError, match="b.png: listed in"):
        list_split(tmp_path, "train", "voc")


def test_voc_missing_split_list(tmp_path):
    _write_voc(tmp_path, {"train": ["a"]})
    id_file = tmp_path / "ImageSets" / "Segmentation" / "val.txt"
    with pytest.raises(DatasetError, match=re.escape(f"{id_file}: split list not found")):
        list_split(tmp_path, "val")


# --- Cityscapes -------------------------------------------------------------------------


def _write_cityscapes(root: Path, split: str, frames: dict[str, list[str]]) -> None:
    """Frames per city; masks hold labelIds 0..33 in order, plus color/instanceIds files."""
    label_ids = np.arange(48, dtype=np.uint8).reshape(SIZE) % 34
    for city, stems in frames.items():
        for i, stem in enumerate(stems):
            _save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _image(i))
            gt = root / "gtFine" / split / city
            _save(gt / f"{stem}_gtFine_labelIds.png", label_ids)
            _save(gt / f"{stem}_gtFine_instanceIds.png", np.full(SIZE, 200, np.uint8))
            _save(gt / f"{stem}_gtFine_color.png", _image(100 + i))


def test_cityscapes(tmp_path):
    frames = {
        "aachen": ["aachen_000000_000019", "aachen_000001_000019"],
        "bochum": ["bochum_000000_000313"],
    }
    _write_cityscapes(tmp_path, "train", frames)
    assert detect_format(tmp_path) == "cityscapes"
    files = list_split(tmp_path, "train")
    assert files.labels == CITYSCAPES
    expected = [
        (
            tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png",
            tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png",
        )
        for city, stems in frames.items()
        for stem in stems
    ]
    assert [(s.image, s.mask) for s in files.samples] == expected
    _, mask = FileDataset(files)[2]
    mask = mask.numpy().ravel()
    raw = np.arange(48) % 34
    # cityscapesScripts labels.py: labelId -> trainId of the 19 evaluated classes
    train_ids = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9}
    train_ids |= {23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    np.testing.assert_array_equal(mask, [train_ids.get(int(r), 255) for r in raw])
    assert CITYSCAPES.names[0] == "road"
    assert CITYSCAPES.names[13] == "car"


def test_cityscapes_missing_mask_names_city_folder_and_image(tmp_path):
    _write_cityscapes(tmp_path, "val", {"lindau": ["lindau_000000_000019", "lindau_000001_000019"]})
    gt = tmp_path / "gtFine" / "val" / "lindau"
    (gt / "lindau_000001_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError) as error:
        list_split(tmp_path, "val", "cityscapes")
    assert str(gt) in str(error.value)
    assert "lindau_000001_000019_leftImg8bit.png" in str(error.value)


def test_cityscapes_unpaired_files_are_only_image_and_label_id_files(tmp_path):
    _write_cityscapes(tmp_path, "val", {"lindau": ["lindau_000000_000019", "lindau_000001_000019"]})
    _write_cityscapes(tmp_path, "val", {"munster": ["munster_000000_000019"]})
    (tmp_path / "leftImg8bit" / "val" / "lindau" / "lindau_000001_000019_leftImg8bit.png").unlink()
    gt = tmp_path / "gtFine" / "val"
    (gt / "lindau" / "lindau_000000_000019_gtFine_labelIds.png").unlink()
    for path in (tmp_path / "leftImg8bit" / "val" / "munster").iterdir():
        path.unlink()
    (tmp_path / "leftImg8bit" / "val" / "munster").rmdir()
    files = list_split(tmp_path, "val", strict=False)
    assert files.samples == ()
    assert files.images_without_masks == (
        tmp_path / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png",
    )
    # The color and instanceIds files are not masks; munster has masks but no images.
    assert files.masks_without_images == (
        gt / "lindau" / "lindau_000001_000019_gtFine_labelIds.png",
        gt / "munster" / "munster_000000_000019_gtFine_labelIds.png",
    )


def test_splits_of_each_format(tmp_path, make_camvid, random_pair):
    camvid = make_camvid({"train": [random_pair(0)], "val": [random_pair(1)]})
    assert list_splits(camvid) == ["train", "val"]
    raw = np.zeros(SIZE, dtype=np.uint8)
    _write_folder(tmp_path / "folder", {"classes": CLASSES}, [raw], split="val")
    _write_folder(tmp_path / "folder", {"classes": CLASSES}, [raw], split="test")
    assert list_splits(tmp_path / "folder") == ["test", "val"]
    _write_voc(tmp_path / "VOCdevkit" / "VOC2012", {"train": ["a"], "val": ["b"]})
    assert list_splits(tmp_path / "VOCdevkit") == ["train", "val"]
    _write_cityscapes(tmp_path / "cityscapes", "train", {"aachen": ["aachen_000000_000019"]})
    assert list_splits(tmp_path / "cityscapes") == ["train"]


def test_cityscapes_missing_split(tmp_path):
    _write_cityscapes(tmp_path, "train", {"aachen": ["aachen_000000_000019"]})
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "leftImg8bit" / "test"))):
        list_split(tmp_path, "test")
