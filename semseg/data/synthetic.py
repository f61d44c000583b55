"""Synthetic road scenes: a built-in dataset that needs no download.

:func:`render_scene` draws a simplified driving-camera frame and its pixel-exact mask from a
seed. The scene is laid out in perspective from a camera at height 1 (all world sizes are in
camera heights): a ground point at lateral offset ``u`` and depth parameter ``t`` (``t = 1`` on
the bottom row, ``t -> 0`` at the horizon) is seen at ``x = vanish_x + u * t * G`` and
``y = horizon + t * G`` with ``G = height - horizon`` pixels, and an object standing there is
``t * G`` pixels per unit tall and wide. Near objects are big, far ones a few pixels.

Every shape is drawn onto the image and the mask with the same coordinates, far to near, so
occlusion agrees between them. Random choices are made in size-independent units before any
per-pixel noise, so a seed gives the same scene at every resolution of one aspect ratio.
Grass verges are labelled Tree: CamVid's Tree class covers all vegetation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from semseg.labels import CAMVID

SYNTHETIC_LABELS = CAMVID.subset(
    ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "Car", "Pedestrian")
)
"""Classes of :func:`render_scene` masks, CamVid colours; train id = raw value 0..7."""

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, CAR, PEDESTRIAN = range(8)

MIN_SIZE = 32
"""Smallest height or width :func:`render_scene` accepts, in pixels."""

_SHIFT = 4  # cv2 fractional bits: polygon vertices are placed to 1/16 pixel
_REFERENCE_WIDTH = 160  # pole widths are 1-3 px at this image width

_BUILDING_COLOURS = ((150, 80, 60), (190, 170, 140), (120, 120, 125), (200, 195, 185), (95, 85, 80))
_CAR_COLOURS = (
    (160, 30, 30),
    (40, 60, 140),
    (210, 210, 210),
    (40, 40, 45),
    (160, 165, 170),
    (200, 170, 40),
    (60, 110, 70),
)
_CLOTHES_COLOURS = ((180, 40, 40), (40, 60, 120), (60, 60, 60), (200, 200, 190), (150, 120, 60))
_SKIN_COLOURS = ((205, 165, 135), (140, 95, 70), (90, 60, 45))
_POLE_COLOURS = ((150, 150, 155), (60, 60, 60), (70, 90, 70))

# Texture per class: amplitude of a smooth multiplicative blotch field and a factor on the
# per-pixel noise. Road is speckled asphalt, pavement smoother slabs, trees leafy.
_BLOTCH = np.array([0.04, 0.06, 0.0, 0.08, 0.04, 0.30, 0.0, 0.0], dtype=np.float32)
_SPECKLE = np.array([0.6, 1.0, 0.8, 1.8, 0.9, 1.4, 1.0, 1.0], dtype=np.float32)


def render_scene(seed: int, height: int = 128, width: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic road scene.

    Args:
        seed: non-negative integer; the same seed gives byte-identical output.
        height, width: image size in pixels, at least :data:`MIN_SIZE` each.

    Returns:
        image: (height, width, 3) uint8 RGB.
        mask: (height, width) uint8 train ids of :data:`SYNTHETIC_LABELS` (0..7, no void).

    Raises:
        ValueError: naming a negative or non-integer seed or a too small size.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, size in (("height", height), ("width", width)):
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < MIN_SIZE:
            raise ValueError(f"{name} must be an integer >= {MIN_SIZE}, got {size!r}")

    rng = np.random.default_rng(seed)
    layout = _Layout.sample(rng, int(height), int(width))
    canvas = _Canvas(layout.height, layout.width)
    _paint_sky(canvas, layout, rng)
    _paint_ground(canvas, layout, rng)
    _paint_skyline(canvas, layout, rng)
    for thing in sorted(_sample_objects(rng, layout), key=lambda thing: thing.t):
        thing.draw(canvas, layout)
    return _finish(canvas, rng), canvas.mask


@dataclass(frozen=True)
class _Layout:
    """Camera and street geometry of one scene (pixels for the image, camera heights for the
    world)."""

    height: int
    width: int
    horizon: float  # y of the horizon, px
    vanish_x: float  # x of the vanishing point, px
    road_half: float  # half road width
    pavement: tuple[float, float]  # pavement width on the left and right (0: none)
    lanes: int

    @classmethod
    def sample(cls, rng: np.random.Generator, height: int, width: int) -> _Layout:
        sides = rng.choice(3, p=[0.6, 0.2, 0.2])  # both, left only, right only
        widths = rng.uniform(1.2, 2.6, size=2)
        pavement = (float(widths[0]) * float(sides != 2), float(widths[1]) * float(sides != 1))
        return cls(
            height=height,
            width=width,
            horizon=height * rng.uniform(0.36, 0.5),
            vanish_x=width * (0.5 + rng.uniform(-0.15, 0.15)),
            road_half=rng.uniform(1.0, 1.6),
            pavement=pavement,
            lanes=int(rng.integers(2, 4)),
        )

    @property
    def ground_px(self) -> float:
        """G: pixels from the horizon to the bottom edge."""
        return self.height - self.horizon

    def project(self, u: float, t: float) -> tuple[float, float, float]:
        """Ground point (u, t) -> (x, y, pixels per world unit there)."""
        scale = t * self.ground_px
        return self.vanish_x + u * scale, self.horizon + scale, scale

    def visible_depth(self, u: float) -> float:
        """Largest t at which lateral offset u is still inside the image."""
        room = self.vanish_x if u < 0 else self.width - self.vanish_x
        return room / (abs(u) * self.ground_px)

    def sample_depth(self, rng: np.random.Generator, low: float, high: float, u: float) -> float:
        """Log-uniform t in [low, high], capped where u leaves the image: far is as likely
        as near, so small distant objects are common."""
        high = max(low, min(high, self.visible_depth(u)))
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))

    def pavement_offset(self, rng: np.random.Generator, inner: float, outer: float) -> float:
        """Lateral offset on a random side's pavement, a fraction inner..outer across it."""
        sides = [s for s, w in zip((-1, 1), self.pavement, strict=True) if w > 0]
        side = sides[int(rng.integers(len(sides)))]
        across = self.pavement[side > 0] * rng.uniform(inner, outer)
        return side * (self.road_half + across)


