"""Positional evaluation from real annotations: queries with ground truth generated from a COCO-format instance
file (COCO, LVIS, Objects365, a CVAT COCO export), for `irs eval --positional instances.json`.

Four attribute-free families, in words irs's parser reads (a query it reads otherwise is dropped):
- object:      "a dog"
- absolute:    "a dog on the left", "a dog in the top right": the box centre in that cell of thirds, the cells
               of irs.spatial.POSITIONS
- relation:    "a person to the left of a horse" (right of, above, below): irs.spatial's relation geometry,
               the subject's box centre CLEAR_GAP further that way than the object's
- two_objects: "a dog and a frisbee"

Whether a statement holds in an image is read from its annotations as yes, no or unclear:
- an instance is clear evidence unless it is a crowd region or tiny (box under `min_area` of the image);
- a centre within `margin` of a third's edge is unclear for that edge (the image's own edges are no boundary);
- a relation holds clearly when the centres differ by at least CLEAR_GAP (spatial's fit >= 0.99)
  and the boxes overlap along that axis by at most `max_overlap` of the narrower; it clearly fails when the
  subject's centre is not on that side at all (fit <= 0.5); anything between is unclear;
- in a federated file (LVIS: images list `neg_category_ids`), a category not annotated in an image is absent
  only where the image lists it as such, and one in `not_exhaustive_category_ids` may have instances missing.
An image is relevant when the statement clearly holds, ignored (left out of the ranking: EvalQuery.ignored)
when it is unclear, and not relevant otherwise. Its regions are the boxes of the subject instances that make
the statement hold. Queries relevant to more than `max_share` of the images are dropped, and every drop is
counted in the `PositionalReport`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irs.evaluate import EvalQuery, entry_name
from irs.geometry import Box, Point
from irs.query import Phrase, Relation, parse_query
from irs.spatial import POSITIONS

FAMILIES = ("object", "absolute", "relation", "two_objects")
# a position -> the words of the query; the same names as irs.spatial.POSITIONS
PLACE_WORDS: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
    "top left": "in the top left",
    "top right": "in the top right",
    "bottom left": "in the bottom left",
    "bottom right": "in the bottom right",
}
assert set(PLACE_WORDS) == set(POSITIONS)
CLEAR_GAP = 0.1  # a relation holds clearly when the two centres are this far apart along its axis (of the side)
_THIRDS = {"left": (0.0, 1 / 3), "centre": (1 / 3, 2 / 3), "right": (2 / 3, 1.0), "any": (0.0, 1.0)}
_ROWS = {"top": (0.0, 1 / 3), "centre": (1 / 3, 2 / 3), "bottom": (2 / 3, 1.0), "any": (0.0, 1.0)}
# a position -> (x range, y range) of its cell, as irs.spatial.position_fit reads it
CELLS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "left": (_THIRDS["left"], _ROWS["any"]),
    "right": (_THIRDS["right"], _ROWS["any"]),
    "top": (_THIRDS["any"], _ROWS["top"]),
    "bottom": (_THIRDS["any"], _ROWS["bottom"]),
    "centre": (_THIRDS["centre"], _ROWS["centre"]),
    "top left": (_THIRDS["left"], _ROWS["top"]),
    "top right": (_THIRDS["right"], _ROWS["top"]),
    "bottom left": (_THIRDS["left"], _ROWS["bottom"]),
    "bottom right": (_THIRDS["right"], _ROWS["bottom"]),
}
RELATION_WORDS: dict[str, str] = {  # predicate (irs.spatial.RELATIONS) -> the words of the query
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}

# Three-valued truth: AND is min, OR is max.
NO, UNCLEAR, YES = 0, 1, 2


class InstanceFileError(ValueError):
    """A COCO-format instance file irs cannot read; the message names the file and the field."""


@dataclass(frozen=True)
class Instance:
    """One annotated object: its query noun and its box, normalised to 0..1 and clipped to the image."""

    category: str  # "dog", "sports ball"
    box: Box
    crowd: bool = False

    @property
    def centre(self) -> Point:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class AnnotatedImage:
    """One image of the file with its instances. `absent` is None when every category not annotated is absent
    (COCO, Objects365); in a federated file, the categories verified absent. `incomplete`: categories whose
    instances may not all be annotated."""

    file_name: str  # the entry, "/"-separated, as irs eval matches it
    instances: tuple[Instance, ...]
    absent: frozenset[str] | None = None
    incomplete: frozenset[str] = frozenset()


@dataclass(frozen=True)
class InstanceFile:
    path: str
    images: tuple[AnnotatedImage, ...]
    categories: tuple[str, ...]  # query nouns, sorted (names that read the same are one category)

    @property
    def federated(self) -> bool:
        return any(image.absent is not None for image in self.images)


@dataclass(frozen=True)
class PositionalOptions:
    per_family: int = 25  # queries per family (fewer when the file has fewer)
    seed: int = 0
    margin: float = 0.05  # a centre this close to a third's edge is unclear for it (image fractions)
    min_area: float = 0.01  # a box under this share of the image is too small to count
    max_overlap: float = 0.5  # a pair overlapping more than this share of the narrower box along the axis
    max_share: float = 0.1  # a query relevant to more than this share of the images is dropped

    def __post_init__(self) -> None:
        if self.per_family < 0:
            raise ValueError(f"per-family must be >= 0, got {self.per_family}")
        if not 0 < self.max_share <= 1:
            raise ValueError(f"max-share must be in (0, 1], got {self.max_share}")
        # a margin of 1/6 would leave no third's middle clear
        for name, value, top in (("margin", self.margin, 1 / 6), ("min_area", self.min_area, 1.0)):
            if not 0 <= value < top:
                raise ValueError(f"{name} must be in [0, {top:.3g}), got {value}")
        if not 0 <= self.max_overlap <= 1:
            raise ValueError(f"max_overlap must be in [0, 1], got {self.max_overlap}")


@dataclass
class PositionalReport:
    """What was generated and what was set aside, and why."""

    source: str
    images: int  # images considered (in the file and, where an index is given, indexed)
    categories: int
    instances: int
    crowd: int = 0  # instances that are crowd regions: never clear evidence
    tiny: int = 0  # instances whose box is under min_area
    near_edge: int = 0  # clear instances whose centre lies within margin of a third's edge
    overlap_x: int = 0  # pairs of clear instances too overlapped for left / right
    overlap_y: int = 0  # ... for above / below
    too_common: int = 0  # queries dropped: relevant to more than max_share of the images
    misparsed: int = 0  # queries dropped: the parser reads them otherwise (a category name with a place in it)
    ignored: int = 0  # query-image pairs left out of a ranking: unclear
    federated: bool = False
    queries: dict[str, int] = field(default_factory=dict)  # family -> generated

    def describe(self, options: PositionalOptions) -> str:
        """For people: a few lines."""
        families = ", ".join(f"{f} {self.queries.get(f, 0)}" for f in FAMILIES)
        lines = [
            f"positional queries from {self.source}: {self.images} images, {self.categories} categories, "
            f"{self.instances} instances" + (" (federated: absent only where listed)" if self.federated else ""),
            f"set aside: {self.crowd} crowd and {self.tiny} tiny instances (box < {options.min_area:.0%} of the "
            f"image); unclear: {self.near_edge} centres within {options.margin:g} of a third's edge, "
            f"{self.overlap_x} pairs overlapping too much for left/right, {self.overlap_y} for above/below",
            f"queries: {families}; dropped {self.too_common} relevant to more than {options.max_share:.0%} of "
            f"the images, {self.misparsed} the parser reads otherwise; {self.ignored} query-image pairs unclear "
            "(left out of those rankings)",
        ]
        return "\n".join(lines)


# ---- reading the file ------------------------------------------------------------------------------


def load_instances(path: str | Path) -> InstanceFile:
    """Read a COCO-format instance file: `images` (id, file_name, width, height), `annotations` (image_id,
    category_id, bbox [x, y, w, h] in pixels, iscrowd optional), `categories` (id, name). LVIS images without
    `file_name` are named by the last part of their `coco_url`. Anything else raises InstanceFileError naming
    the field."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except UnicodeDecodeError:
        raise InstanceFileError(f"{source}: not a text file") from None
    except json.JSONDecodeError as err:
        raise InstanceFileError(f"{source}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise InstanceFileError(f"{source}: not a COCO instance file (expected an object with images, annotations)")
    check = _Checker(source)
    names: dict[Any, str] = {}
    for i, cat in enumerate(check.items(data, "categories")):
        where = f"categories[{i}]"
        cid = check.ident(cat, "id", where)
        if cid in names:
            raise check.error(f"{where}.id", f"{cid!r} appears twice")
        names[cid] = noun(check.text(cat, "name", where))
    sizes: dict[Any, tuple[str, float, float]] = {}
    federated: dict[Any, tuple[frozenset[str], frozenset[str]]] = {}
    seen: set[str] = set()
    for i, img in enumerate(check.items(data, "images")):
        where = f"images[{i}]"
        iid = check.ident(img, "id", where)
        if iid in sizes:
            raise check.error(f"{where}.id", f"{iid!r} appears twice")
        if "file_name" not in img and isinstance(img.get("coco_url"), str):  # LVIS
            name = entry_name(img["coco_url"].rsplit("/", 1)[-1])
        else:
            name = entry_name(check.text(img, "file_name", where))
        if name in seen:
            raise check.error(f"{where}.file_name", f"{name!r} appears twice")
        seen.add(name)
        sizes[iid] = (name, check.number(img, "width", where, positive=True), check.number(img, "height", where, True))
        if "neg_category_ids" in img:
            absent = frozenset(names[c] for c in check.ids(img, "neg_category_ids", where, names))
            incomplete = frozenset(names[c] for c in check.ids(img, "not_exhaustive_category_ids", where, names))
            federated[iid] = (absent, incomplete)
    instances: dict[Any, list[Instance]] = {iid: [] for iid in sizes}
    for i, ann in enumerate(check.items(data, "annotations")):
        where = f"annotations[{i}]"
        iid, cid = check.ident(ann, "image_id", where), check.ident(ann, "category_id", where)
        if iid not in sizes:
            raise check.error(f"{where}.image_id", f"no image has id {iid!r}")
        if cid not in names:
            raise check.error(f"{where}.category_id", f"no category has id {cid!r}")
        _, width, height = sizes[iid]
        x, y, w, h = check.bbox(ann, where)
        box = (_clip(x / width), _clip(y / height), _clip((x + w) / width), _clip((y + h) / height))
        instances[iid].append(Instance(names[cid], box, check.crowd(ann, where)))
    images = tuple(
        AnnotatedImage(name, tuple(instances[iid]), *federated.get(iid, (None, frozenset())))
        for iid, (name, _, _) in sizes.items()
    )
    return InstanceFile(source, images, tuple(sorted(set(names.values()))))


def noun(name: str) -> str:
    """A category name as a query says it: "sports_ball" -> "sports ball", "bow_(weapon)" -> "bow",
    "Cabinet/shelf" -> "cabinet"."""
    cleaned = re.sub(r"\([^)]*\)", " ", name.replace("_", " ")).split("/")[0]
    return " ".join(cleaned.lower().split()) or " ".join(name.lower().split())  # "(x)" stays itself


def with_article(name: str) -> str:
    """ "a dog", "an umbrella"; a plural name ("skis", "glasses") stays bare."""
    if name.endswith("s") and not name.endswith(("ss", "us")):
        return name
    return ("an " if name[0] in "aeiou" else "a ") + name


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v))


