"""Drivable space from a semantic label map: mask, free-space boundary and outline polygon.

The drivable region of a road scene is computed from train ids in four steps:

1. ``binary``: pixels whose class is one of ``drivable_classes``. Ignored pixels
   (:data:`~semseg.labels.IGNORE_INDEX`) are never drivable.
2. Hole filling: a hole is a connected region of non-drivable pixels that does not touch the
   image border, so it is enclosed by drivable pixels (of any component). Holes of at most
   ``hole_fraction`` of the image area become drivable (lane markings labelled as another
   class, label noise, small void patches); larger ones (a car on the road) stay non-drivable.
   Holes are connected with the complementary connectivity (8 when drivable pixels use 4, and
   4 when they use 8), the usual pairing in digital topology: with it a region counts as
   enclosed exactly when a connected ring of drivable pixels closes around it.
3. Component selection: of the connected components of the filled mask (``connectivity`` 4
   or 8), keep those that touch the bottom row, where the vehicle stands, and cover at least
   ``island_fraction`` of the image area.
4. Outputs: the boundary per column and the polygon of the largest kept component.

Both thresholds are fractions of ``H * W`` (rounded to whole pixels), so a scene gives the
same result at any resolution: at CamVid's 480x360 the defaults are 69 and 259 pixels; on a
64x80 image 2 and 8.

All coordinates are pixels: rows ``y`` grow downward, columns ``x`` grow rightward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from semseg.labels import IGNORE_INDEX

HOLE_FRACTION = 4e-4
"""Default ``hole_fraction``: enclosed regions up to 0.04% of the image become drivable."""
ISLAND_FRACTION = 1.5e-3
"""Default ``island_fraction``: drivable components under 0.15% of the image are dropped."""


@dataclass(frozen=True, eq=False)
class DrivableSpace:
    """Drivable region of one image.

    Attributes:
        mask: (H, W) bool, drivable pixels.
        boundary: (W,) int64 free-space boundary per column ``x``: the smallest
            row ``r`` such that ``mask[r:, x]`` is all drivable, i.e. the topmost row reached
            when scanning up from the bottom row before the first non-drivable pixel; -1 when
            ``mask[H - 1, x]`` is not drivable. Drivable pixels above an obstacle in the same
            column do not move the boundary.
        polygon: outer contour of the largest component of ``mask`` as ``(x, y)`` pixel
            centres of its border pixels, counter-clockwise as seen on screen (y down), i.e.
            down the left side first, starting at the topmost (then leftmost) vertex. Empty
            when ``mask`` is empty. Ties between equally large components go to the one whose
            first pixel comes first in raster order.
    """

    mask: np.ndarray
    boundary: np.ndarray
    polygon: list[tuple[int, int]]

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != np.bool_:
            raise ValueError(
                f"DrivableSpace.mask must be (H, W) bool, got shape {self.mask.shape} "
                f"dtype {self.mask.dtype}"
            )
        width = self.mask.shape[1]
        if self.boundary.shape != (width,) or self.boundary.dtype != np.int64:
            raise ValueError(
                f"DrivableSpace.boundary must be ({width},) int64, got shape "
                f"{self.boundary.shape} dtype {self.boundary.dtype}"
            )

    def to_json(self) -> dict:
        """Plain-data form: boundary, polygon ``[[x, y], ...]``, drivable area in pixels and as a
        fraction of the image, image height and width."""
        height, width = self.mask.shape
        area = int(self.mask.sum())
        return {
            "boundary": self.boundary.tolist(),
            "polygon": [[x, y] for x, y in self.polygon],
            "area_px": area,
            "area_fraction": area / (height * width),
            "height": height,
            "width": width,
        }


def extract_drivable(
    label_map: np.ndarray,
    drivable_classes: Sequence[int] = (3,),
    hole_fraction: float = HOLE_FRACTION,
    island_fraction: float = ISLAND_FRACTION,
    connectivity: int = 4,
    polygon_epsilon: float = 1.0,
) -> DrivableSpace:
    """Drivable space of a label map (see the module docstring for the steps).

    Args:
        label_map: (H, W) integer train ids; ``IGNORE_INDEX`` marks void pixels.
        drivable_classes: train ids that count as drivable; default ``(3,)`` is CamVid's Road.
        hole_fraction: enclosed non-drivable regions of at most ``round(hole_fraction * H *
            W)`` pixels are filled; 0 fills nothing.
        island_fraction: bottom-touching components need at least ``round(island_fraction *
            H * W)`` pixels to stay; 0 keeps them all.
        connectivity: 4 or 8, pixel adjacency of drivable components.
        polygon_epsilon: tolerance in pixels of the ``cv2.approxPolyDP`` simplification of the
            polygon; 0 keeps every corner of the traced contour.

    Raises:
        ValueError: naming the invalid argument and its value.
    """
    _check_label_map(label_map)
    classes = _check_classes(drivable_classes)
    for name, value in (("hole_fraction", hole_fraction), ("island_fraction", island_fraction)):
        number = not isinstance(value, bool) and isinstance(value, int | float | np.number)
        if not (number and 0.0 <= value <= 1.0):
            raise ValueError(
                f"{name} must be a fraction of the image area in [0, 1], got {value!r}"
            )
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if not (isinstance(polygon_epsilon, int | float) and math.isfinite(polygon_epsilon)) or (
        polygon_epsilon < 0
    ):
        raise ValueError(f"polygon_epsilon must be a finite number >= 0, got {polygon_epsilon!r}")

    max_hole = round(hole_fraction * label_map.size)
    min_island = round(island_fraction * label_map.size)
    binary = np.isin(label_map, classes)
    filled = _fill_holes(binary, max_hole, connectivity=8 if connectivity == 4 else 4)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        filled.view(np.uint8), connectivity=connectivity
    )
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = np.zeros(count, dtype=bool)
    keep[labels[-1]] = True
    keep[0] = False  # label 0 is the non-drivable background
    keep &= areas >= min_island
    mask = keep[labels]

    polygon: list[tuple[int, int]] = []
    if keep.any():
        largest = int(np.argmax(np.where(keep, areas, -1)))
        polygon = _outline((labels == largest).view(np.uint8), polygon_epsilon)
    return DrivableSpace(mask=mask, boundary=_boundary(mask), polygon=polygon)


def drivable_iou(pred: DrivableSpace | np.ndarray, truth: DrivableSpace | np.ndarray) -> float:
    """Intersection over union of two drivable masks ((H, W) bool or :class:`DrivableSpace`).

    Two empty masks agree perfectly: the IoU is 1.0.

    Raises:
        ValueError: when a mask is not (H, W) bool or the shapes differ.
    """
    pred_mask = _as_mask(pred, "pred")
    truth_mask = _as_mask(truth, "truth")
    if pred_mask.shape != truth_mask.shape:
        raise ValueError(
            f"pred shape {pred_mask.shape} differs from truth shape {truth_mask.shape}"
        )
    union = int(np.count_nonzero(pred_mask | truth_mask))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred_mask & truth_mask)) / union


def draw_drivable(
    image: np.ndarray,
    space: DrivableSpace,
    colour: tuple[int, int, int] = (0, 255, 0),
    alpha: float = 0.4,
) -> np.ndarray:
    """Overlay of the drivable region on an image.

    Drivable pixels become ``round((1 - alpha) * image + alpha * colour)``. The boundary is
    drawn on top as a 1-pixel polyline through ``(x, boundary[x])`` for every column with
    ``boundary >= 0``, one polyline per run of adjacent such columns, in the contrasting
    colour that has 255 in each channel where ``colour`` is below 128 and 0 elsewhere
    (green -> magenta).

    Args:
        image: (H, W, 3) uint8, same height and width as ``space.mask``; left unchanged.
        space: the drivable space to draw.
        colour: tint in the image's channel order, each 0..255.
        alpha: tint opacity in [0, 1].

    Returns:
        (H, W, 3) uint8 new image.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {image.shape} {image.dtype}")
    if image.shape[:2] != space.mask.shape:
        raise ValueError(f"image is {image.shape[:2]} but the drivable mask is {space.mask.shape}")
    if len(colour) != 3 or not all(0 <= int(c) <= 255 for c in colour):
        raise ValueError(f"colour must be three values in 0..255, got {colour!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")

    out = image.copy()
    tint = np.asarray(colour, dtype=np.float64)
    out[space.mask] = np.rint((1.0 - alpha) * image[space.mask] + alpha * tint).astype(np.uint8)

    line_colour = tuple(255 if int(c) < 128 else 0 for c in colour)
    cols = np.flatnonzero(space.boundary >= 0)
    if cols.size:
        rows = space.boundary[cols]
        points = np.stack([cols, rows], axis=1).astype(np.int32)
        runs = np.split(points, np.flatnonzero(np.diff(cols) > 1) + 1)
        cv2.polylines(out, runs, isClosed=False, color=line_colour, thickness=1)
        out[rows, cols] = line_colour  # polylines draws nothing for a one-point run
    return out


