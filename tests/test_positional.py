"""Positional queries generated from COCO-format boxes: relevance against synthetic scenes' cells and hand-checked
cases, the dropping rules, properties of every generated query, malformed files, and `irs eval --positional`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env
from hypothesis import example, given, settings
from hypothesis import strategies as st

from irs.benchmark import PLACE_WORDS as SCENE_PLACES
from irs.benchmark import RELATION_TESTS
from irs.evaluate import EvalQuery, load_jsonl
from irs.positional import (
    CELLS,
    CLEAR_GAP,
    FAMILIES,
    PLACE_WORDS,
    InstanceFileError,
    PositionalOptions,
    load_instances,
    noun,
    positional_queries,
    with_article,
)
from irs.query import parse_query
from irs.spatial import POSITIONS, position_fit, relation_fit
from irs.synthetic import Scene, make_scenes, write_folder

EVERYTHING = PositionalOptions(per_family=10_000, max_share=1.0)  # every statement that holds somewhere


def coco_from_scenes(scenes: list[Scene], side: int) -> dict:
    """A COCO instance file of synthetic scenes: one category per colour and shape ("red circle")."""
    categories: dict[str, int] = {}
    images, annotations = [], []
    for scene in scenes:
        images.append({"id": scene.index, "file_name": f"scene_{scene.index:05d}.png", "width": side, "height": side})
        for obj in scene.objects:
            cid = categories.setdefault(obj.name, len(categories) + 1)
            x0, y0, x1, y1 = obj.bbox
            bbox = [x0 * side, y0 * side, (x1 - x0) * side, (y1 - y0) * side]
            annotations.append({"id": len(annotations) + 1, "image_id": scene.index, "category_id": cid, "bbox": bbox})
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name} for name, cid in categories.items()],
    }


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def meaning(query: EvalQuery) -> tuple[str, str, str]:
    """(subject, position or predicate, object) read back from a generated query by the parser."""
    parsed = parse_query(query.text)
    names = [p.text.split(" ", 1)[1] for p in parsed.phrases]  # without the article
    if query.family == "relation":
        return names[0], parsed.relations[0].predicate, names[1]
    if query.family == "absolute":
        return names[0], parsed.phrases[0].position or "", ""
    return names[0], "", names[1] if len(names) > 1 else ""


# ---- synthetic scenes: the same answers as the spatial benchmark's cells -----------------------------


def test_relevance_on_synthetic_scenes_is_what_their_cells_say(tmp_path):
    scenes = make_scenes(40, seed=11, side=128)
    data = load_instances(write_json(tmp_path / "instances.json", coco_from_scenes(scenes, 128)))
    queries, report = positional_queries(data, EVERYTHING)
    assert {q.family for q in queries} == set(FAMILIES)
    # shapes sit well inside their cells: no centre is near an edge, nothing is crowd or tiny
    assert (report.crowd, report.tiny, report.near_edge, report.misparsed, report.too_common) == (0, 0, 0, 0, 0)
    scene_place = {position: SCENE_PLACES[words] for position, words in PLACE_WORDS.items()}  # the same words
    for q in queries:
        a, where, b = meaning(q)
        answers, unclear = set(), set()
        for s in scenes:
            subjects = [o for o in s.objects if o.name == a]
            objects = [o for o in s.objects if o.name == b]
            if q.family == "object":
                holds = bool(subjects)
            elif q.family == "absolute":
                holds = any(scene_place[where](o) for o in subjects)
            elif q.family == "two_objects":
                holds = bool(subjects and objects)
            else:
                holds = any(RELATION_TESTS[where](x, y) for x in subjects for y in objects)
                axis = "col" if where in ("left of", "right of") else "row"
                # the same column (row) is no clear "left of" ("above"): centres a few pixels apart
                if not holds and any(getattr(x, axis) == getattr(y, axis) for x in subjects for y in objects):
                    unclear.add(f"scene_{s.index:05d}.png")
            if holds:
                answers.add(f"scene_{s.index:05d}.png")
        assert q.relevant == answers, q.text
        assert q.ignored <= unclear, q.text
        for name, boxes in q.regions.items():  # the subject's boxes, as drawn
            drawn = [o.bbox for o in scenes[int(name[6:11])].objects if o.name == a]
            assert all(any(box == pytest.approx(d) for d in drawn) for box in boxes), q.text


# ---- hand-checked cases and the dropping rules --------------------------------------------------------


def coco(images: dict[str, list[tuple[str, tuple[float, float, float, float], int]]], side: int = 100) -> dict:
    """A COCO file from {file name: [(category, (x0, y0, x1, y1) in 0..1, iscrowd)]}."""
    names = sorted({cat for objects in images.values() for cat, _, _ in objects})
    out = {
        "images": [{"id": i, "file_name": name, "width": side, "height": side} for i, name in enumerate(images)],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(names)],
        "annotations": [],
    }
    for i, objects in enumerate(images.values()):
        for cat, (x0, y0, x1, y1), crowd in objects:
            bbox = [x0 * side, y0 * side, (x1 - x0) * side, (y1 - y0) * side]
            out["annotations"].append(
                {"id": len(out["annotations"]) + 1, "image_id": i, "category_id": names.index(cat) + 1, "bbox": bbox}
                | ({"iscrowd": 1} if crowd else {})
            )
    return out


HAND = {
    "left.jpg": [("dog", (0.05, 0.40, 0.25, 0.60), 0), ("frisbee", (0.70, 0.40, 0.90, 0.60), 0)],
    "near_edge.jpg": [("dog", (0.25, 0.40, 0.45, 0.60), 0)],  # centre x 0.35: within 0.05 of the third
    "crowd.jpg": [("dog", (0.0, 0.0, 0.3, 0.3), 1)],
    "tiny.jpg": [("dog", (0.10, 0.10, 0.15, 0.15), 0)],  # 0.25% of the image
    "right.jpg": [("dog", (0.70, 0.70, 0.90, 0.90), 0), ("frisbee", (0.05, 0.05, 0.25, 0.25), 0)],
    "overlap.jpg": [("dog", (0.20, 0.20, 0.60, 0.60), 0), ("frisbee", (0.30, 0.70, 0.70, 0.90), 0)],
    "cat.jpg": [("cat", (0.4, 0.4, 0.6, 0.6), 0)],
}


@pytest.fixture
def hand(tmp_path) -> tuple[dict[str, EvalQuery], object]:
    data = load_instances(write_json(tmp_path / "hand.json", coco(HAND)))
    queries, report = positional_queries(data, EVERYTHING)
    return {q.text: q for q in queries}, report


def test_hand_checked_relevance_ignored_and_regions(hand):
    queries, report = hand
    dog = queries["a dog"]
    assert dog.relevant == {"left.jpg", "near_edge.jpg", "right.jpg", "overlap.jpg"}
    assert dog.ignored == {"crowd.jpg", "tiny.jpg"}  # a crowd region or a tiny box is not clear either way
    left = queries["a dog on the left"]
    assert left.relevant == {"left.jpg"} and left.regions == {"left.jpg": [(0.05, 0.4, 0.25, 0.6)]}
    assert left.ignored == {"near_edge.jpg", "crowd.jpg", "tiny.jpg"}  # overlap.jpg's dog (x 0.4) is clearly not
    assert queries["a dog in the bottom right"].relevant == {"right.jpg"}
    centre = queries["a dog in the centre"]  # overlap.jpg's dog at (0.4, 0.4); near_edge.jpg's x 0.35 is unclear
    assert centre.relevant == {"overlap.jpg"} and centre.ignored == {"near_edge.jpg"}
    # overlap.jpg: the dog's centre is 0.1 left of the frisbee's, but their boxes overlap by 0.3 of the narrower
    # 0.4 width (0.75 > 0.5): left of it is unclear; above it (0.4 apart, no vertical overlap) is clear
    relation = queries["a dog to the left of a frisbee"]
    assert relation.relevant == {"left.jpg"} and relation.ignored == {"overlap.jpg"}
    assert queries["a dog to the right of a frisbee"].relevant == {"right.jpg"}
    assert queries["a dog above a frisbee"].relevant == {"overlap.jpg"}
    assert queries["a frisbee below a dog"].relevant == {"overlap.jpg"}
    assert queries["a dog and a frisbee"].relevant == {"left.jpg", "right.jpg", "overlap.jpg"}
    assert "a cat to the left of a dog" not in queries  # never together
    assert (report.crowd, report.tiny) == (1, 1)
    assert report.near_edge >= 1 and report.overlap_x >= 1
    assert report.ignored == sum(len(q.ignored) for q in queries.values())


def test_a_relation_whose_boxes_overlap_too_much_is_unclear(tmp_path):
    data = load_instances(
        write_json(
            tmp_path / "i.json",
            coco(
                {
                    "clear.jpg": [("dog", (0.0, 0.4, 0.2, 0.6), 0), ("cat", (0.6, 0.4, 0.8, 0.6), 0)],
                    # centres 0.15 apart (a clear "left of" by distance), boxes overlapping 0.85 of the dog's width
                    "riding.jpg": [("dog", (0.30, 0.2, 0.50, 0.4), 0), ("cat", (0.33, 0.5, 0.77, 0.9), 0)],
                    "above.jpg": [("dog", (0.4, 0.0, 0.6, 0.2), 0), ("cat", (0.42, 0.6, 0.62, 0.8), 0)],
                }
            ),
        )
    )
    queries = {q.text: q for q in positional_queries(data, EVERYTHING)[0]}
    q = queries["a dog to the left of a cat"]
    # above.jpg: the dog's centre only 0.02 left of the cat's, short of CLEAR_GAP: unclear too
    assert q.relevant == {"clear.jpg"} and q.ignored == {"riding.jpg", "above.jpg"}
    assert queries["a dog above a cat"].relevant == {"riding.jpg", "above.jpg"}


def test_queries_relevant_to_too_many_images_are_dropped_and_counted(tmp_path):
    images = {f"{i}.jpg": [("cat", (0.1, 0.1, 0.3, 0.3), 0)] for i in range(5)}
    images["dog.jpg"] = [("dog", (0.4, 0.4, 0.6, 0.6), 0)]
    data = load_instances(write_json(tmp_path / "i.json", coco(images)))
    queries, report = positional_queries(data, PositionalOptions(per_family=100, max_share=0.5))
    texts = {q.text for q in queries}
    assert "a cat" not in texts and "a cat in the top left" not in texts and "a dog" in texts
    assert report.too_common == 4  # a cat; on the left, at the top, in the top left


def test_a_category_name_the_parser_reads_otherwise_is_dropped(tmp_path):
    images = {"a.jpg": [("left shoe", (0.1, 0.1, 0.3, 0.3), 0), ("hat", (0.7, 0.7, 0.9, 0.9), 0)]}
    data = load_instances(write_json(tmp_path / "i.json", coco(images)))
    queries, report = positional_queries(data, EVERYTHING)
    texts = {q.text for q in queries}
    # "a left shoe" reads as a shoe on the left; "a left shoe in the top left" reads as meant and is kept
    assert "a left shoe" not in texts and "a left shoe and a hat" not in texts and report.misparsed >= 2
    assert "a left shoe in the top left" in texts and "a hat in the bottom right" in texts
    for q in queries:  # what is kept reads as meant: its objects are its categories
        names = {p.text.split(" ", 1)[1] for p in parse_query(q.text).phrases}
        assert names <= {"left shoe", "hat"}, q.text


def test_generation_is_deterministic_and_the_seed_chooses(tmp_path):
    data = load_instances(write_json(tmp_path / "i.json", coco_from_scenes(make_scenes(60, seed=2, side=96), 96)))
    options = PositionalOptions(per_family=4, seed=1, max_share=1.0)
    first, _ = positional_queries(data, options)
    again, _ = positional_queries(data, options)
    other, _ = positional_queries(data, PositionalOptions(per_family=4, seed=2, max_share=1.0))
    assert [q.text for q in first] == [q.text for q in again] and len(first) == 16
    assert [q.text for q in first] != [q.text for q in other]
    only = {"scene_00001.png", "scene_00002.png"}
    restricted, report = positional_queries(data, options, only)
    assert report.images == 2 and all(q.relevant | q.ignored <= only for q in restricted)


def test_options_out_of_range_are_refused():
    for bad, message in (
        ({"max_share": 0}, "max-share must be in (0, 1], got 0"),
        ({"per_family": -1}, "per-family must be >= 0"),
        ({"margin": 0.2}, "margin must be in [0, 0.167)"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            PositionalOptions(**bad)


def test_names_and_articles():
    assert noun("sports_ball") == "sports ball" and noun("bow_(weapon)") == "bow"
    assert noun("Cabinet/shelf") == "cabinet" and noun("  Traffic   Light ") == "traffic light"
    assert noun("(unnamed)") == "(unnamed)"  # nothing left once cleaned: kept as it is
    assert with_article("dog") == "a dog" and with_article("umbrella") == "an umbrella"
    assert with_article("skis") == "skis" and with_article("bus") == "a bus" and with_article("glass") == "a glass"


def test_a_federated_file_counts_a_category_as_absent_only_where_it_says_so(tmp_path):
    data = {
        "images": [
            {
                "id": 1,
                "coco_url": "http://images.cocodataset.org/val2017/1.jpg",
                "width": 100,
                "height": 100,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
            },
            {
                "id": 2,
                "coco_url": "http://images.cocodataset.org/val2017/2.jpg",
                "width": 100,
                "height": 100,
                "neg_category_ids": [1],
                "not_exhaustive_category_ids": [],
            },
            {
                "id": 3,
                "coco_url": "http://images.cocodataset.org/val2017/3.jpg",
                "width": 100,
                "height": 100,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
            },
            {
                "id": 4,
                "coco_url": "http://images.cocodataset.org/val2017/4.jpg",
                "width": 100,
                "height": 100,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [1],
            },
        ],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 40, 20, 20]},
            {"id": 2, "image_id": 3, "category_id": 2, "bbox": [40, 40, 20, 20]},
            {"id": 3, "image_id": 4, "category_id": 1, "bbox": [70, 40, 20, 20]},
        ],
    }
    loaded = load_instances(write_json(tmp_path / "lvis_v1_val.json", data))
    assert loaded.federated and [i.file_name for i in loaded.images] == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    queries = {q.text: q for q in positional_queries(loaded, EVERYTHING)[0]}
    dog = queries["a dog on the left"]
    # 2.jpg says it has no dog; 3.jpg does not say (a dog may be anywhere); 4.jpg's dogs may not all be annotated
    assert dog.relevant == {"1.jpg"} and dog.ignored == {"3.jpg", "4.jpg"}
    assert queries["a dog"].relevant == {"1.jpg", "4.jpg"} and queries["a dog"].ignored == {"3.jpg"}


# ---- malformed files ---------------------------------------------------------------------------------

GOOD = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 30, 40]}],
    "categories": [{"id": 7, "name": "dog"}],
}


def broken(change: str) -> dict:
    data = json.loads(json.dumps(GOOD))
    if change == "no images":
        del data["images"]
    elif change == "bbox of 3":
        data["annotations"][0]["bbox"] = [1, 2, 3]
    elif change == "negative width":
        data["annotations"][0]["bbox"] = [1, 2, -3, 4]
    elif change == "zero width":
        data["images"][0]["width"] = 0
    elif change == "no file name":
        del data["images"][0]["file_name"]
    elif change == "unknown category":
        data["annotations"][0]["category_id"] = 8
    elif change == "unknown image":
        data["annotations"][0]["image_id"] = 2
    elif change == "crowd 2":
        data["annotations"][0]["iscrowd"] = 2
    elif change == "no name":
        data["categories"][0]["name"] = ""
    elif change == "duplicate image":
        data["images"].append(dict(data["images"][0], file_name="b.jpg"))
    elif change == "annotations not a list":
        data["annotations"] = {"1": {}}
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        ("no images", "images: missing"),
        ("bbox of 3", "annotations[0].bbox: expected [x, y, width, height] as 4 numbers, got [1, 2, 3]"),
        ("negative width", "annotations[0].bbox: width and height must be >= 0"),
        ("zero width", "images[0].width: expected a number > 0, got 0"),
        ("no file name", "images[0].file_name: missing"),
        ("unknown category", "annotations[0].category_id: no category has id 8"),
        ("unknown image", "annotations[0].image_id: no image has id 2"),
        ("crowd 2", "annotations[0].iscrowd: expected 0 or 1, got 2"),
        ("no name", "categories[0].name: expected a non-empty string"),
        ("duplicate image", "images[1].id: 1 appears twice"),
        ("annotations not a list", "annotations: expected a list, got dict"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_field(tmp_path, change, message):
    path = write_json(tmp_path / "instances.json", broken(change))
    with pytest.raises(InstanceFileError) as err:
        load_instances(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_a_good_file_loads_and_not_json_is_refused(tmp_path):
    data = load_instances(write_json(tmp_path / "ok.json", GOOD))
    assert data.images[0].instances[0].box == pytest.approx((0.01, 0.025, 0.31, 0.525))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InstanceFileError, match="bad.json: not JSON"):
        load_instances(tmp_path / "bad.json")


# ---- properties of every generated query ------------------------------------------------------------

MARGIN = PositionalOptions().margin
CATS = ("dog", "cat")


# centres often near the thirds' edges, objects often just beside the one before (offsets around the relation
# thresholds), boxes often thin or flat (so close pairs can overlap little): the margins and thresholds are tried
NEAR = st.sampled_from([0.1, 0.25, 0.3, 1 / 3, 0.36, 0.4, 0.45, 0.5, 0.52, 0.55, 0.6, 0.64, 0.7, 0.9])
COORDS = st.one_of(NEAR, st.floats(0, 1))
OFFSETS = st.sampled_from([-0.12, -0.1, -0.07, -0.05, -0.02, 0.0, 0.02, 0.05, 0.08, 0.1, 0.11, 0.3])
SHAPES = st.sampled_from([(0.0, 0.0), (0.02, 0.2), (0.2, 0.02), (0.03, 0.3), (0.3, 0.03), (0.05, 0.05), (0.1, 0.1)])
HALVES = st.one_of(SHAPES, SHAPES, st.tuples(st.floats(0, 0.3), st.floats(0, 0.3)))


@st.composite
def datasets(draw: st.DrawFn) -> dict:
    images = {}
    for i in range(draw(st.integers(1, 8))):
        objects: list = []
        cx, cy = 0.5, 0.5
        for _ in range(draw(st.integers(0, 4))):
            if objects and draw(st.booleans()):  # beside the one before
                cx, cy = min(1.0, max(0.0, cx + draw(OFFSETS))), min(1.0, max(0.0, cy + draw(OFFSETS)))
            else:
                cx, cy = draw(COORDS), draw(COORDS)
            hw, hh = draw(HALVES)
            box = (max(0.0, cx - hw), max(0.0, cy - hh), min(1.0, cx + hw), min(1.0, cy + hh))
            objects.append((draw(st.sampled_from(CATS)), box, int(draw(st.integers(0, 5)) == 0)))
        images[f"{i}.jpg"] = objects
    return images


def _inside(v: float, lo: float, hi: float, m: float) -> bool:
    return (lo == 0 or v >= lo + m) and (hi == 1 or v <= hi - m)


def _outside(v: float, lo: float, hi: float, m: float) -> bool:
    return (lo > 0 and v <= lo - m) or (hi < 1 and v >= hi + m)


def _clear(box: tuple, crowd: int) -> bool:
    return not crowd and (box[2] - box[0]) * (box[3] - box[1]) >= 0.01 - 1e-9


def _centre(box: tuple) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _apart(s: tuple, o: tuple, predicate: str) -> bool:
    """Overlapping at most half the narrower box along the predicate's axis."""
    lo, hi = (0, 2) if predicate in ("left of", "right of") else (1, 3)
    inter = max(0.0, min(s[hi], o[hi]) - max(s[lo], o[lo]))
    return inter <= 0.5 * min(s[hi] - s[lo], o[hi] - o[lo]) + 1e-9