class _Canvas:
    """Image (H, W, 3) float32 RGB and mask (H, W) uint8 drawn with the same shapes."""

    def __init__(self, height: int, width: int) -> None:
        self.image = np.zeros((height, width, 3), dtype=np.float32)
        self.mask = np.zeros((height, width), dtype=np.uint8)

    def polygon(self, points: np.ndarray, colour: np.ndarray, label: int | None) -> None:
        """Fill polygon ``points`` (K, 2) float x, y in pixel units (pixel i spans [i, i+1)).
        ``label=None`` paints the image only (markings, windows)."""
        fixed = [np.round((points - 0.5) * (1 << _SHIFT)).astype(np.int32)]
        cv2.fillPoly(self.image, fixed, _rgb(colour), lineType=cv2.LINE_8, shift=_SHIFT)
        if label is not None:
            cv2.fillPoly(self.mask, fixed, label, lineType=cv2.LINE_8, shift=_SHIFT)

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, colour: np.ndarray, label: int | None
    ) -> None:
        centre = (round((cx - 0.5) * (1 << _SHIFT)), round((cy - 0.5) * (1 << _SHIFT)))
        axes = (round(rx * (1 << _SHIFT)), round(ry * (1 << _SHIFT)))
        cv2.ellipse(self.image, centre, axes, 0, 0, 360, _rgb(colour), -1, cv2.LINE_8, _SHIFT)
        if label is not None:
            cv2.ellipse(self.mask, centre, axes, 0, 0, 360, label, -1, cv2.LINE_8, _SHIFT)

    def box(
        self, x0: float, y0: float, x1: float, y1: float, colour: np.ndarray, label: int | None
    ) -> None:
        self.polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), colour, label)


