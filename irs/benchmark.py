"""The synthetic spatial benchmark: queries with ground truth over synthetic scenes, the captions the
small CLIP is trained on, and the driver that indexes a gallery and scores every query family in every
mode (bench/spatial.py runs it).

Four query families: attribute ("a red circle"), absolute ("a red circle on the left"), relation
("a red circle left of a blue square") and two_objects ("a red circle and a blue square"). Each query's
answers come from the scenes' ground truth, so the same seed always gives the same queries and answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irs.evaluate import MODES, EvalQuery, score_queries
from irs.geometry import Box, fit_mask, mask_iou
from irs.records import Segment
from irs.segment import OracleSegmenter
from irs.synthetic import COLS, ROWS, Scene, SceneObject, write_folder

# ---- words for scenes: captions for training, queries with ground truth for evaluation ----------------

PLACE_WORDS: dict[str, Callable[[SceneObject], bool]] = {  # a place phrase -> the cells it covers
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
# predicate -> does it hold from subject a to object b, by grid cells
RELATION_TESTS: dict[str, Callable[[SceneObject, SceneObject], bool]] = {
    "left of": lambda a, b: COLS.index(a.col) < COLS.index(b.col),
    "right of": lambda a, b: COLS.index(a.col) > COLS.index(b.col),
    "above": lambda a, b: ROWS.index(a.row) < ROWS.index(b.row),
    "below": lambda a, b: ROWS.index(a.row) > ROWS.index(b.row),
}
FAMILIES = ("attribute", "absolute", "relation", "two_objects")


# canonical place (irs.spatial.POSITIONS) of each original place phrase
PLACE_OF = {
    "on the left": "left",
    "on the right": "right",
    "at the top": "top",
    "at the bottom": "bottom",
    "in the centre": "centre",
    "in the top left": "top left",
    "in the top right": "top right",
    "in the bottom left": "bottom left",
    "in the bottom right": "bottom right",
}
CORNERS = ("top left", "top right", "bottom left", "bottom right")


@dataclass(frozen=True)
class Phrasing:
    """How queries and captions are worded: templates per family ({a}, {b} stand for "a red circle"), place
    phrasings per canonical place, relation phrasings per predicate."""

    name: str
    attribute: tuple[str, ...]
    places: dict[str, tuple[str, ...]]
    relations: dict[str, tuple[str, ...]]
    two_objects: tuple[str, ...]

    def templates(self) -> set[str]:
        """Every wording, for checking that two phrasings share none."""
        return {
            *self.attribute,
            *(p for ps in self.places.values() for p in ps),
            *(r for rs in self.relations.values() for r in rs),
            *self.two_objects,
        }


# the original benchmark's wording (its queries stay what they were)
ORIGINAL = Phrasing(
    "original",
    ("{a}",),
    {place: (words,) for words, place in PLACE_OF.items()},
    {pred: (pred,) for pred in RELATION_TESTS},
    ("{a} and {b}",),
)
# what the demo CLIP is trained on: the original wording and a few more
TRAINING = Phrasing(
    "training",
    ("{a}", "{a} in the picture", "a photo of {a}"),
    {
        **{
            place: (words, words.replace("on the", "at the"), f"{words} side")
            for words, place in PLACE_OF.items()
            if place in ("left", "right")
        },
        "top": ("at the top", "in the upper part", "at the top of the image"),
        "bottom": ("at the bottom", "in the lower part", "at the bottom of the image"),
        "centre": ("in the centre", "in the center", "centered"),
        **{c: (f"in the {c}", f"in the {c} corner", f"in the {c.replace(' ', '-')}") for c in CORNERS},
    },
    {
        "left of": ("left of", "to the left of"),
        "right of": ("right of", "to the right of"),
        "above": ("above", "over"),
        "below": ("below", "under"),
    },
    ("{a} and {b}", "{a}, {b}"),
)
# only ever in evaluation queries: phrasings the model and the ranking were never tuned on
EVALUATION = Phrasing(
    "evaluation",
    ("there is {a} in the image", "{a} somewhere in this photo", "show me {a}"),
    {
        "left": ("on the far left", "towards the left", "on the left-hand side of the picture"),
        "right": ("on the far right", "near the right edge", "on the right-hand side"),
        "top": ("near the top edge", "at the very top", "towards the top of the frame"),
        "bottom": ("near the bottom edge", "at the very bottom", "towards the bottom"),
        "centre": ("in the middle", "in the middle of the picture", "at the center of the frame"),
        **{
            c: (f"in the corner at the {c}", f"in the {c.replace('top', 'upper').replace('bottom', 'lower')} corner")
            for c in CORNERS
        },
    },
    {
        "left of": ("to the left side of", "further left than", "on the left-hand side of", "more to the left than"),
        "right of": ("further right than", "on the right side of", "to the right-hand side of"),
        "above": ("higher up than", "higher than", "further up than"),
        "below": ("beneath", "underneath", "lower than", "lower down than"),
    },
    ("{a} with {b}", "{a} plus {b}", "{a} & {b}", "{a} as well as {b}", "{a} together with {b}"),
)
PHRASINGS = {p.name: p for p in (ORIGINAL, TRAINING, EVALUATION)}

# Where grid cells give no exact answer (varied scenes), ground truth is read from centroids, and a statement
# too close to call is neither true nor false: a query that depends on one is not asked.
PLACE_MARGIN = 0.04  # a centroid this close to a third of the image: its place is ambiguous
RELATION_MARGIN = 0.08  # "left of" holds when the subject's centre is this far left of the object's


def _third(v: float) -> int | None:
    """0, 1, 2: the third a coordinate lies in; None when it is within PLACE_MARGIN of an edge between two."""
    if min(abs(v - 1 / 3), abs(v - 2 / 3)) < PLACE_MARGIN:
        return None
    return 0 if v < 1 / 3 else 1 if v < 2 / 3 else 2


def place_holds(obj: SceneObject, place: str, cells: bool = True) -> bool | None:
    """Whether an object is in a canonical place: by its grid cell (`cells`), or by its centroid's thirds,
    None when that is too close to call."""
    if cells:
        col, row = COLS.index(obj.col), ROWS.index(obj.row)
    else:
        col, row = _third(obj.centroid[0]), _third(obj.centroid[1])
    wanted_col = {"left": 0, "right": 2}.get(place.split()[-1]) if place != "centre" else 1
    wanted_row = {"top": 0, "bottom": 2}.get(place.split()[0]) if place != "centre" else 1
    checks = [(axis, want) for axis, want in ((col, wanted_col), (row, wanted_row)) if want is not None]
    if any(axis is None for axis, _ in checks):
        return None if all(axis is None or axis == want for axis, want in checks) else False
    return all(axis == want for axis, want in checks)


def relation_holds(a: SceneObject, b: SceneObject, predicate: str, cells: bool = True) -> bool | None:
    """Whether `a predicate b` holds: by grid cells (`cells`), or by centroids with RELATION_MARGIN, None
    when the centres are nearer than that along the relation's axis (neither clearly so nor clearly not).
    Only the relation's own axis counts: a shape up and to the left is still "left of"."""
    if cells:
        return RELATION_TESTS[predicate](a, b)
    axis = 0 if predicate in ("left of", "right of") else 1
    ahead = b.centroid[axis] - a.centroid[axis]  # > 0: a is left of / above b
    if predicate in ("right of", "below"):
        ahead = -ahead
    if abs(ahead) < RELATION_MARGIN:
        return None
    return ahead > 0


