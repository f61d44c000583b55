"""Label sets: class names, colours, and the one place raw mask values become train ids.

Every dataset format describes its masks with a :class:`LabelSet`. ``LabelSet.encode`` turns
a raw mask (as stored on disk) into train ids ``0..C-1`` with ignored pixels set to
:data:`IGNORE_INDEX`; a raw value that is neither a class nor declared void is an error.
Loss, metrics and augmentation padding all use the same :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255
"""Train id of pixels that carry no label (void). Skipped by the loss and the metrics."""


class LabelError(ValueError):
    """A mask holds a value that the label set does not define."""


@dataclass(frozen=True)
class LabelSet:
    """Classes of a dataset and how its raw mask values map onto them.

    Attributes:
        names: class names, index = train id.
        colours: RGB colour per class, used for colour masks and overlays.
        raw_to_train: raw mask value -> train id (``IGNORE_INDEX`` for void values). Raw
            values not in the mapping are errors. Defaults to the identity on ``0..C-1``.
        void_colour: colour of ignored pixels in visualisations.
    """

    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    raw_to_train: Mapping[int, int] = field(default_factory=dict)
    void_colour: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("label set has no classes")
        if len(self.names) != len(self.colours):
            raise ValueError(
                f"label set has {len(self.names)} names but {len(self.colours)} colours"
            )
        owners = (*self.names, "void")
        for owner, colour in zip(owners, (*self.colours, self.void_colour), strict=True):
            if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
                raise ValueError(f"colour of {owner!r} is {colour}, expected 3 values in 0..255")
        if not self.raw_to_train:
            object.__setattr__(self, "raw_to_train", {i: i for i in range(len(self.names))})
        for raw, train in self.raw_to_train.items():
            if not 0 <= raw <= 255:
                raise ValueError(f"raw label value {raw} is outside 0..255")
            if train != IGNORE_INDEX and not 0 <= train < len(self.names):
                raise ValueError(f"raw label {raw} maps to {train}, not a class or ignore")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def ignore_index(self) -> int:
        """Train id of void pixels: skipped by the loss and the metrics."""
        return IGNORE_INDEX

    def lookup_table(self) -> np.ndarray:
        """(256,) int16 table raw value -> train id, -1 where the raw value is undefined."""
        table = np.full(256, -1, dtype=np.int16)
        for raw, train in self.raw_to_train.items():
            table[raw] = train
        return table

    def encode(self, raw: np.ndarray, source: str = "mask") -> np.ndarray:
        """Map a raw mask to train ids.

        Args:
            raw: (H, W) uint8 mask as read from disk.
            source: name of the file, used in error messages.

        Returns:
            (H, W) uint8 train ids in ``0..C-1`` or ``IGNORE_INDEX``.

        Raises:
            LabelError: naming ``source`` and the undefined values.
        """
        if raw.dtype != np.uint8:
            raise LabelError(f"{source}: mask dtype is {raw.dtype}, expected uint8")
        mapped = self.lookup_table()[raw]
        if (mapped < 0).any():
            bad = np.unique(raw[mapped < 0])
            valid = sorted(self.raw_to_train)
            raise LabelError(
                f"{source}: label values {bad.tolist()} are not classes of this dataset "
                f"(valid raw values: {_ranges(valid)})"
            )
        return mapped.astype(np.uint8)

    def encode_colour(self, rgb: np.ndarray, source: str = "mask") -> np.ndarray:
        """Map a colour mask (H, W, 3) uint8 to train ids by exact colour match.

        The void colour maps to ``IGNORE_INDEX``; any other colour not in the palette is an
        error naming ``source``.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise LabelError(f"{source}: colour mask has shape {rgb.shape}, expected (H, W, 3)")
        key = _pack_rgb(rgb)
        out = np.full(key.shape, -1, dtype=np.int16)
        out[key == _pack_rgb(np.array(self.void_colour, dtype=np.uint8))] = IGNORE_INDEX
        for train_id, colour in enumerate(self.colours):
            out[key == _pack_rgb(np.array(colour, dtype=np.uint8))] = train_id
        if (out < 0).any():
            bad = np.unique(key[out < 0])[:5]
            colours = [((int(k) >> 16) & 255, (int(k) >> 8) & 255, int(k) & 255) for k in bad]
            raise LabelError(f"{source}: colours {colours} are not in the palette")
        return out.astype(np.uint8)

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 colour per train id, void colour for ``IGNORE_INDEX`` and unused ids."""
        table = np.tile(np.array(self.void_colour, dtype=np.uint8), (256, 1))
        table[: self.num_classes] = np.array(self.colours, dtype=np.uint8)
        return table

    def subset(self, names: Sequence[str]) -> LabelSet:
        """The classes ``names`` of this set, in that order, with their colours; raw values
        are the new train ids ``0..len(names)-1``.

        Raises:
            ValueError: naming a class this set does not have.
        """
        unknown = [name for name in names if name not in self.names]
        if unknown:
            raise ValueError(f"classes {unknown} are not in this label set {list(self.names)}")
        colours = tuple(self.colours[self.names.index(name)] for name in names)
        return LabelSet(tuple(names), colours, void_colour=self.void_colour)

    def to_dict(self) -> dict:
        """Plain-data form stored in checkpoints."""
        return {
            "names": list(self.names),
            "colours": [list(c) for c in self.colours],
            "raw_to_train": {int(k): int(v) for k, v in self.raw_to_train.items()},
            "void_colour": list(self.void_colour),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelSet:
        return cls(
            names=tuple(data["names"]),
            colours=tuple(tuple(int(v) for v in c) for c in data["colours"]),
            raw_to_train={int(k): int(v) for k, v in data["raw_to_train"].items()},
            void_colour=tuple(int(v) for v in data.get("void_colour", (0, 0, 0))),
        )


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _ranges(values: Sequence[int]) -> str:
    """'0-10, 255' style summary of sorted integers."""
    parts: list[str] = []
    start = prev = None
    for v in values:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = v
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)


CAMVID = LabelSet(
    names=(
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    ),
    colours=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    raw_to_train={**{i: i for i in range(11)}, 11: IGNORE_INDEX},
)
"""CamVid in the SegNet layout: 11 classes, raw value 11 (Unlabelled) is void."""
