"""The synthetic spatial benchmark: its queries' answers and its training captions checked against the
scenes' pixels, place and relation words, and a small end-to-end run with tiny models."""

import re

import numpy as np
import pytest

from irs.benchmark import (
    EVALUATION,
    FAMILIES,
    ORIGINAL,
    TRAINING,
    benchmark_queries,
    object_recall,
    objects_found,
    phrase,
    places_of,
    relations_between,
    spatial_benchmark,
    training_caption,
)
from irs.index import Index
from irs.query import parse_query
from irs.segment import MaskProposal, postprocess
from irs.synthetic import COLOURS, SHAPES, Scene, SceneObject, make_scenes, make_varied_scenes

# What the place and relation words mean, on (row, column) cells of the 3x3 grid: the specification the
# benchmark's answers are checked against, written here independently of irs.benchmark.
PLACES = {
    "on the left": lambda r, c: c == 0,
    "on the right": lambda r, c: c == 2,
    "at the top": lambda r, c: r == 0,
    "at the bottom": lambda r, c: r == 2,
    "in the centre": lambda r, c: (r, c) == (1, 1),
    "in the top left": lambda r, c: (r, c) == (0, 0),
    "in the top right": lambda r, c: (r, c) == (0, 2),
    "in the bottom left": lambda r, c: (r, c) == (2, 0),
    "in the bottom right": lambda r, c: (r, c) == (2, 2),
}
RELATIONS = {
    "left of": lambda a, b: a[1] < b[1],
    "right of": lambda a, b: a[1] > b[1],
    "above": lambda a, b: a[0] < b[0],
    "below": lambda a, b: a[0] > b[0],
}
NAME = rf"an? (?:(?P<{{g}}size>small|large) )?(?P<{{g}}colour>{'|'.join(COLOURS)}) (?P<{{g}}shape>{'|'.join(SHAPES)})"
PLACE = "|".join(PLACES)
RELATION = "|".join(RELATIONS)
PATTERNS = {  # a query or caption's shape -> its regular expression
    "attribute": NAME.format(g="a"),
    "absolute": NAME.format(g="a") + f" (?P<place>{PLACE})",
    "relation": NAME.format(g="a") + f" (?P<relation>{RELATION}) " + NAME.format(g="b"),
    "two_objects": NAME.format(g="a") + " and " + NAME.format(g="b"),
}


def cell(obj: SceneObject) -> tuple[int, int]:
    """The grid cell of the object's visible pixels, from the mask rather than its labels."""
    x, y = obj.centroid
    return min(int(y * 3), 2), min(int(x * 3), 2)


def named(scene, match: re.Match, g: str) -> list[SceneObject]:
    """The objects in the scene that the named phrase `g` ("a" or "b") can stand for."""
    return [
        o
        for o in scene.objects
        if o.mask.any()
        and (o.colour, o.shape) == (match[f"{g}colour"], match[f"{g}shape"])
        and match[f"{g}size"] in (None, o.size)
    ]


def parse(family: str, text: str) -> re.Match:
    match = re.fullmatch(PATTERNS[family], text)
    assert match, f"{family} query {text!r} is not in that family's phrasing"
    return match


def holders(scene, family: str, match: re.Match) -> list[SceneObject]:
    """The objects in the scene that make the query true as the query's first object."""
    out = []
    for x in named(scene, match, "a"):
        others = [y for y in named(scene, match, "b") if y is not x] if family in ("relation", "two_objects") else []
        if family == "attribute":
            out.append(x)
        elif family == "absolute" and PLACES[match["place"]](*cell(x)):
            out.append(x)
        elif family == "relation" and any(RELATIONS[match["relation"]](cell(x), cell(y)) for y in others):
            out.append(x)
        elif family == "two_objects" and others:
            out.append(x)
    return out


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(80, seed=11, side=128)


@pytest.fixture(scope="module")
def queries(scenes):
    return benchmark_queries(scenes, per_family=10, seed=12, max_relevant=0.1)


def test_every_family_gets_distinct_queries_in_its_own_phrasing(queries):
    assert [q.family for q in queries] == [f for f in FAMILIES for _ in range(10)]
    assert len({q.text for q in queries}) == len(queries)
    for q in queries:
        match = parse(q.family, q.text)
        assert match["asize"] is None and match.groupdict().get("bsize") is None  # queries never give a size
        if q.family in ("relation", "two_objects"):
            assert (match["acolour"], match["ashape"]) != (match["bcolour"], match["bshape"])