def phrase(obj: SceneObject, rng: np.random.Generator | None = None) -> str:
    """ "a red circle", sometimes with its size when a generator is given (training variety)."""
    if rng is not None and rng.random() < 0.3:
        return f"a {obj.size} {obj.colour} {obj.shape}"
    return obj.a_name


def places_of(obj: SceneObject, cells: bool = True) -> list[str]:
    """Every canonical place that is clearly true of the object ("left", "top left", ...), in PLACE_OF's
    order."""
    return [place for place in PLACE_OF.values() if place_holds(obj, place, cells)]


def relations_between(a: SceneObject, b: SceneObject, cells: bool = True) -> list[str]:
    """Every predicate that clearly holds from `a` to `b` ("left of", "above", ...)."""
    return [pred for pred in RELATION_TESTS if relation_holds(a, b, pred, cells)]


def _pick(options: tuple[str, ...] | list[str], rng: np.random.Generator) -> str:
    """One of the options; a single option draws nothing, so the original queries keep their random stream."""
    return options[0] if len(options) == 1 else str(options[rng.integers(len(options))])


def training_caption(scene: Scene, rng: np.random.Generator, cells: bool = True) -> str:
    """A caption for a whole scene in one of the query families' training phrasings, or the full description.

    The whole-image baseline is trained on these, so it has seen every kind of query the benchmark
    asks: it is a fair CLIP, not one that never saw a position or a relation."""
    objs = scene.objects
    kind = rng.integers(5)
    first = int(rng.integers(len(objs)))
    a = objs[first]
    places = places_of(a, cells)
    if kind == 0:
        return scene.caption
    if kind == 1 or not places and len(objs) == 1:
        return _pick(TRAINING.attribute, rng).format(a=phrase(a, rng))
    if kind == 2 and places:
        return f"{phrase(a, rng)} {_pick(TRAINING.places[str(rng.choice(places))], rng)}"
    if len(objs) > 1:
        b = objs[(first + 1 + rng.integers(len(objs) - 1)) % len(objs)]  # by position: objects hold arrays
        preds = relations_between(a, b, cells)
        if kind == 3 and preds:
            words = _pick(TRAINING.relations[str(rng.choice(preds))], rng)
            return f"{phrase(a, rng)} {words} {phrase(b, rng)}"
        return _pick(TRAINING.two_objects, rng).format(a=phrase(a, rng), b=phrase(b, rng))
    if places:
        return f"{phrase(a, rng)} {_pick(TRAINING.places[str(rng.choice(places))], rng)}"
    return phrase(a, rng)