def _rgb(colour: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(c) for c in colour)


def _jitter(
    rng: np.random.Generator, colour: tuple[int, int, int], amount: float = 1.0
) -> np.ndarray:
    """Per-scene variation of a base colour: brightness +-15% and a tint of +-12 per channel."""
    brightness = 1.0 + amount * rng.uniform(-0.15, 0.15)
    tint = amount * rng.uniform(-12, 12, size=3)
    return np.clip(np.array(colour, dtype=np.float32) * brightness + tint, 0, 255)


def _paint_sky(canvas: _Canvas, layout: _Layout, rng: np.random.Generator) -> None:
    """Sky above the horizon, from clear blue to overcast grey, lighter towards the horizon."""
    overcast = rng.uniform()
    base = _jitter(rng, (150, 180, 220)) * (1 - overcast) + _jitter(rng, (190, 190, 195)) * overcast
    rows = int(np.ceil(layout.horizon - 0.5))
    fade = (np.arange(rows, dtype=np.float32) + 0.5) / layout.horizon
    canvas.image[:rows] = (base * (0.82 + 0.22 * fade[:, None]))[:, None, :]
    canvas.mask[:rows] = SKY


def _paint_ground(canvas: _Canvas, layout: _Layout, rng: np.random.Generator) -> None:
    """Road, pavements and grass verges below the horizon, classified per pixel by its
    lateral offset; lane markings, kerbs and paving slabs are painted in the image only."""
    road = _jitter(rng, (95, 95, 100))
    pavement = _jitter(rng, (145, 140, 135))
    kerb = _jitter(rng, (175, 175, 170))
    verge = _jitter(rng, (85, 120, 55))
    marking = _jitter(rng, (225, 220, 200), 0.5)
    slab = rng.uniform(0.35, 0.6)  # paving slab size, world units
    dash_period = rng.uniform(1.5, 2.5)  # in 1 / t
    dash_phase = rng.uniform()

    first = int(np.ceil(layout.horizon - 0.5))
    y = np.arange(first, layout.height, dtype=np.float32)[:, None] + 0.5
    x = np.arange(layout.width, dtype=np.float32)[None, :] + 0.5
    t = np.maximum((y - layout.horizon) / layout.ground_px, 1e-6)  # > 0 on the first row
    u = (x - layout.vanish_x) / (t * layout.ground_px)
    across = np.abs(u) - layout.road_half  # > 0 outside the road
    side_width = np.where(u < 0, layout.pavement[0], layout.pavement[1])
    is_road = across <= 0
    is_pavement = ~is_road & (across < side_width)

    label = np.where(is_road, ROAD, np.where(is_pavement, PAVEMENT, TREE)).astype(np.uint8)
    colour = np.where(is_road[..., None], road, np.where(is_pavement[..., None], pavement, verge))

    lane_width = 2 * layout.road_half / layout.lanes
    lane_line = np.abs((u + layout.road_half + lane_width / 2) % lane_width - lane_width / 2)
    dashes = ((1 / t) / dash_period + dash_phase) % 1.0 < 0.5
    inner = (np.abs(u) < layout.road_half - lane_width / 2) & (lane_line < 0.05)
    colour = np.where((is_road & inner & dashes)[..., None], marking, colour)
    colour = np.where((is_pavement & (across < 0.12))[..., None], kerb, colour)
    joints = ((across % slab) < 0.05 * slab) | (((1 / t) % (slab / 2)) < 0.06 * slab)
    colour = np.where((is_pavement & (across >= 0.12) & joints)[..., None], colour * 0.85, colour)

    canvas.image[first:] = colour
    canvas.mask[first:] = label


