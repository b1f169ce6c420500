"""Synthetic scenes: simple shapes of known colour, size and position on textured backgrounds,
with ground-truth masks and captions. The same seed always gives the same scenes.
Queries with ground truth and training captions over these scenes are in irs.benchmark.

Two styles: "grid" scenes (the original benchmark: square, one shape per cell of a 3x3 grid, one kind of
background) and "varied" scenes (the harder one: any size and aspect ratio, flat / gradient / radial /
striped / textured / cluttered backgrounds, 1-6 shapes anywhere at any angle and 8-30% of the short side,
outlines, shading, anti-aliased edges, partial occlusion, JPEG artefacts, similar-colour distractors).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from irs.geometry import Box, Point, mask_box, mask_centroid

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart", "arrow", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "pink": (255, 110, 190),
    "brown": (120, 70, 25),
}
SIZES: dict[str, float] = {"small": 0.16, "large": 0.28}  # diameter as a fraction of the side
ROWS = ("top", "middle", "bottom")
COLS = ("left", "centre", "right")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    row: str
    col: str
    mask: np.ndarray  # HxW bool, visible pixels only
    bbox: Box
    centroid: Point

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def a_name(self) -> str:
        """ "a red circle", "an orange star"."""
        return f"{article(self.colour)} {self.name}"

    @property
    def place(self) -> str:
        """The position in words, as captions say it."""
        if self.row == "middle" and self.col == "centre":
            return "in the centre"
        if self.row == "middle":
            return f"on the {self.col}"
        if self.col == "centre":
            return f"at the {self.row}"
        return f"in the {self.row} {self.col}"


@dataclass
class Scene:
    index: int
    image: np.ndarray  # HxWx3 uint8
    objects: list[SceneObject]

    @property
    def caption(self) -> str:
        return " and ".join(f"a {o.size} {o.name} {o.place}" for o in self.objects)

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "file": f"scene_{self.index:05d}.png",
            "caption": self.caption,
            "objects": [
                {
                    "shape": o.shape,
                    "colour": o.colour,
                    "size": o.size,
                    "row": o.row,
                    "col": o.col,
                    "bbox": [round(v, 5) for v in o.bbox],
                    "centroid": [round(v, 5) for v in o.centroid],
                }
                for o in self.objects
            ],
        }


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Muted, low-saturation texture plus fine grain, so shapes sit on something like a photo."""
    base = rng.uniform(100, 170) + rng.uniform(-12, 12, size=3)
    coarse = rng.normal(0, 12, size=(6, 6, 3))
    small = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8))
    texture = np.asarray(small.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) - 128
    grain = rng.normal(0, 5, size=(side, side, 1))
    return np.clip(base + texture + grain, 0, 255).astype(np.uint8)


def _polygon(centre: tuple[float, float], radii: list[float], angle: float) -> list[tuple[float, float]]:
    """Vertices at evenly spaced angles (starting straight up) with the given radii."""
    cx, cy = centre
    step = 2 * math.pi / len(radii)
    return [
        (cx + r * math.cos(angle + k * step - math.pi / 2), cy + r * math.sin(angle + k * step - math.pi / 2))
        for k, r in enumerate(radii)
    ]


def _shape_mask(shape: str, centre: tuple[float, float], radius: float, side: int, angle: float) -> np.ndarray:
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = centre
    r = radius
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        draw.polygon(_polygon(centre, [r * 1.2] * 4, angle + math.pi / 4), fill=255)
    elif shape == "diamond":
        draw.polygon(_polygon(centre, [r, r * 0.7, r, r * 0.7], angle), fill=255)
    elif shape == "triangle":
        draw.polygon(_polygon(centre, [r] * 3, angle), fill=255)
    elif shape == "hexagon":
        draw.polygon(_polygon(centre, [r] * 6, angle + math.pi / 6), fill=255)
    elif shape == "star":
        draw.polygon(_polygon(centre, [r, r * 0.45] * 5, angle), fill=255)
    elif shape == "cross":
        arm = r * 0.35
        draw.rectangle([cx - r, cy - arm, cx + r, cy + arm], fill=255)
        draw.rectangle([cx - arm, cy - r, cx + arm, cy + r], fill=255)
    elif shape == "heart":
        lobe = r * 0.5
        draw.ellipse([cx - 2 * lobe, cy - r * 0.75, cx, cy - r * 0.75 + 2 * lobe], fill=255)
        draw.ellipse([cx, cy - r * 0.75, cx + 2 * lobe, cy - r * 0.75 + 2 * lobe], fill=255)
        draw.polygon(
            [(cx - 2 * lobe * 0.97, cy - r * 0.15), (cx + 2 * lobe * 0.97, cy - r * 0.15), (cx, cy + r)], fill=255
        )
    elif shape == "arrow":
        shaft = r * 0.3
        pts = [
            (-r, -shaft),
            (0.1 * r, -shaft),
            (0.1 * r, -r * 0.8),
            (r, 0),
            (0.1 * r, r * 0.8),
            (0.1 * r, shaft),
            (-r, shaft),
        ]
        cos, sin = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in pts], fill=255)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        hole = r * 0.55
        draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(canvas) > 127