@dataclass
class BenchmarkQuery:
    """A query with the scenes that answer it and, per scene, the regions its first object may be."""

    family: str
    text: str
    relevant: dict[int, list[Box]]  # scene index -> boxes of the first object's possible matches
    ignored: set[int] = field(default_factory=set)  # scenes too close to call: neither relevant nor a miss

    def to_eval(self) -> EvalQuery:
        """The query as `irs eval` scores it: scenes named by their files (`scene_00012.png`)."""

        def name(i: int) -> str:
            return f"scene_{i:05d}.png"

        return EvalQuery(
            self.text,
            {name(i) for i in self.relevant},
            {name(i): boxes for i, boxes in self.relevant.items()},
            self.family,
            {name(i) for i in self.ignored},
        )


def _answers(
    scenes: list[Scene], family: str, a: SceneObject, b: SceneObject | None, fact: str, cells: bool
) -> tuple[dict[int, list[Box]], set[int]]:
    """Per scene that answers the query, the boxes of the objects that can stand for `a` in it; and the
    scenes that can be told neither way (a place or relation too close to call), to leave out of scoring."""
    relevant: dict[int, list[Box]] = {}
    ignored: set[int] = set()
    for scene in scenes:
        boxes, unsure = [], False
        for x in scene.objects:
            if x.name != a.name:
                continue
            holds: bool | None = True
            if family == "absolute":
                holds = place_holds(x, fact, cells)
            elif family in ("relation", "two_objects"):
                others = [y for y in scene.objects if y is not x and y.name == b.name]
                if family == "relation":
                    verdicts = [relation_holds(x, y, fact, cells) for y in others]
                    holds = True if True in verdicts else None if None in verdicts else False
                else:
                    holds = bool(others)
            if holds:
                boxes.append(x.bbox)
            unsure = unsure or holds is None
        if boxes:
            relevant[scene.index] = boxes
        elif unsure:
            ignored.add(scene.index)
    return relevant, ignored


def benchmark_queries(
    scenes: list[Scene],
    per_family: int,
    seed: int,
    max_relevant: float = 0.05,
    phrasing: Phrasing = ORIGINAL,
    cells: bool = True,
) -> list[BenchmarkQuery]:
    """`per_family` distinct queries per family, each drawn from a scene (so at least one answer), worded
    by `phrasing`, and kept only if at most `max_relevant` of the gallery answers it; scenes too close to call
    are the query's `ignored` ones. `cells`: ground truth from grid cells (grid scenes) or from centroids
    (varied scenes)."""
    rng = np.random.default_rng(seed)
    limit = max(1, int(max_relevant * len(scenes)))
    queries: list[BenchmarkQuery] = []
    for family in FAMILIES:
        seen: set[str] = set()
        tries = 0
        while sum(q.family == family for q in queries) < per_family and tries < per_family * 200:
            tries += 1
            scene = scenes[rng.integers(len(scenes))]
            if not scene.objects:
                continue
            a = scene.objects[rng.integers(len(scene.objects))]
            others = [o for o in scene.objects if o is not a]
            b, fact = None, ""
            if family == "attribute":
                text = _pick(phrasing.attribute, rng).format(a=a.a_name)
            elif family == "absolute":
                places = places_of(a, cells)
                if not places:
                    continue
                fact = str(rng.choice(places))
                text = f"{a.a_name} {_pick(phrasing.places[fact], rng)}"
            else:
                if not others:
                    continue
                b = others[rng.integers(len(others))]
                if b.name == a.name:
                    continue
                if family == "relation":
                    preds = relations_between(a, b, cells)
                    if not preds:
                        continue
                    fact = str(rng.choice(preds))
                    text = f"{a.a_name} {_pick(phrasing.relations[fact], rng)} {b.a_name}"
                else:
                    text = _pick(phrasing.two_objects, rng).format(a=a.a_name, b=b.a_name)
            if text in seen:
                continue
            relevant, ignored = _answers(scenes, family, a, b, fact, cells)
            if scene.index in relevant and len(relevant) <= limit:
                seen.add(text)
                queries.append(BenchmarkQuery(family, text, relevant, ignored))
    return queries


