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
from dataclasses import dataclass
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


def phrase(obj: SceneObject, rng: np.random.Generator | None = None) -> str:
    """ "a red circle", sometimes with its size when a generator is given (training variety)."""
    if rng is not None and rng.random() < 0.3:
        return f"a {obj.size} {obj.colour} {obj.shape}"
    return obj.a_name


def places_of(obj: SceneObject) -> list[str]:
    """Every place phrase that is true of the object ("on the left", "in the top left", ...)."""
    return [words for words, test in PLACE_WORDS.items() if test(obj)]


def relations_between(a: SceneObject, b: SceneObject) -> list[str]:
    """Every predicate that holds from `a` to `b` ("left of", "above", ...)."""
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


def _answers(
    scenes: list[Scene], family: str, a: SceneObject, b: SceneObject | None, words: str
) -> dict[int, list[Box]]:
    """Per scene that answers the query, the boxes of the objects that can stand for `a` in it."""
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
) -> dict[str, Any]:
    """Index a synthetic gallery once per segmenter and score every query family in every mode.

    `index_for(segmenter_name, oracle)` returns an opened irs Index for that segmenter (`oracle` is the
    OracleSegmenter for "oracle"). Returns {"by_segmenter": {name: {mode: {family: metrics}}}, ...}.
    """
    gallery = out_dir / "gallery"
    started = time.monotonic()
    scenes = write_folder(gallery, gallery_size, seed, side)
    queries = [
        EvalQuery(
            q.text,
            {f"scene_{i:05d}.png" for i in q.relevant},
            {f"scene_{i:05d}.png": boxes for i, boxes in q.relevant.items()},
            q.family,
        )
        for q in benchmark_queries(scenes, per_family, seed + 1, max_relevant)
    ]
    log(f"gallery: {len(scenes)} scenes (seed {seed}), {len(queries)} queries, {time.monotonic() - started:.0f}s")
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
    }