def _paint_skyline(canvas: _Canvas, layout: _Layout, rng: np.random.Generator) -> None:
    """Buildings (rectangles with window grids) and tree clumps standing on the horizon, with
    the odd gap of sky, left to right across the image."""
    bottom = int(np.ceil(layout.horizon - 0.5))  # first ground row
    x = -rng.uniform(0, 0.1)  # in image widths
    while x < 1:
        kind = rng.choice(3, p=[0.75, 0.15, 0.1])  # building, trees, gap
        span = rng.uniform(0.08, 0.28)
        tall = rng.uniform(0.3, 0.95)  # fraction of the height above the horizon
        if kind == 0:
            colour = _jitter(rng, _BUILDING_COLOURS[int(rng.integers(len(_BUILDING_COLOURS)))])
            window = np.array([rng.uniform(0.03, 0.06), rng.uniform(0.03, 0.05)])  # cell, H units
            _draw_building(canvas, layout, (x, x + span), bottom, tall, colour, window)
        elif kind == 1:
            green = _jitter(rng, (60, 100, 45))
            lumps = rng.uniform(0.2, 0.8, size=(3, 2))
            _draw_tree_clump(canvas, layout, (x, x + span), tall * 0.5, green, lumps)
        x += span


def _draw_building(
    canvas: _Canvas,
    layout: _Layout,
    span: tuple[float, float],
    bottom: int,
    tall: float,
    colour: np.ndarray,
    window: np.ndarray,
) -> None:
    left = max(0, round(span[0] * layout.width))
    right = min(layout.width, round(span[1] * layout.width))
    top = max(0, round(bottom - tall * layout.horizon))
    if right <= left or bottom <= top:
        return
    cell_y, cell_x = np.maximum(window * layout.height, 2.0)
    ys = (np.arange(top, bottom) - top) % cell_y / cell_y
    xs = (np.arange(left, right) - left) % cell_x / cell_x
    lit = ((ys > 0.35) & (ys < 0.85))[:, None] & ((xs > 0.25) & (xs < 0.75))[None, :]
    shade = np.where(lit[..., None], np.float32(0.55), np.float32(1.0))
    canvas.image[top:bottom, left:right] = colour * shade
    canvas.mask[top:bottom, left:right] = BUILDING


def _draw_tree_clump(
    canvas: _Canvas,
    layout: _Layout,
    span: tuple[float, float],
    tall: float,
    green: np.ndarray,
    lumps: np.ndarray,
) -> None:
    width = (span[1] - span[0]) * layout.width
    peak = tall * layout.horizon
    for (along, size), shade in zip(lumps, (0.9, 1.0, 1.1), strict=True):
        radius = size * width / 2 + 1
        rise = min(peak * size, radius)
        cx = span[0] * layout.width + along * width
        canvas.ellipse(cx, layout.horizon - rise, radius, rise, green * shade, TREE)


@dataclass(frozen=True)
class _Car:
    u: float
    t: float
    tall: float
    colour: np.ndarray

    def draw(self, canvas: _Canvas, layout: _Layout) -> None:
        """Rear view: wheels, rounded body, narrower cabin with a dark window, tail lights."""
        x, y, scale = layout.project(self.u, self.t)
        w, h = 1.1 * scale, self.tall * scale
        dark = np.array((25, 25, 28), dtype=np.float32)
        for sign in (-1, 1):
            canvas.box(x + sign * 0.45 * w, y - 0.22 * h, x + sign * 0.25 * w, y, dark, CAR)
        body = _rounded_box(x - w / 2, y - 0.62 * h, x + w / 2, y - 0.1 * h, 0.12 * min(w, h))
        canvas.polygon(body, self.colour, CAR)
        canvas.polygon(_trapezoid(x, y - h, 0.7 * w, y - 0.6 * h, 0.92 * w), self.colour * 0.9, CAR)
        glass = np.array((45, 55, 65), dtype=np.float32)
        canvas.polygon(_trapezoid(x, y - 0.93 * h, 0.58 * w, y - 0.64 * h, 0.78 * w), glass, None)
        red = np.array((190, 25, 20), dtype=np.float32)
        for sign in (-1, 1):
            lamp = x + sign * 0.47 * w, x + sign * 0.36 * w
            canvas.box(lamp[0], y - 0.55 * h, lamp[1], y - 0.45 * h, red, None)