# ---- segmentation: are the objects among the stored segments ----------------------------------------


def objects_found(scene: Scene, segments: list[Segment], min_iou: float = 0.5) -> list[bool]:
    """Per object of the scene (in order): does some segment cover it at mask IoU >= `min_iou`?

    Masks are compared at the stored segment's resolution (`mask_max_side`, what search and the overlays
    see), the object's mask scaled to it."""
    masks = [s.mask() for s in segments]
    return [any(mask_iou(m, fit_mask(obj.mask, *m.shape)) >= min_iou for m in masks) for obj in scene.objects]


def object_recall(scenes: list[Scene], segments: list[list[Segment]], min_iou: float = 0.5) -> float:
    """The share of the scenes' objects that some segment of their scene covers at mask IoU >= `min_iou`
    (`segments[i]` are scene i's, as stored: after `postprocess`). An object with no visible pixel is not
    counted; NaN when no object is."""
    if len(scenes) != len(segments):
        raise ValueError(f"{len(scenes)} scenes but segments for {len(segments)}")
    hits = [
        hit
        for scene, segs in zip(scenes, segments)
        for obj, hit in zip(scene.objects, objects_found(scene, segs, min_iou))
        if obj.mask.any()
    ]
    return sum(hits) / len(hits) if hits else float("nan")


# ---- the benchmark driver --------------------------------------------------------------------------


def spatial_benchmark(
    index_for: Callable[[str, Any], Any],
    out_dir: Path,
    gallery_size: int,
    per_family: int,
    seed: int,
    segmenters: list[str],
    side: int = 256,
    max_relevant: float = 0.05,
    log: Callable[[str], Any] = print,
    style: str = "grid",
    phrasing: Phrasing = ORIGINAL,
) -> dict[str, Any]:
    """Index a synthetic gallery once per segmenter and score every query family in every mode.

    `index_for(segmenter_name, oracle)` returns an opened irs Index for that segmenter (`oracle` is the
    OracleSegmenter for "oracle"). `style` is the scenes' ("grid" or "varied": then ground truth comes from
    centroids and `side` does not apply), `phrasing` the queries' wording.
    Returns {"by_segmenter": {name: {mode: {family: metrics}}}, ...}.
    """
    gallery = out_dir / "gallery"
    started = time.monotonic()
    scenes = write_folder(gallery, gallery_size, seed, side, style=style)
    cells = style == "grid"
    queries = [q.to_eval() for q in benchmark_queries(scenes, per_family, seed + 1, max_relevant, phrasing, cells)]
    log(
        f"gallery: {len(scenes)} {style} scenes (seed {seed}), {len(queries)} queries in {phrasing.name} "
        f"wording, {time.monotonic() - started:.0f}s"
    )
    oracle = OracleSegmenter({OracleSegmenter.key(s.image): [o.mask for o in s.objects] for s in scenes})

    by_segmenter: dict[str, Any] = {}
    counts: dict[str, dict[str, int]] = {}
    for name in segmenters:
        index = index_for(name, oracle if name == "oracle" else None)
        t0 = time.monotonic()
        report = index.add_folder(gallery)
        stats = index.stats()
        counts[name] = {"images": stats.images, "segments": stats.segments}
        log(f"[{name}] indexed {report.added} images, {stats.segments} segments in {time.monotonic() - t0:.0f}s")
        by_segmenter[name] = {}
        for mode, overrides in MODES.items():
            settings = index.settings.replace(**overrides)
            t0 = time.monotonic()
            metrics = score_queries(lambda text, k, s=settings, i=index: i.search(text, k, settings=s), queries)
            by_segmenter[name][mode] = {f: metrics[f] for f in (*FAMILIES, "all") if f in metrics}
            log(f"[{name}] {mode}: {time.monotonic() - t0:.0f}s for {len(queries)} queries")
        index.close()
    return {
        "by_segmenter": by_segmenter,
        "counts": counts,
        "seed": seed,
        "gallery": gallery_size,
        "queries": len(queries),
        "per_family": per_family,
        "style": style,
        "phrasing": phrasing.name,
    }
