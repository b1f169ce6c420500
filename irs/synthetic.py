"""Synthetic scenes: simple shapes of known colour, size and position on textured backgrounds,
with ground-truth masks and captions. The same seed always gives the same scenes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from irs.geometry import mask_box, mask_centroid
from irs.records import Box, Point

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


# ---- words for scenes: captions for training, queries with ground truth for evaluation ----------------

PLACE_WORDS = {  # a place phrase -> the cells it covers
    "on the left": lambda o: o.col == "left",
    "on the right": lambda o: o.col == "right",
    "at the top": lambda o: o.row == "top",
    "at the bottom": lambda o: o.row == "bottom",
    "in the centre": lambda o: o.row == "middle" and o.col == "centre",
    "in the top left": lambda o: o.row == "top" and o.col == "left",
    "in the top right": lambda o: o.row == "top" and o.col == "right",
    "in the bottom left": lambda o: o.row == "bottom" and o.col == "left",
    "in the bottom right": lambda o: o.row == "bottom" and o.col == "right",
}
RELATION_TESTS = {  # predicate -> does it hold from subject a to object b, by grid cells
    "left of": lambda a, b: COLS.index(a.col) < COLS.index(b.col),
    "right of": lambda a, b: COLS.index(a.col) > COLS.index(b.col),
    "above": lambda a, b: ROWS.index(a.row) < ROWS.index(b.row),
    "below": lambda a, b: ROWS.index(a.row) > ROWS.index(b.row),
}
FAMILIES = ("attribute", "absolute", "relation", "two_objects")


def phrase(obj: SceneObject, rng: np.random.Generator | None = None) -> str:
    """ "a red circle", sometimes with its size when a generator is given (training variety)."""
    if rng is not None and rng.random() < 0.3:
        return f"a {obj.size} {obj.colour} {obj.shape}"
    return obj.a_name


def places_of(obj: SceneObject) -> list[str]:
    return [words for words, test in PLACE_WORDS.items() if test(obj)]


def relations_between(a: SceneObject, b: SceneObject) -> list[str]:
    return [pred for pred, test in RELATION_TESTS.items() if test(a, b)]


def training_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption for a whole scene in one of the query families' phrasings, or the full description.

    The whole-image baseline is trained on these, so it has seen every kind of query the benchmark
    asks: it is a fair CLIP, not one that never saw a position or a relation."""
    objs = scene.objects
    kind = rng.integers(5)
    a = objs[rng.integers(len(objs))]
    if kind == 0:
        return scene.caption
    if kind == 1:
        return phrase(a, rng)
    if kind == 2:
        return f"{phrase(a, rng)} {rng.choice(places_of(a))}"
    if len(objs) > 1:
        b = objs[(objs.index(a) + 1 + rng.integers(len(objs) - 1)) % len(objs)]
        preds = relations_between(a, b)
        if kind == 3 and preds:
            return f"{phrase(a, rng)} {rng.choice(preds)} {phrase(b, rng)}"
        return f"{phrase(a, rng)} and {phrase(b, rng)}"
    return f"{phrase(a, rng)} {rng.choice(places_of(a))}"


@dataclass
class BenchmarkQuery:
    """A query with the scenes that answer it and, per scene, the regions its first object may be."""

    family: str
    text: str
    relevant: dict[int, list[Box]]  # scene index -> boxes of the first object's possible matches


def _answers(scenes: list[Scene], family: str, a: SceneObject, b: SceneObject | None, words: str) -> dict:
    relevant: dict[int, list[Box]] = {}
    for scene in scenes:
        boxes = []
        for x in scene.objects:
            if x.name != a.name:
                continue
            if family == "absolute" and not PLACE_WORDS[words](x):
                continue
            if family in ("relation", "two_objects"):
                others = [y for y in scene.objects if y is not x and y.name == b.name]
                if family == "relation":
                    others = [y for y in others if RELATION_TESTS[words](x, y)]
                if not others:
                    continue
            boxes.append(x.bbox)
        if boxes:
            relevant[scene.index] = boxes
    return relevant


def benchmark_queries(
    scenes: list[Scene], per_family: int, seed: int, max_relevant: float = 0.05
) -> list[BenchmarkQuery]:
    """`per_family` distinct queries per family, each drawn from a scene (so at least one answer) and
    kept only if at most `max_relevant` of the gallery answers it."""
    rng = np.random.default_rng(seed)
    limit = max(1, int(max_relevant * len(scenes)))
    queries: list[BenchmarkQuery] = []
    for family in FAMILIES:
        seen: set[str] = set()
        tries = 0
        while sum(q.family == family for q in queries) < per_family and tries < per_family * 200:
            tries += 1
            scene = scenes[rng.integers(len(scenes))]
            a = scene.objects[rng.integers(len(scene.objects))]
            others = [o for o in scene.objects if o is not a]
            b, words = None, ""
            if family == "attribute":
                text = a.a_name
            elif family == "absolute":
                words = str(rng.choice(places_of(a)))
                text = f"{a.a_name} {words}"
            else:
                if not others:
                    continue
                b = others[rng.integers(len(others))]
                if b.name == a.name:
                    continue
                if family == "relation":
                    preds = relations_between(a, b)
                    if not preds:
                        continue
                    words = str(rng.choice(preds))
                    text = f"{a.a_name} {words} {b.a_name}"
                else:
                    text = f"{a.a_name} and {b.a_name}"
            if text in seen:
                continue
            relevant = _answers(scenes, family, a, b, words)
            if scene.index in relevant and len(relevant) <= limit:
                seen.add(text)
                queries.append(BenchmarkQuery(family, text, relevant))
    return queries