@dataclass(frozen=True)
class _Pedestrian:
    u: float
    t: float
    tall: float
    stride: float
    shirt: np.ndarray
    trousers: np.ndarray
    skin: np.ndarray

    def draw(self, canvas: _Canvas, layout: _Layout) -> None:
        """Two legs, a torso and a round head, facing the camera."""
        x, y, scale = layout.project(self.u, self.t)
        h = self.tall * scale
        hip, leg = y - 0.48 * h, 0.055 * scale
        for sign in (-1, 1):
            foot = x + sign * self.stride * scale
            top = x + sign * 0.02 * scale
            legs = np.array([[top - leg, hip], [top + leg, hip], [foot + leg, y], [foot - leg, y]])
            canvas.polygon(legs, self.trousers, PEDESTRIAN)
        torso = _trapezoid(x, y - 0.82 * h, 0.36 * scale, hip + 0.02 * h, 0.3 * scale)
        canvas.polygon(torso, self.shirt, PEDESTRIAN)
        radius = 0.085 * h
        canvas.ellipse(x, y - 0.82 * h - radius, radius, radius, self.skin, PEDESTRIAN)


@dataclass(frozen=True)
class _Pole:
    u: float
    t: float
    tall: float
    colour: np.ndarray

    def draw(self, canvas: _Canvas, layout: _Layout) -> None:
        """A vertical bar 1-3 px wide at 160 px image width (wider when nearer), drawn by
        slicing so its width is exact."""
        x, y, scale = layout.project(self.u, self.t)
        reference = 1 + int(self.t > 0.18) + int(self.t > 0.4)
        thickness = max(1, round(reference * layout.width / _REFERENCE_WIDTH))
        left = round(x - thickness / 2)
        cols = slice(max(0, left), min(layout.width, left + thickness))
        rows = slice(max(0, round(y - self.tall * scale)), min(layout.height, round(y)))
        canvas.image[rows, cols] = self.colour
        canvas.mask[rows, cols] = POLE


@dataclass(frozen=True)
class _Tree:
    u: float
    t: float
    trunk: float  # trunk height, world units
    crown: float  # crown radius, world units
    lumps: np.ndarray  # (K, 4) offsets and radii of crown ellipses, in crown radii
    bark: np.ndarray
    green: np.ndarray

    def draw(self, canvas: _Canvas, layout: _Layout) -> None:
        """Trunk and a crown of overlapping ellipses of slightly different greens."""
        x, y, scale = layout.project(self.u, self.t)
        half = 0.09 * scale
        top = y - self.trunk * scale
        canvas.box(x - half, top, x + half, y, self.bark, TREE)
        radius = self.crown * scale
        cy = top - 0.5 * radius
        for i, (dx, dy, rx, ry) in enumerate(self.lumps * radius):
            canvas.ellipse(x + dx, cy + dy, rx, ry, self.green * (0.85 + 0.1 * (i % 3)), TREE)