def test_answers_are_exactly_the_scenes_with_the_named_objects_in_the_named_places(scenes, queries):
    for q in queries:
        match = parse(q.family, q.text)
        truth = {s.index: holders(s, q.family, match) for s in scenes}
        assert set(q.relevant) == {i for i, objs in truth.items() if objs}, q.text
        for i, boxes in q.relevant.items():
            # the regions are those of the query's first object, wherever it makes the query true
            assert sorted(boxes) == sorted(o.bbox for o in truth[i]), q.text


def test_queries_are_rare_enough_and_answerable(scenes, queries):
    assert all(1 <= len(q.relevant) <= 0.1 * len(scenes) for q in queries)


def test_queries_and_captions_are_the_same_for_the_same_seed(scenes, queries):
    again = benchmark_queries(make_scenes(80, seed=11, side=128), per_family=10, seed=12, max_relevant=0.1)
    assert [(q.family, q.text, q.relevant) for q in again] == [(q.family, q.text, q.relevant) for q in queries]
    other = benchmark_queries(scenes, per_family=10, seed=13, max_relevant=0.1)
    assert [q.text for q in other] != [q.text for q in queries]
    first = [training_caption(s, np.random.default_rng(1)) for s in scenes]
    assert [training_caption(s, np.random.default_rng(1)) for s in scenes] == first


def _worded(phrasing, caption: str) -> tuple[str, re.Match, str] | None:
    """(family, match, canonical place or predicate) of a caption in one of `phrasing`'s templates."""
    a, b = NAME.format(g="a"), NAME.format(g="b")
    shapes = [("attribute", re.escape(t).replace(re.escape("{a}"), a), "") for t in phrasing.attribute]
    shapes += [("absolute", f"{a} {re.escape(w)}", p) for p, ws in phrasing.places.items() for w in ws]
    shapes += [("relation", f"{a} {re.escape(w)} {b}", r) for r, ws in phrasing.relations.items() for w in ws]
    shapes += [
        ("two_objects", re.escape(t).replace(re.escape("{a}"), a).replace(re.escape("{b}"), b), "")
        for t in phrasing.two_objects
    ]
    for family, pattern, fact in shapes:
        match = re.fullmatch(pattern, caption)
        if match:
            return family, match, fact
    return None


CANONICAL = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
CANONICAL |= {"centre": "in the centre"} | {
    c: f"in the {c}" for c in ("top left", "top right", "bottom left", "bottom right")
}


def test_training_captions_are_true_of_their_scene_and_cover_every_phrasing(scenes):
    rng = np.random.default_rng(4)
    kinds = set()
    for scene in scenes:
        for _ in range(5):
            caption = training_caption(scene, rng)
            if caption == scene.caption:
                kinds.add("description")
                continue
            worded = _worded(TRAINING, caption)
            assert worded, f"caption {caption!r} is in no training phrasing"
            family, match, fact = worded
            # the same fact, said in the original words, must hold in the scene's cells
            if family == "absolute":
                original = f"{NAME_OF(match, 'a')} {CANONICAL[fact]}"
            elif family == "relation":
                original = f"{NAME_OF(match, 'a')} {fact} {NAME_OF(match, 'b')}"
            elif family == "two_objects":
                original = f"{NAME_OF(match, 'a')} and {NAME_OF(match, 'b')}"
            else:
                original = NAME_OF(match, "a")
            assert holders(scene, family, re.fullmatch(PATTERNS[family], original)), (caption, scene.caption)
            kinds.add(family)
    assert kinds == {"description", *FAMILIES}


def NAME_OF(match: re.Match, g: str) -> str:  # noqa: N802 (reads like the NAME pattern it undoes)
    size = f"{match[g + 'size']} " if match[g + "size"] else ""
    colour = match[g + "colour"]
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {size}{colour} {match[g + 'shape']}"


