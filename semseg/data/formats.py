"""Dataset layouts on disk: which image goes with which mask, and the label set of each.

Each format function returns a :class:`SplitFiles` for one split. Nothing is decoded here;
files are listed and paired, and problems that can be seen from names alone (an image with no
mask, an empty folder, a missing split) are reported with the path. With ``strict=False`` an
image without a mask is listed in :attr:`SplitFiles.images_without_masks` instead of being an
error, so that :mod:`semseg.data.check` can report every problem at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from semseg.data.io import IMAGE_SUFFIXES
from semseg.labels import CAMVID, IGNORE_INDEX, LabelSet


class DatasetError(ValueError):
    """A dataset folder is missing, empty or inconsistent."""


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path


@dataclass(frozen=True)
class SplitFiles:
    """The paired files of one split and how to read their masks."""

    samples: tuple[Sample, ...]
    labels: LabelSet
    colour_masks: bool = False
    images_without_masks: tuple[Path, ...] = ()
    """Images whose mask is missing (listed with ``strict=False``; otherwise an error)."""
    masks_without_images: tuple[Path, ...] = ()
    """Masks no image of the split goes with (listed, never an error here)."""


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder")
    return files


@dataclass(frozen=True)
class _Pairing:
    samples: tuple[Sample, ...]
    images_without_masks: tuple[Path, ...]
    masks_without_images: tuple[Path, ...]


def _pair_by_stem(
    images: list[Path], mask_dir: Path, strict: bool, image_suffix: str = "", mask_suffix: str = ""
) -> _Pairing:
    """Pair ``images`` with the files of ``mask_dir`` whose stems agree once ``image_suffix``
    and ``mask_suffix`` are taken off (files of ``mask_dir`` without ``mask_suffix`` are not
    masks). ``strict``: an image without a mask is an error naming ``mask_dir``."""
    masks = {
        p.stem.removesuffix(mask_suffix): p
        for p in _images_in(mask_dir)
        if p.stem.endswith(mask_suffix)
    }
    samples, unmatched, used = [], [], set()
    for image in images:
        key = image.stem.removesuffix(image_suffix)
        mask = masks.get(key)
        used.add(key)
        if mask is None:
            unmatched.append(image)
        else:
            samples.append(Sample(image, mask))
    if unmatched and strict:
        names = [p.name for p in unmatched]
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise DatasetError(f"{mask_dir}: no mask for {len(names)} image(s): {shown}")
    unused = tuple(mask for key, mask in masks.items() if key not in used)
    return _Pairing(tuple(samples), tuple(unmatched), unused)


def camvid(root: Path, split: str, strict: bool = True) -> SplitFiles:
    """CamVid in the SegNet layout: ``{split}/`` images, ``{split}annot/`` index masks."""
    pairs = _pair_by_stem(_images_in(root / split), root / f"{split}annot", strict)
    return SplitFiles(
        pairs.samples, CAMVID, False, pairs.images_without_masks, pairs.masks_without_images
    )


def folder(root: Path, split: str, strict: bool = True) -> SplitFiles:
    """A generic folder: ``{split}/images/*`` and ``{split}/masks/*`` matched by file stem.

    ``root/labels.yaml`` declares the classes::

        classes:                # index = train id
          - {name: road, colour: [128, 64, 128]}
          - {name: car, colour: [0, 0, 142]}
        masks: index            # index: pixel value = class index; colour: RGB colour masks
        void: [255]             # raw index values to ignore (index masks)
        void_colour: [0, 0, 0]  # colour to ignore (colour masks)
    """
    spec_path = root / "labels.yaml"
    if not spec_path.is_file():
        raise DatasetError(f"{spec_path}: missing; a folder dataset declares its classes there")
    spec = yaml.safe_load(spec_path.read_text()) or {}
    if not isinstance(spec, dict):
        raise DatasetError(f"{spec_path}: expected a mapping with 'classes', got {spec!r}")
    unknown = set(spec) - {"classes", "masks", "void", "void_colour"}
    if unknown:
        raise DatasetError(f"{spec_path}: unknown key(s) {sorted(unknown)}")
    try:
        classes = spec["classes"]
        names = tuple(str(c["name"]) for c in classes)
        colours = tuple(tuple(int(v) for v in c["colour"]) for c in classes)
    except (KeyError, TypeError) as error:
        raise DatasetError(
            f"{spec_path}: 'classes' must be a list of {{name, colour}} ({error})"
        ) from None
    mask_kind = spec.get("masks", "index")
    if mask_kind not in ("index", "colour"):
        raise DatasetError(f"{spec_path}: masks must be 'index' or 'colour', got {mask_kind!r}")
    raw_to_train = {i: i for i in range(len(names))}
    try:
        raw_to_train.update({int(v): IGNORE_INDEX for v in spec.get("void", [])})
        labels = LabelSet(
            names=names,
            colours=colours,
            raw_to_train=raw_to_train,
            void_colour=tuple(spec.get("void_colour", (0, 0, 0))),
        )
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{spec_path}: {error}") from None
    pairs = _pair_by_stem(_images_in(root / split / "images"), root / split / "masks", strict)
    return SplitFiles(
        pairs.samples, labels, mask_kind == "colour", pairs.images_without_masks,
        pairs.masks_without_images,
    )  # fmt: skip


def _voc_colours(count: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC colour map: bits of the class index spread over R, G, B."""
    colours = []
    for index in range(count):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


VOC = LabelSet(
    names=tuple(
        "background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog "
        "horse motorbike person pottedplant sheep sofa train tvmonitor".split()
    ),
    colours=_voc_colours(21),
    raw_to_train={**{i: i for i in range(21)}, 255: IGNORE_INDEX},
)
"""PASCAL VOC 2012: 21 classes with background; 255 (object borders) is void."""


def voc(root: Path, split: str, strict: bool = True) -> SplitFiles:
    """PASCAL VOC 2012: ``JPEGImages/``, ``SegmentationClass/`` palette PNGs, and the id list
    ``ImageSets/Segmentation/{split}.txt``. ``root`` may be ``VOCdevkit`` or ``VOC2012``.

    A listed image or mask that is missing is an error; with ``strict=False`` an id without
    its mask goes to ``images_without_masks`` and one without its image (but with its mask) to
    ``masks_without_images``.
    """
    root = _voc_root(root)
    id_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not id_file.is_file():
        raise DatasetError(f"{id_file}: split list not found")
    ids = id_file.read_text().split()
    if not ids:
        raise DatasetError(f"{id_file}: no image ids")
    samples, without_masks, without_images = [], [], []
    for name in ids:
        image = root / "JPEGImages" / f"{name}.jpg"
        mask = root / "SegmentationClass" / f"{name}.png"
        missing = [path for path in (image, mask) if not path.is_file()]
        if missing and strict:
            raise DatasetError(f"{missing[0]}: listed in {id_file} but missing")
        if not missing:
            samples.append(Sample(image, mask))
        elif mask in missing:
            without_masks.append(image)
        else:
            without_images.append(mask)
    return SplitFiles(tuple(samples), VOC, False, tuple(without_masks), tuple(without_images))


def _voc_root(root: Path) -> Path:
    return root / "VOC2012" if (root / "VOC2012").is_dir() else root


_CITYSCAPES_CLASSES = (
    # (labelId, name, colour) of the 19 evaluated classes, in train-id order
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
)

CITYSCAPES = LabelSet(
    names=tuple(name for _, name, _ in _CITYSCAPES_CLASSES),
    colours=tuple(colour for _, _, colour in _CITYSCAPES_CLASSES),
    raw_to_train={
        **{label_id: IGNORE_INDEX for label_id in range(34)},
        **{label_id: train_id for train_id, (label_id, _, _) in enumerate(_CITYSCAPES_CLASSES)},
    },
)
"""Cityscapes: ``gtFine`` labelIds 0..33 mapped to the 19 train ids, all others ignored."""


def cityscapes(root: Path, split: str, strict: bool = True) -> SplitFiles:
    """Cityscapes: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with
    ``gtFine/{split}/{city}/*_gtFine_labelIds.png`` (the other ``gtFine`` files are not
    masks)."""
    image_root = root / "leftImg8bit" / split
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: folder not found")
    samples: list[Sample] = []
    without_masks: list[Path] = []
    without_images: list[Path] = []
    cities = sorted(p for p in image_root.iterdir() if p.is_dir())
    for city in cities:
        pairs = _pair_by_stem(_images_in(city), root / "gtFine" / split / city.name, strict,
                              "_leftImg8bit", "_gtFine_labelIds")  # fmt: skip
        samples += pairs.samples
        without_masks += pairs.images_without_masks
        without_images += pairs.masks_without_images
    mask_root = root / "gtFine" / split
    if mask_root.is_dir():
        named = {city.name for city in cities}
        for city in sorted(p for p in mask_root.iterdir() if p.is_dir() and p.name not in named):
            without_images += sorted(city.glob("*_gtFine_labelIds.png"))
    if not samples and not without_masks:
        raise DatasetError(f"{image_root}: no city folders with images")
    return SplitFiles(
        tuple(samples), CITYSCAPES, False, tuple(without_masks), tuple(without_images)
    )


FORMATS: dict[str, Callable[[Path, str, bool], SplitFiles]] = {
    "camvid": camvid,
    "folder": folder,
    "voc": voc,
    "cityscapes": cityscapes,
}


def _camvid_splits(root: Path) -> list[str]:
    """Splits ``X`` with both ``X/`` and ``Xannot/`` folders under ``root``."""
    return sorted(
        p.name.removesuffix("annot")
        for p in root.iterdir()
        if p.is_dir() and p.name.endswith("annot") and len(p.name) > len("annot")
        and (root / p.name.removesuffix("annot")).is_dir()
    )  # fmt: skip


def detect_format(root: Path) -> str:
    """Guess the layout of ``root`` from its folder names (CamVid: any ``<split>/`` with its
    ``<split>annot/``, e.g. only ``test/`` and ``testannot/``)."""
    if _camvid_splits(root):
        return "camvid"
    if (root / "gtFine").is_dir():
        return "cityscapes"
    if (root / "JPEGImages").is_dir() or (root / "VOC2012").is_dir():
        return "voc"
    if (root / "labels.yaml").is_file():
        return "folder"
    raise DatasetError(
        f"{root}: cannot tell the dataset format (expected CamVid's <split>/ and "
        "<split>annot/, Cityscapes' gtFine/, VOC's JPEGImages/ or a labels.yaml); pass the "
        "format explicitly"
    )


def list_split(
    root: str | Path, split: str, data_format: str | None = None, strict: bool = True
) -> SplitFiles:
    """Pair the files of ``split`` under ``root`` in ``data_format`` (detected when None).

    ``strict``: an image without a mask is an error; otherwise it is listed in
    :attr:`SplitFiles.images_without_masks`.
    """
    root, data_format = _resolve(root, data_format)
    return FORMATS[data_format](root, split, strict)


def list_splits(root: str | Path, data_format: str | None = None) -> list[str]:
    """Names of the splits present under ``root`` in ``data_format`` (detected when None):
    CamVid's ``<split>/`` folders that have a ``<split>annot/``, a folder dataset's
    ``<split>/images/``, VOC's ``ImageSets/Segmentation/<split>.txt`` lists and Cityscapes'
    ``leftImg8bit/<split>/`` folders."""
    root, data_format = _resolve(root, data_format)
    if data_format == "camvid":
        return _camvid_splits(root)
    if data_format == "folder":
        return sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
    if data_format == "voc":
        lists = _voc_root(root) / "ImageSets" / "Segmentation"
        return sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
    images = root / "leftImg8bit"
    return sorted(p.name for p in images.iterdir() if p.is_dir()) if images.is_dir() else []


def _resolve(root: str | Path, data_format: str | None) -> tuple[Path, str]:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    data_format = data_format or detect_format(root)
    if data_format not in FORMATS:
        raise DatasetError(
            f"unknown dataset format {data_format!r}; choose from {', '.join(FORMATS)}"
        )
    return root, data_format
