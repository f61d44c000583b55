import json

import numpy as np
import pytest
from scipy import ndimage

from semseg.inference.drivable import DrivableSpace, draw_drivable, drivable_iou, extract_drivable
from semseg.labels import IGNORE_INDEX

ROAD = 3
CAR = 8
MARKING = 6

# Keep every bottom-touching component and fill no holes unless a test says otherwise.
EXACT = {"hole_fraction": 0.0, "island_fraction": 0.0}


def pixels(label_map: np.ndarray, hole: int, island: int) -> dict[str, float]:
    """The fractions of ``label_map``'s area that are ``hole`` and ``island`` pixels."""
    return {"hole_fraction": hole / label_map.size, "island_fraction": island / label_map.size}


def trapezoid() -> np.ndarray:
    """(8, 10) road trapezoid: rows 3..7 span columns 3-6, 2-7, 1-8, 0-9, 0-9."""
    label_map = np.zeros((8, 10), dtype=np.uint8)
    for row, (left, right) in {3: (3, 6), 4: (2, 7), 5: (1, 8), 6: (0, 9), 7: (0, 9)}.items():
        label_map[row, left : right + 1] = ROAD
    return label_map


def signed_area(polygon: list[tuple[int, int]]) -> float:
    """Shoelace area in image coordinates (y down): negative = counter-clockwise on screen."""
    xy = np.array(polygon, dtype=np.float64)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def column_boundary(mask: np.ndarray) -> np.ndarray:
    """Oracle for the boundary: walk up each column from the bottom row."""
    height, width = mask.shape
    out = np.full(width, -1, dtype=np.int64)
    for x in range(width):
        row = height - 1
        if not mask[row, x]:
            continue
        while row > 0 and mask[row - 1, x]:
            row -= 1
        out[x] = row
    return out


def test_trapezoid_mask_boundary_polygon_and_json():
    label_map = trapezoid()
    space = extract_drivable(label_map, polygon_epsilon=0.0, **EXACT)

    np.testing.assert_array_equal(space.mask, label_map == ROAD)
    np.testing.assert_array_equal(space.boundary, [6, 5, 4, 3, 3, 3, 3, 4, 5, 6])
    assert space.boundary.dtype == np.int64
    # Pixel centres of the corners, from the top-left corner down the left side.
    assert space.polygon == [(3, 3), (0, 6), (0, 7), (9, 7), (9, 6), (6, 3)]
    # Epsilon 1 drops (0, 7), 0.99 px from the chord (0, 6)-(9, 7), and (9, 6), 0.6 px from
    # (9, 7)-(6, 3); the list still starts at the topmost-leftmost vertex.
    simple = extract_drivable(label_map, polygon_epsilon=1.0, **EXACT)
    assert simple.polygon == [(3, 3), (0, 6), (9, 7), (6, 3)]

    data = space.to_json()
    assert json.loads(json.dumps(data)) == {
        "boundary": [6, 5, 4, 3, 3, 3, 3, 4, 5, 6],
        "polygon": [[3, 3], [0, 6], [0, 7], [9, 7], [9, 6], [6, 3]],
        "area_px": 38,
        "area_fraction": 38 / 80,
        "height": 8,
        "width": 10,
    }


def test_rectangle_polygon_is_its_four_corners():
    label_map = np.zeros((6, 8), dtype=np.int32)
    label_map[2:, 1:7] = ROAD
    space = extract_drivable(label_map, **EXACT)
    assert space.polygon == [(1, 2), (1, 5), (6, 5), (6, 2)]
    np.testing.assert_array_equal(space.boundary, [-1, 2, 2, 2, 2, 2, 2, -1])