def _check_label_map(label_map: np.ndarray) -> None:
    if not isinstance(label_map, np.ndarray):
        raise ValueError(f"label_map must be a NumPy array, got {type(label_map).__name__}")
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(
            f"label_map must be a 2-D integer array, got shape {label_map.shape} "
            f"dtype {label_map.dtype}"
        )
    if label_map.size == 0:
        raise ValueError(f"label_map is empty, shape {label_map.shape}")


def _check_classes(drivable_classes: Sequence[int]) -> list[int]:
    classes = list(drivable_classes)
    if not classes:
        raise ValueError(f"drivable_classes must name at least one class, got {drivable_classes!r}")
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= c < IGNORE_INDEX:
            raise ValueError(
                f"drivable class {c!r} is not a train id in 0..{IGNORE_INDEX - 1} "
                f"(drivable_classes={drivable_classes!r})"
            )
    return classes


def _as_mask(space: DrivableSpace | np.ndarray, name: str) -> np.ndarray:
    if isinstance(space, DrivableSpace):
        return space.mask
    if not isinstance(space, np.ndarray) or space.ndim != 2 or space.dtype != np.bool_:
        shape = getattr(space, "shape", None)
        dtype = getattr(space, "dtype", type(space).__name__)
        raise ValueError(f"{name} must be a DrivableSpace or (H, W) bool mask, got {shape} {dtype}")
    return space