def test_evaluation_wordings_are_never_trained_on_and_all_parse_as_meant():
    assert not TRAINING.templates() & EVALUATION.templates()
    assert ORIGINAL.templates() <= TRAINING.templates()
    for phrasing in (TRAINING, EVALUATION):
        for t in phrasing.attribute:
            assert parse_query(t.format(a="a red circle")).describe() == "object: a red circle", t
        for place, words in phrasing.places.items():
            for w in words:
                assert parse_query(f"a red circle {w}").describe() == f"object: a red circle · position: {place}", w
        for pred, words in phrasing.relations.items():
            for w in words:
                parsed = parse_query(f"a red circle {w} a blue square")
                assert [(p.text, p.position) for p in parsed.phrases] == [
                    ("a red circle", None),
                    ("a blue square", None),
                ]
                assert [r.predicate for r in parsed.relations] == [pred], w
        for t in phrasing.two_objects:
            parsed = parse_query(t.format(a="a red circle", b="a blue square"))
            assert [p.text for p in parsed.phrases] == ["a red circle", "a blue square"] and not parsed.relations, t


# the varied scenes' ground truth, written here independently: thirds of the image by the visible pixels'
# centroid, with a band of 0.04 either side of each third's edge too close to call; relations along their
# own axis, 0.08 apart at least
def _third(v: float) -> int | None:
    return None if min(abs(v - 1 / 3), abs(v - 2 / 3)) < 0.04 else min(int(v * 3), 2)


def test_varied_queries_are_true_clear_and_worded_for_evaluation():
    scenes = make_varied_scenes(120, seed=5)
    queries = benchmark_queries(scenes, per_family=8, seed=6, max_relevant=0.1, phrasing=EVALUATION, cells=False)
    assert {q.family for q in queries} == set(FAMILIES) and len(queries) >= 28
    for q in queries:
        family, match, fact = _worded(EVALUATION, q.text)
        assert family == q.family
        for scene in scenes:
            a = [o for o in scene.objects if (o.colour, o.shape) == (match["acolour"], match["ashape"])]
            b = [
                o
                for o in scene.objects
                if family in ("relation", "two_objects") and (o.colour, o.shape) == (match["bcolour"], match["bshape"])
            ]
            verdicts = []
            for x in a:
                cx, cy = _third(x.centroid[0]), _third(x.centroid[1])
                if family == "attribute":
                    verdicts.append(True)
                elif family == "two_objects":
                    verdicts.append(bool(b))
                elif family == "absolute":
                    want = {
                        "left": (0, None),
                        "right": (2, None),
                        "top": (None, 0),
                        "bottom": (None, 2),
                        "centre": (1, 1),
                        "top left": (0, 0),
                        "top right": (2, 0),
                        "bottom left": (0, 2),
                        "bottom right": (2, 2),
                    }[fact]
                    got = [(axis, w) for axis, w in zip((cx, cy), want) if w is not None]
                    verdicts.append(
                        None
                        if any(g is None for g, _ in got) and all(g in (None, w) for g, w in got)
                        else all(g == w for g, w in got)
                    )
                else:
                    axis = 0 if fact in ("left of", "right of") else 1
                    sign = 1 if fact in ("left of", "above") else -1
                    gaps = [sign * (y.centroid[axis] - x.centroid[axis]) for y in b]
                    verdicts.append(
                        True if any(g >= 0.08 for g in gaps) else None if any(abs(g) < 0.08 for g in gaps) else False
                    )
            if True in verdicts:
                assert scene.index in q.relevant, (q.text, scene.index)
                assert sorted(q.relevant[scene.index]) == sorted(x.bbox for x, v in zip(a, verdicts) if v)
            else:
                assert scene.index not in q.relevant, (q.text, scene.index)
                assert (scene.index in q.ignored) == (None in verdicts), (q.text, scene.index)  # too close to call
    again = benchmark_queries(make_varied_scenes(120, seed=5), 8, 6, 0.1, EVALUATION, cells=False)
    assert [(q.text, q.relevant, q.ignored) for q in again] == [(q.text, q.relevant, q.ignored) for q in queries]


def obj(row: str, col: str, colour: str = "red", shape: str = "circle", size: str = "small") -> SceneObject:
    return SceneObject(shape, colour, size, row, col, np.zeros((3, 3), bool), (0, 0, 0, 0), (0, 0))


def test_place_words_of_each_cell():
    assert places_of(obj("top", "left")) == ["left", "top", "top left"]
    assert places_of(obj("middle", "centre")) == ["centre"]
    assert places_of(obj("middle", "right")) == ["right"]
    assert places_of(obj("bottom", "centre")) == ["bottom"]


def test_relations_between_cells():
    assert relations_between(obj("top", "left"), obj("bottom", "right")) == ["left of", "above"]
    assert relations_between(obj("bottom", "right"), obj("top", "left")) == ["right of", "below"]
    assert relations_between(obj("middle", "left"), obj("middle", "centre")) == ["left of"]
    assert relations_between(obj("top", "centre"), obj("top", "centre")) == []


