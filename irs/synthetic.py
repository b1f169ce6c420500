"""Synthetic scenes: simple shapes of known colour, size and position on textured backgrounds,
with ground-truth masks and captions. The same seed always gives the same scenes.
Queries with ground truth and training captions over these scenes are in irs.benchmark.
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


def write_folder(folder: str | Path, count: int, seed: int, side: int = 256, max_objects: int = 3) -> list[Scene]:
    """Write scenes as PNG files plus `scenes.jsonl` (captions and ground-truth regions)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(count, seed, side, max_objects)
    with open(folder / "scenes.jsonl", "w") as out:
        for scene in scenes:
            Image.fromarray(scene.image).save(folder / f"scene_{scene.index:05d}.png")
            out.write(json.dumps(scene.to_json()) + "\n")
    return scenes