# pinned: a pair 0.05 apart (spatial's midpoint: unclear) beside a pair 0.4 apart; a dog 0.02 past a third's edge
THRESHOLDS = {
    "far.jpg": [("dog", (0.08, 0.3, 0.12, 0.7), 0), ("cat", (0.48, 0.3, 0.52, 0.7), 0)],
    "close.jpg": [("dog", (0.43, 0.3, 0.47, 0.7), 0), ("cat", (0.48, 0.3, 0.52, 0.7), 0)],
    "edge.jpg": [("dog", (0.25, 0.1, 0.45, 0.3), 0)],
}


@settings(max_examples=300, deadline=None)
@given(datasets())
@example(THRESHOLDS)
def test_every_generated_query_is_true_where_relevant_and_clearly_false_where_not(tmp_path_factory, images):
    path = write_json(tmp_path_factory.mktemp("h") / "i.json", coco(images))
    queries, _ = positional_queries(load_instances(path), EVERYTHING)
    m = MARGIN - 1e-9  # boxes went through pixels and back
    for q in queries:
        a, where, b = meaning(q)
        assert q.relevant and not q.relevant & q.ignored
        for name, objects in images.items():
            subj = [(box, crowd) for cat, box, crowd in objects if cat == a]
            obj = [(box, crowd) for cat, box, crowd in objects if cat == b]
            relevant, unclear = name in q.relevant, name in q.ignored
            if q.family == "absolute":
                (x0, x1), (y0, y1) = CELLS[where]
                centres = [_centre(box) for box, crowd in subj if _clear(box, crowd)]
                inside = [(x, y) for x, y in centres if _inside(x, x0, x1, m) and _inside(y, y0, y1, m)]
                if relevant:  # such an instance really is in that cell, and irs.spatial agrees
                    assert inside, (q.text, name)
                    if where in ("left", "right", "top", "bottom"):
                        assert max(float(position_fit(where, c)) for c in inside) > 0.77
                elif not unclear:  # every instance, crowd and tiny ones too, clearly out of it
                    for box, _ in subj:
                        x, y = _centre(box)
                        assert _outside(x, x0, x1, m) or _outside(y, y0, y1, m), (q.text, name)
                        if where in ("left", "right", "top", "bottom"):
                            assert float(position_fit(where, (x, y))) < 0.23
            elif q.family == "relation":
                fits = [
                    (
                        float(relation_fit(where, s, _centre(s), o, _centre(o))),
                        _clear(s, sc) and _clear(o, oc) and _apart(s, o, where),
                    )
                    for s, sc in subj
                    for o, oc in obj
                ]
                if relevant:  # a clear pair far enough apart, as irs.spatial scores it: fit 0.99 or more
                    assert any(fit > 0.99 and ok for fit, ok in fits), (q.text, name)
                elif not unclear:  # every pair clearly not: the subject is not on that side at all
                    assert all(fit <= 0.5 for fit, _ in fits), (q.text, name)
            else:
                if relevant:
                    assert any(_clear(*s) for s in subj) and (not b or any(_clear(*o) for o in obj))
                elif not unclear:
                    assert not subj or (b and not obj)
        for name, boxes in q.regions.items():
            assert name in q.relevant and boxes and all(0 <= v <= 1 for box in boxes for v in box)