def test_phrase_adds_the_size_only_sometimes_and_only_with_a_generator():
    o = obj("top", "left", colour="orange", shape="star", size="large")
    assert phrase(o) == "an orange star"
    rng = np.random.default_rng(0)
    assert {phrase(o, rng) for _ in range(50)} == {"an orange star", "a large orange star"}


def test_small_spatial_benchmark_end_to_end_with_tiny_models(tmp_path, test_settings):
    def index_for(name, oracle):
        return Index(test_settings.replace(db=str(tmp_path / f"db-{name}"), segmenter=name), segmenter=oracle)

    result = spatial_benchmark(
        index_for,
        tmp_path,
        gallery_size=12,
        per_family=2,
        seed=5,
        segmenters=["components", "oracle"],
        side=128,
        max_relevant=0.5,
        log=lambda _: None,
    )
    assert set(result["by_segmenter"]) == {"components", "oracle"}
    for modes in result["by_segmenter"].values():
        assert set(modes) == {"whole_image", "segments", "segments_positions"}
        for row in modes["segments_positions"].values():
            assert 0 <= row["r1"] <= row["r5"] <= 1
            assert 0 <= row["map"] <= 1
        assert all(row["loc_acc"] is None for row in modes["whole_image"].values())
    # the oracle's segments are exactly the scenes' visible objects
    objects = sum(o.mask.mean() >= test_settings.min_segment_area for s in make_scenes(12, 5, 128) for o in s.objects)
    assert result["counts"]["oracle"] == {"images": 12, "segments": objects}


def stored(masks: list[np.ndarray], mask_max_side: int = 256) -> list:
    """Segments as irs stores them, one per mask (no mask dropped)."""
    return postprocess([MaskProposal(m) for m in masks], 0.0, 1.0, len(masks) or 1, mask_max_side)


def test_object_recall_counts_an_object_found_at_mask_iou_half_or_more():
    scene = make_scenes(1, seed=3, side=128, max_objects=1)[0]
    obj = scene.objects[0].mask
    rows = np.flatnonzero(obj.any(axis=1))
    top = obj.copy()
    top[rows[len(rows) // 2] :] = False  # the upper part: IoU with the object is its share of the pixels
    iou = top.sum() / obj.sum()
    assert object_recall([scene], [stored([obj])]) == 1.0
    assert object_recall([scene], [stored([top])], min_iou=iou - 1e-6) == 1.0
    assert object_recall([scene], [stored([top])], min_iou=iou + 1e-6) == 0.0
    assert object_recall([scene], [stored([~obj])]) == 0.0  # the background around it is not the object
    assert object_recall([scene], [[]]) == 0.0


def test_object_recall_is_the_share_over_every_object_of_every_scene():
    scenes = [s for s in make_scenes(20, seed=4, side=128) if len(s.objects) >= 2][:3]
    segments = [stored([s.objects[0].mask]) for s in scenes]  # only each scene's first object
    objects = sum(len(s.objects) for s in scenes)
    assert object_recall(scenes, segments) == pytest.approx(3 / objects)
    assert objects_found(scenes[0], segments[0]) == [True] + [False] * (len(scenes[0].objects) - 1)
    with pytest.raises(ValueError):
        object_recall(scenes, segments[:2])


def test_object_recall_compares_at_the_stored_mask_size():
    scene = make_scenes(1, seed=6, side=256, max_objects=3)[0]
    segments = stored([o.mask for o in scene.objects], mask_max_side=64)  # stored at a quarter of the side
    assert {s.mask_shape for s in segments} == {(64, 64)}
    assert object_recall([scene], [segments]) == 1.0


def test_object_recall_leaves_out_objects_nothing_shows_and_is_nan_without_objects():
    scene = make_scenes(1, seed=3, side=128, max_objects=1)[0]
    nothing = np.zeros_like(scene.objects[0].mask)
    hidden = SceneObject("circle", "red", "small", "top", "left", nothing, (0, 0, 0, 0), (0, 0))
    both = Scene(0, scene.image, [scene.objects[0], hidden])
    assert object_recall([both], [stored([scene.objects[0].mask])]) == 1.0
    assert np.isnan(object_recall([Scene(0, scene.image, [])], [[]]))