def _sample_objects(
    rng: np.random.Generator, layout: _Layout
) -> list[_Car | _Pedestrian | _Pole | _Tree]:
    """Cars on the road, pedestrians and poles on the pavements, trees on pavements or
    verges; each knows its depth t for far-to-near drawing."""
    things: list[_Car | _Pedestrian | _Pole | _Tree] = []
    lane_width = 2 * layout.road_half / layout.lanes
    for _ in range(int(rng.integers(2, 6))):
        lane = int(rng.integers(layout.lanes))
        u = -layout.road_half + (lane + 0.5 + rng.uniform(-0.12, 0.12)) * lane_width
        colour = _jitter(rng, _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))])
        t = layout.sample_depth(rng, 0.035, 0.85, u)
        things.append(_Car(u, t, rng.uniform(0.8, 1.05), colour))
    for _ in range(int(rng.integers(1, 5))):
        u = layout.pavement_offset(rng, 0.2, 0.8)
        t = layout.sample_depth(rng, 0.08, 0.8, u)
        shirt, trousers = (_jitter(rng, _CLOTHES_COLOURS[i]) for i in rng.integers(5, size=2))
        skin = _jitter(rng, _SKIN_COLOURS[int(rng.integers(len(_SKIN_COLOURS)))], 0.5)
        tall, stride = rng.uniform(1.05, 1.25), rng.uniform(0.02, 0.12)
        things.append(_Pedestrian(u, t, tall, stride, shirt, trousers, skin))
    pole_colour = _jitter(rng, _POLE_COLOURS[int(rng.integers(len(_POLE_COLOURS)))])
    for _ in range(int(rng.integers(2, 6))):
        u = layout.pavement_offset(rng, 0.1, 0.9)
        t = layout.sample_depth(rng, 0.1, 0.8, u)
        things.append(_Pole(u, t, rng.uniform(2.8, 4.5), pole_colour))
    bark = _jitter(rng, (90, 70, 50))
    green = _jitter(rng, (55, 95, 40))
    for _ in range(int(rng.integers(1, 4))):
        if rng.uniform() < 0.5:
            u = layout.pavement_offset(rng, 0.6, 0.9)
        else:
            side = -1 if rng.uniform() < 0.5 else 1
            u = side * (layout.road_half + layout.pavement[side > 0] + rng.uniform(0.3, 1.5))
        t = layout.sample_depth(rng, 0.06, 0.6, u)
        lumps = np.column_stack(
            [rng.uniform(-0.5, 0.5, size=(4, 2)), rng.uniform(0.5, 0.85, size=(4, 2))]
        )
        things.append(_Tree(u, t, rng.uniform(1.2, 2.2), rng.uniform(0.9, 1.6), lumps, bark, green))
    return things


def _rounded_box(x0: float, y0: float, x1: float, y1: float, radius: float) -> np.ndarray:
    """(20, 2) polygon of a box with quarter-circle corners of ``radius`` pixels."""
    # Corner centres clockwise from bottom right (y points down), each with its quarter arc.
    centres = np.array(
        [
            [x1 - radius, y1 - radius],
            [x0 + radius, y1 - radius],
            [x0 + radius, y0 + radius],
            [x1 - radius, y0 + radius],
        ]
    )
    angles = np.arange(4)[:, None] * (np.pi / 2) + np.linspace(0, np.pi / 2, 5)[None, :]
    arcs = centres[:, None, :] + radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return arcs.reshape(-1, 2)


def _trapezoid(
    x: float, top: float, top_width: float, bottom: float, bottom_width: float
) -> np.ndarray:
    """(4, 2) polygon centred on x with horizontal top and bottom edges."""
    return np.array(
        [
            [x - top_width / 2, top],
            [x + top_width / 2, top],
            [x + bottom_width / 2, bottom],
            [x - bottom_width / 2, bottom],
        ]
    )


def _finish(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Add class textures, a smooth illumination gradient and per-pixel Gaussian noise;
    return (H, W, 3) uint8."""
    height, width = canvas.mask.shape
    coarse = rng.uniform(-1, 1, size=(24, 30)).astype(np.float32)
    blotch = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    gain_x, gain_y = rng.uniform(-0.3, 0.3, size=2)
    exposure = rng.uniform(0.85, 1.1)
    sigma = rng.uniform(4.0, 9.0)
    noise = rng.standard_normal((height, width, 3), dtype=np.float32)

    x = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    y = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    light = exposure * (1 + gain_x * x[None, :] + gain_y * y[:, None])
    texture = 1 + _BLOTCH[canvas.mask] * blotch
    image = canvas.image * (light * texture)[..., None]
    image += noise * (sigma * _SPECKLE[canvas.mask])[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