def test_relation_thresholds_match_spatials_fit():
    # the docs and the property above: a clear relation scores 0.99 or more, a false one at most 0.5
    assert relation_fit("left of", (0, 0, 0.1, 0.1), (0.05, 0.5), (0, 0, 0.1, 0.1), (0.05 + CLEAR_GAP, 0.5)) >= 0.99
    assert relation_fit("left of", (0, 0, 0.1, 0.1), (0.5, 0.5), (0, 0, 0.1, 0.1), (0.5, 0.5)) == 0.5
    assert set(PLACE_WORDS) == set(CELLS) == set(POSITIONS)


# ---- the command line ---------------------------------------------------------------------------------


def irs(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "irs", *args], cwd=REPO, env=cli_env(**env), capture_output=True, text=True, timeout=240
    )


def test_eval_positional_end_to_end(tmp_path):
    scenes = write_folder(tmp_path / "scenes", 6, seed=5, side=96)
    instances = write_json(tmp_path / "instances.json", coco_from_scenes(scenes, 96))
    saved, metrics = tmp_path / "q.jsonl", tmp_path / "m.json"
    out = irs(
        "--db", str(tmp_path / "db"), "eval", "--positional", str(instances), "--folder", str(tmp_path / "scenes"),
        "--per-family", "2", "--seed", "3", "--max-share", "0.5", "--json", str(metrics), "--save-queries", str(saved),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"positional queries from {instances}: 6 images" in out.stdout
    assert "queries: object 2, absolute 2, relation 2, two_objects 2" in out.stdout
    assert "8 queries, mode whole_image" in out.stdout and "8 queries, mode segments_positions" in out.stdout
    result = json.loads(metrics.read_text())
    assert list(result["segments_positions"]) == [*FAMILIES, "all"]
    assert result["segments_positions"]["all"]["n"] == 8.0
    again = load_jsonl(saved)
    assert len(again) == 8 and all(q.relevant and q.regions for q in again)

    # a malformed file is refused before anything is indexed, naming the field
    bad = write_json(tmp_path / "bad.json", broken("bbox of 3"))
    out = irs("--db", str(tmp_path / "db2"), "eval", "--positional", str(bad), "--folder", str(tmp_path / "scenes"))
    assert out.returncode == 2 and f"irs: {bad}: annotations[0].bbox: expected" in out.stderr
    assert "Traceback" not in out.stderr and "embedded" not in out.stdout
    out = irs("--db", str(tmp_path / "db"), "eval")
    assert out.returncode == 2 and "one of the arguments queries --positional is required" in out.stderr


def test_images_not_indexed_are_left_out(tmp_path):
    scenes = write_folder(tmp_path / "scenes", 3, seed=5, side=64)
    data = coco_from_scenes(scenes, 64)
    data["images"].append({"id": 99, "file_name": "elsewhere/scene_00099.png", "width": 64, "height": 64})
    instances = write_json(tmp_path / "instances.json", data)
    db = str(tmp_path / "db")
    assert irs("--db", db, "index", str(tmp_path / "scenes"), "--no-segments").returncode == 0
    out = irs("--db", db, "eval", "--positional", str(instances), "--modes", "whole_image", "--max-share", "1")
    assert out.returncode == 0, out.stderr
    assert "1 images of" in out.stderr and "are not indexed" in out.stderr and ": 3 images" in out.stdout
    out = irs(
        "--db",
        db,
        "eval",
        "--positional",
        str(write_json(tmp_path / "none.json", dict(data, images=data["images"][3:], annotations=[]))),
    )
    assert out.returncode == 2 and "none of the 1 images" in out.stderr