def _fill_holes(binary: np.ndarray, max_area: int, connectivity: int) -> np.ndarray:
    """``binary`` with its holes of at most ``max_area`` pixels set; holes are components of
    ``~binary`` under ``connectivity`` that do not touch the image border."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        (~binary).view(np.uint8), connectivity=connectivity
    )
    fill = stats[:, cv2.CC_STAT_AREA] <= max_area
    fill[0] = False  # label 0 is the drivable pixels themselves
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        fill[edge] = False
    return binary | fill[labels]


def _boundary(mask: np.ndarray) -> np.ndarray:
    """(W,) int64 free-space boundary of ``mask``, as documented on :class:`DrivableSpace`."""
    height = mask.shape[0]
    from_bottom = mask[::-1]
    run = np.where(from_bottom.all(axis=0), height, np.argmin(from_bottom, axis=0))
    return np.where(run > 0, height - run, -1).astype(np.int64)


def _outline(component: np.ndarray, epsilon: float) -> list[tuple[int, int]]:
    """Outer contour of one connected component ((H, W) uint8, 1 inside) as (x, y) vertices,
    counter-clockwise on screen, starting at the topmost-then-leftmost vertex."""
    # An 8-connected set (every 4-connected one is) has exactly one external contour.
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = contours[0]
    if epsilon > 0:
        contour = cv2.approxPolyDP(contour, epsilon, closed=True)
    points = contour.reshape(-1, 2)
    start = int(np.lexsort((points[:, 0], points[:, 1]))[0])
    return [(int(x), int(y)) for x, y in np.roll(points, -start, axis=0)]