class _Checker:
    """Field checks that name what is wrong: "instances.json: annotations[3].bbox: ..."."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, where: str, what: str) -> InstanceFileError:
        return InstanceFileError(f"{self.source}: {where}: {what}")

    def items(self, data: dict, key: str) -> list[dict]:
        if key not in data:
            raise self.error(key, "missing (a COCO instance file has images, annotations and categories)")
        value = data[key]
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(f"{key}[{i}]", f"expected an object, got {type(item).__name__}")
        return value

    def _field(self, obj: dict, key: str, where: str) -> Any:
        if key not in obj:
            raise self.error(f"{where}.{key}", "missing")
        return obj[key]

    def ident(self, obj: dict, key: str, where: str) -> int | str:
        value = self._field(obj, key, where)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.error(f"{where}.{key}", f"expected a whole number or a string, got {value!r}")
        return value

    def text(self, obj: dict, key: str, where: str) -> str:
        value = self._field(obj, key, where)
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{where}.{key}", f"expected a non-empty string, got {value!r}")
        return value

    def number(self, obj: dict, key: str, where: str, positive: bool = False) -> float:
        value = self._field(obj, key, where)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(f"{where}.{key}", f"expected a number, got {value!r}")
        if positive and value <= 0:
            raise self.error(f"{where}.{key}", f"expected a number > 0, got {value!r}")
        return float(value)

    def bbox(self, obj: dict, where: str) -> tuple[float, float, float, float]:
        value = self._field(obj, "bbox", where)
        ok = isinstance(value, list) and len(value) == 4
        ok = ok and all(not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) for v in value)
        if not ok:
            raise self.error(f"{where}.bbox", f"expected [x, y, width, height] as 4 numbers, got {value!r}")
        if value[2] < 0 or value[3] < 0:
            raise self.error(f"{where}.bbox", f"width and height must be >= 0, got {value!r}")
        return float(value[0]), float(value[1]), float(value[2]), float(value[3])

    def crowd(self, obj: dict, where: str) -> bool:
        value = obj.get("iscrowd", 0)
        if value not in (0, 1):  # True and False compare equal to 1 and 0
            raise self.error(f"{where}.iscrowd", f"expected 0 or 1, got {value!r}")
        return bool(value)

    def ids(self, obj: dict, key: str, where: str, known: dict[Any, str]) -> list[Any]:
        value = obj.get(key, [])
        if not isinstance(value, list):
            raise self.error(f"{where}.{key}", f"expected a list of category ids, got {value!r}")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | str) or v not in known:
                raise self.error(f"{where}.{key}", f"no category has id {v!r}")
        return value


# ---- what holds in an image ------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """An instance as evidence: how clear it is, and its box (None: where it is is unknown)."""

    clarity: int  # YES: clear; UNCLEAR: crowd, tiny, or possibly there (federated files)
    box: Box | None

    @property
    def centre(self) -> Point:
        assert self.box is not None
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


def _evidence(image: AnnotatedImage, options: PositionalOptions) -> dict[str, list[Evidence]]:
    """Per category, the evidence the image holds of it (see the module doc)."""
    found: dict[str, list[Evidence]] = {}
    for inst in image.instances:
        clear = not inst.crowd and inst.area >= options.min_area
        found.setdefault(inst.category, []).append(Evidence(YES if clear else UNCLEAR, inst.box))
    for category in image.incomplete:  # more of it may be anywhere
        found.setdefault(category, []).append(Evidence(UNCLEAR, None))
    return found


def _unknown(image: AnnotatedImage, category: str, found: dict[str, list[Evidence]]) -> list[Evidence]:
    """The evidence of a category, with "it may be there" where a federated file does not say it is absent."""
    have = found.get(category, [])
    if not have and image.absent is not None and category not in image.absent:
        return [Evidence(UNCLEAR, None)]
    return have


def within(v: float, lo: float, hi: float, margin: float) -> int:
    """Whether a coordinate lies in [lo, hi], `margin` from its edges (0 and 1 are the image's, no edge)."""
    if (lo <= 0 or v >= lo + margin) and (hi >= 1 or v <= hi - margin):
        return YES
    if (lo > 0 and v <= lo - margin) or (hi < 1 and v >= hi + margin):
        return NO
    return UNCLEAR


def in_cell(centre: Point, position: str, margin: float) -> int:
    """Whether a centre lies in a position's cell of thirds."""
    (x0, x1), (y0, y1) = CELLS[position]
    return min(within(centre[0], x0, x1, margin), within(centre[1], y0, y1, margin))


def related(predicate: str, subject: Box, obj: Box, max_overlap: float) -> int:
    """Whether `subject` stands in `predicate` (left of, right of, above, below) to `obj` (module doc)."""
    axis = 0 if predicate in ("left of", "right of") else 1
    sign = 1 if predicate in ("left of", "above") else -1
    lo, hi = axis, axis + 2
    # > 0: the subject's centre is on the said side of the object's (irs.spatial.relation_fit's dx, dy)
    d = sign * ((obj[lo] + obj[hi]) - (subject[lo] + subject[hi])) / 2
    if d <= 0:
        return NO
    if d >= CLEAR_GAP and overlap(subject, obj, axis) <= max_overlap:
        return YES
    return UNCLEAR


def overlap(a: Box, b: Box, axis: int) -> float:
    """How much two boxes overlap along an axis (0: x, 1: y), as a share of the narrower one."""
    lo, hi = axis, axis + 2
    inter = max(0.0, min(a[hi], b[hi]) - max(a[lo], b[lo]))
    return inter / max(min(a[hi] - a[lo], b[hi] - b[lo]), 1e-9)


@dataclass(frozen=True)
class Statement:
    """A query's meaning: `family` with subject `a`, and `where` (a position or a predicate) and object `b`."""

    family: str
    a: str
    where: str = ""
    b: str = ""

    @property
    def text(self) -> str:
        a, b = with_article(self.a), with_article(self.b) if self.b else ""
        if self.family == "absolute":
            return f"{a} {PLACE_WORDS[self.where]}"
        if self.family == "relation":
            return f"{a} {RELATION_WORDS[self.where]} {b}"
        if self.family == "two_objects":
            return f"{a} and {b}"
        return a

    def parses_as_meant(self) -> bool:
        """Does irs's parser read the text as this statement (a category name may hold a place or a relation)?"""
        parsed = parse_query(self.text)
        want = [Phrase(with_article(self.a), self.where if self.family == "absolute" else None)]
        if self.b:
            want.append(Phrase(with_article(self.b)))
        relations = (Relation(0, self.where, 1),) if self.family == "relation" else ()
        got = [Phrase(_words(p.text), p.position, p.weight) for p in parsed.phrases]
        expected = [Phrase(_words(p.text), p.position) for p in want]
        return got == expected and parsed.relations == relations and not parsed.negatives

    def judge(
        self, image: AnnotatedImage, found: dict[str, list[Evidence]], options: PositionalOptions
    ) -> tuple[int, list[Box]]:
        """YES, UNCLEAR or NO in one image (`found`: its evidence), and the boxes of the subject instances that
        make it hold."""
        subjects = _unknown(image, self.a, found)
        objects = _unknown(image, self.b, found) if self.b else []
        if self.family == "relation":
            per_subject = [max((self._pair(s, o, options) for o in objects), default=NO) for s in subjects]
        elif self.family == "absolute":
            per_subject = [
                min(s.clarity, UNCLEAR if s.box is None else in_cell(s.centre, self.where, options.margin))
                for s in subjects
            ]
        elif self.family == "two_objects":
            other = max((o.clarity for o in objects), default=NO)
            per_subject = [min(s.clarity, other) for s in subjects]
        else:
            per_subject = [s.clarity for s in subjects]
        boxes = [s.box for s, t in zip(subjects, per_subject) if t == YES and s.box is not None]
        return max(per_subject, default=NO), boxes

    def _pair(self, s: Evidence, o: Evidence, options: PositionalOptions) -> int:
        if s.box is None or o.box is None:
            return min(s.clarity, o.clarity, UNCLEAR)
        return min(s.clarity, o.clarity, related(self.where, s.box, o.box, options.max_overlap))


def _words(text: str) -> str:
    """Text compared word by word (the parser keeps only word characters, hyphens and apostrophes)."""
    return " ".join(re.sub(r"[^\w'-]+", " ", text.lower()).split())


# ---- generating queries ----------------------------------------------------------------------------


def positional_queries(
    data: InstanceFile, options: PositionalOptions | None = None, images: Iterable[str] | None = None
) -> tuple[list[EvalQuery], PositionalReport]:
    """Up to `per_family` queries per family with their relevant, ignored and region entries, drawn at random
    (`seed`) from the statements that clearly hold in at least one image; `images` (file names) restricts the
    images considered (those indexed). Deterministic for a file, options and image set."""
    options = options or PositionalOptions()
    keep = None if images is None else set(images)
    considered = [img for img in data.images if keep is None or img.file_name in keep]
    found = [_evidence(img, options) for img in considered]
    report = PositionalReport(
        data.path,
        len(considered),
        len({i.category for img in considered for i in img.instances}),
        sum(len(img.instances) for img in considered),
        federated=any(img.absent is not None for img in considered),
    )
    candidates = _candidates(considered, options, report)
    # images each category may be in: where it is annotated, and in a federated file wherever not ruled out
    by_category: dict[str, set[int]] = {}
    for n, evidence in enumerate(found):
        for category in evidence:
            by_category.setdefault(category, set()).add(n)
    open_ended = {n for n, img in enumerate(considered) if img.absent is not None}

    limit = max(1, int(options.max_share * len(considered)))
    rng = np.random.default_rng(options.seed)
    queries: list[EvalQuery] = []
    for family in FAMILIES:
        pool = sorted(candidates[family], key=lambda s: (s.a, s.where, s.b))
        made = 0
        for pick in rng.permutation(len(pool)):
            if made >= options.per_family:
                break
            statement = pool[int(pick)]
            if not statement.parses_as_meant():
                report.misparsed += 1
                continue
            where = by_category.get(statement.a, set()) | open_ended
            if statement.b:
                where &= by_category.get(statement.b, set()) | open_ended
            relevant: dict[str, list[Box]] = {}
            ignored: set[str] = set()
            for n in sorted(where):
                truth, boxes = statement.judge(considered[n], found[n], options)
                if truth == YES:
                    relevant[considered[n].file_name] = boxes
                elif truth == UNCLEAR:
                    ignored.add(considered[n].file_name)
            if not relevant:  # a float at a threshold read two ways: nothing to score
                continue
            if len(relevant) > limit:
                report.too_common += 1
                continue
            queries.append(EvalQuery(statement.text, set(relevant), relevant, family, ignored))
            report.ignored += len(ignored)
            made += 1
        report.queries[family] = made
    return queries, report


def _candidates(
    images: list[AnnotatedImage], options: PositionalOptions, report: PositionalReport
) -> dict[str, set[Statement]]:
    """Every statement that clearly holds in some image, by family; counts what is set aside on the way."""
    out: dict[str, set[Statement]] = {family: set() for family in FAMILIES}
    edges = (1 / 3, 2 / 3)
    for img in images:
        clear = []
        for inst in img.instances:
            if inst.crowd:
                report.crowd += 1
            elif inst.area < options.min_area:
                report.tiny += 1
            else:
                clear.append(inst)
        for inst in clear:
            x, y = inst.centre
            if any(abs(v - e) < options.margin for v in (x, y) for e in edges):
                report.near_edge += 1
            out["object"].add(Statement("object", inst.category))
            for position in POSITIONS:
                if in_cell(inst.centre, position, options.margin) == YES:
                    out["absolute"].add(Statement("absolute", inst.category, position))
        if len(clear) < 2:
            continue
        # every ordered pair of clear instances of different categories at once
        boxes = np.array([inst.box for inst in clear])
        cats = np.array([inst.category for inst in clear])
        differ = cats[:, None] != cats[None, :]
        for axis, predicates in ((0, ("left of", "right of")), (1, ("above", "below"))):
            lo, hi = boxes[:, axis], boxes[:, axis + 2]
            inter = np.maximum(0.0, np.minimum(hi[:, None], hi[None, :]) - np.maximum(lo[:, None], lo[None, :]))
            narrow = np.maximum(np.minimum((hi - lo)[:, None], (hi - lo)[None, :]), 1e-9)
            too_close = inter / narrow > options.max_overlap
            pairs = int(np.triu(too_close & differ, 1).sum())
            if axis == 0:
                report.overlap_x += pairs
            else:
                report.overlap_y += pairs
            centre = (lo + hi) / 2
            for predicate in predicates:
                sign = 1 if predicate in ("left of", "above") else -1
                d = sign * (centre[None, :] - centre[:, None])  # [s, o]: > 0 when s is on the said side of o
                holds = (d >= CLEAR_GAP) & ~too_close & differ
                for s, o in zip(*np.nonzero(holds)):
                    out["relation"].add(Statement("relation", str(cats[s]), predicate, str(cats[o])))
        names = sorted(set(cats.tolist()))
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                out["two_objects"].add(Statement("two_objects", a, "", b))
    return out