def test_polygon_epsilon_simplifies_a_staircase():
    # Row r holds columns 0..r // 2: a right triangle with a staircase hypotenuse. Every stair
    # corner lies within 0.42 px of the chord (0, 0)-(5, 11), so epsilon 1 keeps the triangle.
    label_map = np.zeros((12, 8), dtype=np.uint8)
    for row in range(12):
        label_map[row, : row // 2 + 1] = ROAD
    exact = extract_drivable(label_map, polygon_epsilon=0.0, **EXACT).polygon
    simple = extract_drivable(label_map, polygon_epsilon=1.0, **EXACT).polygon
    assert len(exact) == 13
    assert exact[:3] == [(0, 0), (0, 11), (5, 11)]
    assert simple == [(0, 0), (0, 11), (5, 11)]


def test_island_not_touching_bottom_is_removed():
    label_map = np.zeros((10, 10), dtype=np.uint8)
    label_map[6:, 2:8] = ROAD
    label_map[0:3, 0:10] = ROAD  # far road, separated by a row band of background
    space = extract_drivable(label_map, **EXACT)
    expected = np.zeros((10, 10), dtype=bool)
    expected[6:, 2:8] = True
    np.testing.assert_array_equal(space.mask, expected)
    np.testing.assert_array_equal(space.boundary, [-1, -1, 6, 6, 6, 6, 6, 6, -1, -1])


def test_island_touching_bottom_only_diagonally_follows_connectivity():
    label_map = np.zeros((5, 6), dtype=np.uint8)
    label_map[3:, 0:3] = ROAD  # bottom-touching block
    label_map[0:3, 3:6] = ROAD  # meets the block only at the corner (2, 3)-(3, 2)
    four = extract_drivable(label_map, connectivity=4, **EXACT)
    eight = extract_drivable(label_map, connectivity=8, **EXACT)
    np.testing.assert_array_equal(four.mask, (label_map == ROAD) & (np.arange(6) < 3))
    np.testing.assert_array_equal(eight.mask, label_map == ROAD)


def test_small_hole_is_filled_but_car_sized_hole_stays():
    label_map = np.full((12, 14), ROAD, dtype=np.uint8)
    label_map[0:2] = 0  # sky: touches the border, never a hole
    label_map[8:10, 3] = MARKING  # 2-pixel lane marking
    label_map[3:7, 8:12] = CAR  # 16-pixel car
    space = extract_drivable(label_map, **pixels(label_map, 4, 1))

    expected = np.ones((12, 14), dtype=bool)
    expected[0:2] = False
    expected[3:7, 8:12] = False
    np.testing.assert_array_equal(space.mask, expected)
    # The marking does not stop free space; the car does, in columns 8..11.
    np.testing.assert_array_equal(space.boundary, [2] * 8 + [7] * 4 + [2] * 2)


def test_hole_area_threshold_is_inclusive():
    label_map = np.full((8, 8), ROAD, dtype=np.uint8)
    label_map[3:5, 3:5] = CAR  # 4 pixels
    hole = label_map == CAR
    filled = extract_drivable(label_map, **pixels(label_map, 4, 1)).mask
    kept = extract_drivable(label_map, **pixels(label_map, 3, 1)).mask
    assert filled.all()
    np.testing.assert_array_equal(kept, ~hole)


def test_non_drivable_region_touching_the_border_is_not_a_hole():
    label_map = np.full((6, 6), ROAD, dtype=np.uint8)
    label_map[2, 0] = CAR  # one pixel on the left edge
    space = extract_drivable(label_map, **pixels(label_map, 10, 1))
    np.testing.assert_array_equal(space.mask, label_map == ROAD)


def test_holes_use_the_complementary_connectivity():
    # A car pixel at (2, 2) whose only escape to the border is the diagonal (1, 1)-(0, 0).
    label_map = np.full((6, 6), ROAD, dtype=np.uint8)
    label_map[0, 0] = label_map[1, 1] = label_map[2, 2] = CAR
    road_4 = extract_drivable(label_map, connectivity=4, **pixels(label_map, 1, 1))
    road_8 = extract_drivable(label_map, connectivity=8, **pixels(label_map, 1, 1))
    # 4-connected road -> 8-connected holes: the chain reaches the corner, nothing is filled.
    np.testing.assert_array_equal(road_4.mask, label_map == ROAD)
    # 8-connected road -> 4-connected holes: (1, 1) and (2, 2) are one-pixel holes.
    expected = np.ones((6, 6), dtype=bool)
    expected[0, 0] = False
    np.testing.assert_array_equal(road_8.mask, expected)


def test_small_bottom_blob_below_the_island_fraction_is_removed():
    label_map = np.zeros((6, 10), dtype=np.uint8)
    label_map[3:, 0:4] = ROAD  # 12 pixels
    label_map[4:, 6:9] = ROAD  # 6 pixels
    space = extract_drivable(label_map, **pixels(label_map, 0, 7))
    np.testing.assert_array_equal(space.mask, (label_map == ROAD) & (np.arange(10) < 4))
    np.testing.assert_array_equal(space.boundary, [3, 3, 3, 3] + [-1] * 6)
    both = extract_drivable(label_map, **pixels(label_map, 0, 6))
    np.testing.assert_array_equal(both.mask, label_map == ROAD)
    # The polygon outlines the largest kept component only.
    assert both.polygon == [(0, 3), (0, 5), (3, 5), (3, 3)]


def test_a_small_image_keeps_its_drivable_area_with_the_defaults():
    # 120 road pixels: 15.6% of a 24x32 image, 0.07% of a 360x480 one.
    small = np.zeros((24, 32), dtype=np.uint8)
    small[14:, 10:22] = ROAD
    np.testing.assert_array_equal(extract_drivable(small).mask, small == ROAD)
    large = np.zeros((360, 480), dtype=np.uint8)
    large[350:, 10:22] = ROAD
    assert not extract_drivable(large).mask.any()  # under the default 259 pixels
    assert round(1.5e-3 * 360 * 480) == 259


def test_the_same_scene_at_four_times_the_resolution_gives_the_same_space():
    label_map = np.zeros((18, 24), dtype=np.uint8)
    label_map[8:, :] = ROAD
    label_map[12:14, 5:7] = MARKING  # 4-pixel hole: 0.9% of the image
    label_map[10:16, 14:20] = CAR  # 36-pixel hole: 8.3%
    label_map[15:, 22:] = 0
    label_map[16:, 0:2] = ROAD  # separate 4-pixel island at the bottom left
    label_map[15, 0:3] = 0
    label_map[16:, 2] = 0
    options = {"hole_fraction": 0.02, "island_fraction": 0.02}
    coarse = extract_drivable(label_map, **options).mask
    fine = extract_drivable(np.kron(label_map, np.ones((4, 4), np.uint8)), **options).mask
    np.testing.assert_array_equal(fine, np.kron(coarse, np.ones((4, 4), bool)))
    assert coarse[12, 5] and not coarse[12, 15] and not coarse[17, 0]


def test_multiple_drivable_classes():
    lane = 9
    label_map = np.zeros((5, 6), dtype=np.uint8)
    label_map[2:, 0:3] = ROAD
    label_map[2:, 3:6] = lane
    label_map[0:2, 4] = lane
    road_only = extract_drivable(label_map, drivable_classes=(ROAD,), **EXACT)
    both = extract_drivable(label_map, drivable_classes=[ROAD, lane], **EXACT)
    np.testing.assert_array_equal(road_only.mask, label_map == ROAD)
    np.testing.assert_array_equal(both.mask, label_map > 0)
    np.testing.assert_array_equal(both.boundary, [2, 2, 2, 2, 0, 2])


def test_ignore_pixels_are_not_drivable_unless_filled_as_holes():
    label_map = np.full((6, 6), ROAD, dtype=np.uint8)
    label_map[3:, 5] = IGNORE_INDEX  # void strip on the right edge, down to the bottom
    label_map[2, 2] = IGNORE_INDEX  # enclosed void pixel
    space = extract_drivable(label_map, **pixels(label_map, 1, 1))
    expected = np.ones((6, 6), dtype=bool)
    expected[3:, 5] = False
    np.testing.assert_array_equal(space.mask, expected)
    np.testing.assert_array_equal(space.boundary, [0, 0, 0, 0, 0, -1])
    unfilled = extract_drivable(label_map, **EXACT)
    assert not unfilled.mask[2, 2]


def test_all_background_gives_empty_space():
    space = extract_drivable(np.zeros((4, 7), dtype=np.int64))
    assert not space.mask.any()
    np.testing.assert_array_equal(space.boundary, [-1] * 7)
    assert space.polygon == []
    data = space.to_json()
    assert (data["area_px"], data["area_fraction"], data["polygon"]) == (0, 0.0, [])


@pytest.mark.parametrize(
    ("label_map", "kwargs", "message"),
    [
        (np.zeros((2, 3, 4), np.uint8), {}, r"label_map .*shape \(2, 3, 4\)"),
        (np.zeros((4, 4), np.float32), {}, r"label_map .*dtype float32"),
        (np.zeros((4, 4), bool), {}, r"label_map .*dtype bool"),
        (np.zeros((0, 4), np.uint8), {}, r"label_map is empty, shape \(0, 4\)"),
        ([[3, 3]], {}, r"label_map must be a NumPy array, got list"),
        (np.zeros((4, 4), np.uint8), {"drivable_classes": ()}, r"drivable_classes .*\(\)"),
        (np.zeros((4, 4), np.uint8), {"drivable_classes": (3, 255)}, r"drivable class 255"),
        (np.zeros((4, 4), np.uint8), {"drivable_classes": (-1,)}, r"drivable class -1"),
        (np.zeros((4, 4), np.uint8), {"drivable_classes": (1.5,)}, r"drivable class 1.5"),
        (np.zeros((4, 4), np.uint8), {"hole_fraction": -0.1}, r"hole_fraction .*-0.1"),
        (np.zeros((4, 4), np.uint8), {"island_fraction": 1.5}, r"island_fraction .*1.5"),
        (np.zeros((4, 4), np.uint8), {"hole_fraction": float("nan")}, r"hole_fraction .*nan"),
        (np.zeros((4, 4), np.uint8), {"island_fraction": True}, r"island_fraction .*True"),
        (np.zeros((4, 4), np.uint8), {"connectivity": 6}, r"connectivity must be 4 or 8, got 6"),
        (np.zeros((4, 4), np.uint8), {"polygon_epsilon": -0.5}, r"polygon_epsilon .*-0.5"),
        (np.zeros((4, 4), np.uint8), {"polygon_epsilon": float("nan")}, r"polygon_epsilon .*nan"),
    ],
)
def test_invalid_inputs_raise_naming_the_value(label_map, kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_drivable(label_map, **kwargs)


def test_drivable_space_checks_its_arrays():
    with pytest.raises(ValueError, match=r"mask must be \(H, W\) bool.*uint8"):
        DrivableSpace(np.zeros((2, 3), np.uint8), np.full(3, -1, np.int64), [])
    with pytest.raises(ValueError, match=r"boundary must be \(3,\) int64.*\(4,\)"):
        DrivableSpace(np.zeros((2, 3), bool), np.full(4, -1, np.int64), [])


def test_drivable_iou_matches_numpy():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred = rng.random((9, 11)) < 0.5
        truth = rng.random((9, 11)) < 0.5
        expected = np.logical_and(pred, truth).sum() / np.logical_or(pred, truth).sum()
        assert drivable_iou(pred, truth) == pytest.approx(expected)
    label_map = trapezoid()
    space = extract_drivable(label_map, **EXACT)
    truth = np.zeros((8, 10), dtype=bool)
    truth[5:] = True  # 30 pixels, 28 of them drivable in the 38-pixel trapezoid
    assert drivable_iou(space, truth) == pytest.approx(28 / 40)
    assert drivable_iou(space, space) == 1.0
    empty = np.zeros((3, 3), dtype=bool)
    assert drivable_iou(empty, empty) == 1.0
    assert drivable_iou(empty, ~empty) == 0.0


def test_drivable_iou_rejects_bad_masks():
    with pytest.raises(ValueError, match=r"pred shape \(2, 2\) differs from truth shape \(2, 3\)"):
        drivable_iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match=r"truth must be .*bool mask, got \(2, 2\) uint8"):
        drivable_iou(np.zeros((2, 2), bool), np.zeros((2, 2), np.uint8))


def scipy_drivable(label_map, classes, min_hole_area, min_island_area, connectivity):
    """Oracle for the mask: the same rules written with scipy.ndimage.label."""
    binary = np.isin(label_map, classes)
    background = ndimage.generate_binary_structure(2, 2 if connectivity == 4 else 1)
    holes, count = ndimage.label(~binary, background)
    border = set(holes[0]) | set(holes[-1]) | set(holes[:, 0]) | set(holes[:, -1])
    sizes = np.bincount(holes.ravel())
    filled = binary.copy()
    for i in range(1, count + 1):
        if i not in border and sizes[i] <= min_hole_area:
            filled[holes == i] = True
    foreground = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    parts, _ = ndimage.label(filled, foreground)
    sizes = np.bincount(parts.ravel())
    kept = [i for i in set(parts[-1]) - {0} if sizes[i] >= min_island_area]
    return np.isin(parts, kept), parts, {i: sizes[i] for i in kept}


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize(("min_hole_area", "min_island_area"), [(0, 1), (3, 5), (12, 30)])
def test_random_maps_match_scipy(connectivity, min_hole_area, min_island_area):
    rng = np.random.default_rng(connectivity * 100 + min_hole_area)
    for _ in range(8):
        coarse = rng.integers(0, 4, size=(6, 8))
        label_map = np.kron(coarse, np.ones((3, 3), dtype=np.int64))
        noise = rng.random(label_map.shape) < 0.08
        label_map[noise] = rng.integers(0, 4, size=int(noise.sum()))
        label_map[rng.random(label_map.shape) < 0.02] = IGNORE_INDEX
        classes = (1, 2)

        fractions = pixels(label_map, min_hole_area, min_island_area)
        space = extract_drivable(
            label_map, classes, **fractions, connectivity=connectivity, polygon_epsilon=0.0
        )
        mask, parts, sizes = scipy_drivable(
            label_map, classes, min_hole_area, min_island_area, connectivity
        )
        np.testing.assert_array_equal(space.mask, mask)
        np.testing.assert_array_equal(space.boundary, column_boundary(mask))
        if not sizes:
            assert space.polygon == []
            continue
        # Every vertex is a border pixel of one largest kept component.
        largest = max(sizes.values())
        owners = {int(parts[y, x]) for x, y in space.polygon}
        assert len(owners) == 1 and sizes[owners.pop()] == largest
        component = np.pad(parts == parts[space.polygon[0][1], space.polygon[0][0]], 1)
        interior = ndimage.binary_erosion(component, ndimage.generate_binary_structure(2, 1))
        for x, y in space.polygon:
            assert component[y + 1, x + 1] and not interior[y + 1, x + 1]
        first = min(space.polygon, key=lambda p: (p[1], p[0]))
        assert space.polygon[0] == first
        if len(space.polygon) > 2:
            assert signed_area(space.polygon) <= 0


def test_polygon_is_counter_clockwise_after_simplification():
    rng = np.random.default_rng(7)
    for _ in range(10):
        coarse = rng.integers(0, 2, size=(5, 6))
        coarse[-1, 2] = 1
        label_map = np.kron(coarse, np.ones((4, 4), dtype=np.int64))
        space = extract_drivable(label_map, (1,), **EXACT, polygon_epsilon=1.5)
        assert signed_area(space.polygon) < 0


def test_draw_drivable_tints_region_and_draws_boundary():
    label_map = np.zeros((6, 8), dtype=np.uint8)
    label_map[2:, 1:7] = ROAD
    space = extract_drivable(label_map, **EXACT)
    image = np.full((6, 8, 3), 101, dtype=np.uint8)
    before = image.copy()

    out = draw_drivable(image, space, colour=(0, 255, 0), alpha=0.4)

    np.testing.assert_array_equal(image, before)
    expected = image.copy()
    # 0.6 * 101 + 0.4 * 0 = 60.6 -> 61 and 0.6 * 101 + 0.4 * 255 = 162.6 -> 163
    expected[2:, 1:7] = (61, 163, 61)
    expected[2, 1:7] = (255, 0, 255)  # boundary row 2 in magenta, the contrast of green
    np.testing.assert_array_equal(out, expected)


def test_draw_drivable_does_not_bridge_columns_without_free_space():
    label_map = np.zeros((5, 7), dtype=np.uint8)
    label_map[3:, 0] = ROAD
    label_map[1:, 3:5] = ROAD
    label_map[2:, 6] = ROAD
    space = extract_drivable(label_map, **EXACT)
    np.testing.assert_array_equal(space.boundary, [3, -1, -1, 1, 1, -1, 2])
    image = np.zeros((5, 7, 3), dtype=np.uint8)
    out = draw_drivable(image, space, colour=(200, 100, 30), alpha=0.0)
    line = np.all(out == (0, 255, 255), axis=-1)
    expected = np.zeros((5, 7), dtype=bool)
    expected[3, 0] = expected[1, 3] = expected[1, 4] = expected[2, 6] = True
    np.testing.assert_array_equal(line, expected)
    # alpha 0 leaves every other pixel as it was.
    np.testing.assert_array_equal(out[~line], image[~line])


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros((6, 8), np.uint8), {}, r"image must be \(H, W, 3\) uint8, got shape \(6, 8\)"),
        (np.zeros((6, 8, 3), np.float32), {}, r"image must be .*float32"),
        (np.zeros((5, 8, 3), np.uint8), {}, r"image is \(5, 8\) but the drivable mask is \(6, 8\)"),
        (np.zeros((6, 8, 3), np.uint8), {"colour": (0, 300, 0)}, r"colour .*\(0, 300, 0\)"),
        (np.zeros((6, 8, 3), np.uint8), {"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
    ],
)
def test_draw_drivable_rejects_bad_input(image, kwargs, message):
    space = extract_drivable(np.full((6, 8), ROAD, dtype=np.uint8), **EXACT)
    with pytest.raises(ValueError, match=message):
        draw_drivable(image, space, **kwargs)


def test_polygon_tie_goes_to_the_component_first_in_raster_order():
    label_map = np.zeros((6, 9), dtype=np.uint8)
    label_map[3:, 6:9] = ROAD  # 9 pixels starting in row 3: first in raster order
    label_map[4:, 0:4] = ROAD
    label_map[5, 4] = ROAD  # also 9 pixels, starting in row 4
    space = extract_drivable(label_map, **EXACT)
    assert space.mask.sum() == 18
    assert space.polygon == [(6, 3), (6, 5), (8, 5), (8, 3)]