def make_scene(index: int, rng: np.random.Generator, side: int = 256, max_objects: int = 3) -> Scene:
    """One scene of 1..max_objects shapes, each in its own cell of a 3x3 grid."""
    image = _background(rng, side)
    count = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(9, size=count, replace=False)
    picks = []
    for cell in cells:
        row, col = ROWS[cell // 3], COLS[cell % 3]
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        size = list(SIZES)[rng.integers(len(SIZES))]
        radius = SIZES[size] * side / 2
        jitter = (side / 3 - 2 * radius) / 2 * 0.8
        cx = (cell % 3 + 0.5) * side / 3 + rng.uniform(-jitter, jitter) if jitter > 0 else (cell % 3 + 0.5) * side / 3
        cy = (cell // 3 + 0.5) * side / 3 + rng.uniform(-jitter, jitter) if jitter > 0 else (cell // 3 + 0.5) * side / 3
        mask = _shape_mask(shape, (cx, cy), radius, side, float(rng.uniform(-0.3, 0.3)))
        picks.append((shape, colour, size, row, col, mask))

    objects = []
    for shape, colour, size, row, col, mask in picks:
        shade = np.clip(np.array(COLOURS[colour]) + rng.integers(-15, 16, size=3), 0, 255)
        image[mask] = shade.astype(np.uint8)
        objects.append(SceneObject(shape, colour, size, row, col, mask.copy(), (0, 0, 0, 0), (0, 0)))
    # objects drawn later may cover earlier ones: keep only what stays visible
    for i, obj in enumerate(objects):
        for later in objects[i + 1 :]:
            obj.mask &= ~later.mask
        obj.bbox, obj.centroid = mask_box(obj.mask), mask_centroid(obj.mask)
    return Scene(index, image, objects)


def make_scenes(count: int, seed: int, side: int = 256, max_objects: int = 3) -> list[Scene]:
    """`count` scenes, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return [make_scene(i, rng, side, max_objects) for i in range(count)]


def write_folder(
    folder: str | Path, count: int, seed: int, side: int = 256, max_objects: int = 3, style: str = "grid"
) -> list[Scene]:
    """Write scenes as PNG files plus `scenes.jsonl` (captions and ground-truth regions); `style` is "grid"
    (`side` and `max_objects` apply) or "varied"."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if style == "varied":
        scenes = make_varied_scenes(count, seed)
    elif style == "grid":
        scenes = make_scenes(count, seed, side, max_objects)
    else:
        raise ValueError(f"unknown scene style {style!r}: grid or varied")
    with open(folder / "scenes.jsonl", "w") as out:
        for scene in scenes:
            Image.fromarray(scene.image).save(folder / f"scene_{scene.index:05d}.png")
            out.write(json.dumps(scene.to_json()) + "\n")
    return scenes


# ---- varied scenes: the harder benchmark's rendering ----------------------------------------------------

ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9)
SHORT_SIDES = (192, 224, 256, 320)
BACKGROUNDS = ("flat", "gradient", "radial", "stripes", "checker", "texture", "clutter")
MAX_HIDDEN = 0.45  # an object may lose at most this share of its area behind later ones


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour: backgrounds must not read as one of the named colours."""
    grey = rng.uniform(70, 200)
    return np.clip(grey + rng.uniform(-25, 25, size=3), 0, 255)


def _varied_background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, str]:
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xs / width, ys / height
    a, b = _muted(rng), _muted(rng)
    if kind == "flat":
        t = np.zeros_like(u)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = (u - 0.5) * math.cos(angle) + (v - 0.5) * math.sin(angle) + 0.5
    elif kind == "radial":
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        t = np.hypot(u - cx, v - cy) / 0.8
    elif kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(0.05, 0.2)
        t = 0.5 + 0.35 * np.sin(2 * math.pi * ((u * math.cos(angle) + v * math.sin(angle)) / period))
    elif kind == "checker":
        cells = int(rng.integers(4, 12))
        t = ((np.floor(u * cells) + np.floor(v * cells)) % 2) * 0.6 + 0.2
    else:  # texture or clutter: smooth noise at two scales
        t = np.zeros_like(u)
        for grid, amp in ((4, 0.6), (16, 0.4)):
            noise = Image.fromarray((rng.uniform(0, 255, size=(grid, grid))).astype(np.uint8))
            t += amp * np.asarray(noise.resize((width, height), Image.Resampling.BICUBIC), np.float32) / 255
    t = np.clip(t, 0, 1)[..., None]
    image = a * (1 - t) + b * t + rng.normal(0, rng.uniform(1, 7), size=(height, width, 1))
    if kind == "clutter":  # small muted marks: strokes and blobs a segmenter may take for objects
        canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(10, 40))):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            r = rng.uniform(2, 0.04 * min(height, width))
            colour = tuple(int(c) for c in _muted(rng))
            if rng.random() < 0.5:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
            else:
                draw.line([x, y, x + rng.uniform(-4, 4) * r, y + rng.uniform(-4, 4) * r], fill=colour, width=2)
        image = np.asarray(canvas, np.float32)
    return np.clip(image, 0, 255), kind


def _pick_object(rng: np.random.Generator, earlier: list[tuple[str, str]]) -> tuple[str, str]:
    """A shape and colour; a third of the time one of them repeats an earlier object's (a distractor)."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    if earlier and rng.random() < 0.33:
        other_shape, other_colour = earlier[rng.integers(len(earlier))]
        if rng.random() < 0.5:
            shape = other_shape
        else:
            colour = other_colour
    return shape, colour


def make_varied_scene(index: int, rng: np.random.Generator) -> Scene:
    """One scene in the varied style (see the module's docstring)."""
    import cv2  # the outlines; cv2 is a dependency of irs already (the weight-free segmenter)

    short = int(SHORT_SIDES[rng.integers(len(SHORT_SIDES))])
    aspect = float(ASPECTS[rng.integers(len(ASPECTS))])
    height, width = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
    image, _ = _varied_background(rng, height, width)
    scale = 2  # shapes are drawn at twice the size, then averaged down: anti-aliased edges
    side = scale * max(height, width)
    wanted = int(rng.integers(1, 7))
    placed: list[tuple[str, str, float, np.ndarray]] = []  # shape, colour, diameter share, coverage (0..1)
    for _ in range(wanted * 20):
        if len(placed) == wanted:
            break
        shape, colour = _pick_object(rng, [(p[0], p[1]) for p in placed])
        diameter = float(rng.uniform(0.08, 0.30))
        radius = diameter * short / 2
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        big = _shape_mask(shape, (cx * scale, cy * scale), radius * scale, side, float(rng.uniform(0, 2 * math.pi)))
        coverage = big[: height * scale, : width * scale].reshape(height, scale, width, scale).mean(axis=(1, 3))
        hidden_ok = all(
            ((p[3] > 0.5) & (coverage > 0.5)).sum() <= MAX_HIDDEN * (p[3] > 0.5).sum() and (p[3] > 0.5).sum() > 0
            for p in placed
        )
        if (coverage > 0.5).sum() >= 30 and hidden_ok:
            for p in placed:  # what this object covers is no longer visible below it
                p[3][:] = np.minimum(p[3], 1 - coverage)
            placed.append((shape, colour, diameter, coverage))
    # paint each object's visible part (they no longer overlap): colour with shading, half with a dark outline
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for _, colour, _, drawn in placed:
        base = np.clip(np.array(COLOURS[colour], np.float32) + rng.integers(-20, 21, size=3), 0, 255)
        angle = rng.uniform(0, 2 * math.pi)
        shade = 1 + rng.uniform(0, 0.15) * (((xs / width) * math.cos(angle) + (ys / height) * math.sin(angle)) - 0.5)
        fill = np.clip(base[None, None, :] * shade[..., None], 0, 255)
        image = image * (1 - drawn[..., None]) + fill * drawn[..., None]
        if rng.random() < 0.5:
            solid = (drawn > 0.5).astype(np.uint8)
            width_px = int(rng.integers(1, 3))
            ring = solid - cv2.erode(solid, np.ones((2 * width_px + 1, 2 * width_px + 1), np.uint8))
            image[ring > 0] = base * 0.25
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # JPEG artefacts, as in photos that went through a camera or the web
        import io

        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=int(rng.integers(60, 91)))
        pixels = np.asarray(Image.open(out).convert("RGB"))
    scene_objects = []
    for shape, colour, diameter, coverage in placed:
        mask = coverage > 0.5
        if mask.sum() < 30:
            continue
        box, centre = mask_box(mask), mask_centroid(mask)
        row, col = ROWS[min(2, int(centre[1] * 3))], COLS[min(2, int(centre[0] * 3))]
        size = "small" if diameter < 0.19 else "large"
        scene_objects.append(SceneObject(shape, colour, size, row, col, mask, box, centre))
    return Scene(index, pixels, scene_objects)


def make_varied_scenes(count: int, seed: int) -> list[Scene]:
    """`count` varied scenes, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return [make_varied_scene(i, rng) for i in range(count)]
