"""Metrics against hand-computed cases, the loaders, and the failure report (rows, text, and end to end on the
demo profile)."""

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, cli_env

from irs.evaluate import (
    MODES,
    EvalQuery,
    Explainer,
    Explanation,
    Failure,
    PhraseFits,
    QueryOutcome,
    SegmentFit,
    WorstQueries,
    anchor,
    average_precision,
    drop_ambiguous,
    find_failures,
    format_failures,
    load_coco_captions,
    load_jsonl,
    load_karpathy,
    localized,
    locate,
    ndcg_at,
    query_json,
    recall_at,
    score_queries,
)
from irs.records import Match, SearchResult, Segment
from irs.synthetic import write_folder


def test_recall_at_k():
    ranked = ["a", "b", "c", "d"]
    assert recall_at(ranked, {"c"}, 1) == 0.0
    assert recall_at(ranked, {"c"}, 3) == 1.0
    assert recall_at(ranked, {"z"}, 10) == 0.0


def test_average_precision_by_hand():
    # relevant at ranks 1 and 3 of 2 relevant: (1/1 + 2/3) / 2
    assert average_precision(["a", "x", "b", "y"], {"a", "b"}) == pytest.approx((1 + 2 / 3) / 2)
    # one of two relevant found at rank 2: (1/2) / 2
    assert average_precision(["x", "a", "y"], {"a", "b"}) == pytest.approx(0.25)
    # depth cuts the denominator: 3 relevant, depth 2, both top hits relevant -> 1.0
    assert average_precision(["a", "b", "c"], {"a", "b", "c"}, depth=2) == 1.0
    assert average_precision(["x"], set()) == 0.0


def test_ndcg_by_hand():
    import math

    # relevant at rank 2 only, one relevant: (1/log2(3)) / 1
    assert ndcg_at(["x", "a"], {"a"}) == pytest.approx(1 / math.log2(3))
    assert ndcg_at(["a", "b"], {"a", "b"}) == 1.0
    assert ndcg_at(["x", "y"], {"a"}) == 0.0


def result_with_box(box) -> SearchResult:
    seg = Segment(bbox=box, centroid=(0, 0), area=0.1, mask_rle=b"", mask_shape=(0, 0))
    return SearchResult("p.png", "sha", 1.0, {}, seg, matches=[Match("x", seg)])


def test_localization_uses_box_iou_of_the_first_phrase():
    assert localized(result_with_box((0, 0, 0.5, 0.5)), [(0, 0, 0.5, 0.6)])  # IoU 0.83
    assert not localized(result_with_box((0, 0, 0.5, 0.5)), [(0.25, 0.25, 0.75, 0.75)])  # IoU 1/7


def test_score_queries_averages_per_family_and_overall():
    answers = {"q1": ["a.png", "b.png"], "q2": ["x.png", "c.png"]}

    def search(text, k):
        return [SearchResult(f"/g/{name}", name, 1.0, {}, None) for name in answers[text]][:k]

    metrics = score_queries(search, [EvalQuery("q1", {"a.png"}, family="f1"), EvalQuery("q2", {"c.png"}, family="f2")])
    assert metrics["f1"]["r1"] == 1.0 and metrics["f2"]["r1"] == 0.0
    assert metrics["all"]["r1"] == 0.5 and metrics["all"]["r5"] == 1.0
    assert metrics["all"]["map"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["all"]["loc_acc"] is None  # no regions given


def test_jsonl_loader(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"query": "a red car", "relevant": ["img/1.jpg"], "regions": {"1.jpg": [[0, 0, 0.5, 0.5]]}})
        + "\n\n"
        + json.dumps({"query": "a dog", "relevant": ["2.jpg", "3.jpg"], "family": "animals"})
        + "\n"
    )
    q = load_jsonl(path)
    assert q[0].relevant == {"img/1.jpg"} and q[0].regions == {"1.jpg": [(0, 0, 0.5, 0.5)]}
    assert q[1].family == "animals" and q[1].relevant == {"2.jpg", "3.jpg"}
    path.write_text('{"query": "no relevant field"}\n')
    with pytest.raises(ValueError, match="q.jsonl:1"):
        load_jsonl(path)


def test_coco_and_karpathy_loaders(tmp_path):
    coco = tmp_path / "captions_val2017.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "000001.jpg"}, {"id": 2, "file_name": "000002.jpg"}],
                "annotations": [
                    {"image_id": 1, "caption": "A cat. "},
                    {"image_id": 2, "caption": "A dog"},
                    {"image_id": 1, "caption": "A kitten"},
                ],
            }
        )
    )
    q = load_coco_captions(coco)
    assert [(x.text, x.relevant) for x in q] == [
        ("A cat.", {"000001.jpg"}),
        ("A dog", {"000002.jpg"}),
        ("A kitten", {"000001.jpg"}),
    ]
    karpathy = tmp_path / "dataset_flickr30k.json"
    karpathy.write_text(
        json.dumps(
            {
                "images": [
                    {"filename": "1.jpg", "split": "test", "sentences": [{"raw": "two dogs"}, {"raw": "dogs play"}]},
                    {"filename": "2.jpg", "split": "train", "sentences": [{"raw": "a horse"}]},
                ]
            }
        )
    )
    q = load_karpathy(karpathy)
    assert [(x.text, x.relevant) for x in q] == [("two dogs", {"1.jpg"}), ("dogs play", {"1.jpg"})]


def test_same_named_files_in_two_folders_are_told_apart_by_relative_path():
    # two folders each hold IMG_0001.JPG (different pictures); the query wants the one in trip/
    indexed = {"/p/trip/IMG_0001.JPG": "t1", "/p/home/IMG_0001.JPG": "h1", "/p/home/IMG_0002.JPG": "h2"}
    answers = [SearchResult(path, sha, 1.0, {}, None, paths=[path]) for path, sha in indexed.items()]
    home_first = [answers[1], answers[0], answers[2]]

    def search(text, k):
        return home_first[:k]

    queries = [EvalQuery("beach", {"trip/IMG_0001.JPG"}), EvalQuery("sofa", {"IMG_0002.JPG"})]
    kept, ambiguous = drop_ambiguous(queries, indexed)
    assert ambiguous == [] and kept == queries
    metrics = score_queries(search, kept)["all"]
    # beach: trip's picture is 2nd (not 1st, as a bare-name match would say); sofa: the unique name, 3rd
    assert metrics["r1"] == 0.0 and metrics["map"] == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-4)


def test_a_bare_name_that_several_indexed_images_have_is_not_counted():
    indexed = {"/p/trip/IMG_0001.JPG": "t1", "/p/home/IMG_0001.JPG": "h1", "/p/copy/IMG_0002.JPG": "c"}
    indexed["/p/home/IMG_0002.JPG"] = "c"  # the same bytes twice: one image, not ambiguous
    queries = [
        EvalQuery("beach", {"IMG_0001.JPG"}),
        EvalQuery("both", {"IMG_0001.JPG", "IMG_0002.JPG"}, regions={"IMG_0001.JPG": [(0, 0, 1, 1)]}),
    ]
    kept, ambiguous = drop_ambiguous(queries, indexed)
    assert ambiguous == ["IMG_0001.JPG"]
    assert [(q.text, q.relevant, q.regions) for q in kept] == [("both", {"IMG_0002.JPG"}, {})]


def test_names_relative_to_the_folder_given_are_that_folders_files():
    indexed = {"/p/trip/IMG_0001.JPG": "t1", "/p/home/IMG_0001.JPG": "h1"}
    queries = anchor([EvalQuery("beach", {"IMG_0001.JPG", "other.jpg"})], "/p/trip", indexed)
    kept, ambiguous = drop_ambiguous(queries, indexed)
    assert ambiguous == [] and kept[0].relevant == {"/p/trip/IMG_0001.JPG", "other.jpg"}


# ---- ignored images, locating entries, the JSONL round trip -----------------------------------------


def test_ignored_images_are_taken_out_of_the_ranking_before_scoring():
    ranked = [SearchResult(f"/g/{name}", name, 1.0, {}, None) for name in ("x.png", "u.png", "a.png", "y.png")]
    asked = []

    def search(text, k):
        asked.append(k)
        return ranked[:k]

    plain = score_queries(search, [EvalQuery("q", {"a.png"})], depth=3)["all"]
    assert plain["r1"] == 0.0 and plain["map"] == pytest.approx(1 / 3, abs=1e-4)
    ignoring = score_queries(search, [EvalQuery("q", {"a.png"}, ignored={"u.png", "x.png"})], depth=3)["all"]
    assert ignoring["r1"] == 1.0 and ignoring["map"] == 1.0
    assert asked == [3, 5]  # more results are asked for, so that `depth` remain once the ignored are out


def test_locate_follows_the_rules_of_anchor_and_drop_ambiguous():
    indexed = {"/p/trip/IMG_0001.JPG": "t1", "/p/home/IMG_0001.JPG": "h1", "/p/home/IMG_0002.JPG": "h2"}
    found = locate(["IMG_0001.JPG", "IMG_0002.JPG", "trip/IMG_0001.JPG", "nope.jpg"], indexed)
    assert found.found == {"IMG_0002.JPG": "h2", "trip/IMG_0001.JPG": "t1"}
    assert found.ambiguous == ["IMG_0001.JPG"] and found.missing == ["nope.jpg"]
    anchored = locate(["IMG_0001.JPG"], indexed, "/p/home")  # under --folder, a bare name is that folder's file
    assert anchored.found == {"IMG_0001.JPG": "h1"} and not anchored.ambiguous
    queries, ambiguous = drop_ambiguous([EvalQuery("q", {"IMG_0001.JPG"}, ignored={"IMG_0001.JPG"})], indexed)
    assert ambiguous == ["IMG_0001.JPG"] and queries == []


def test_jsonl_round_trip_with_ignored_images(tmp_path):
    query = EvalQuery("a dog on the left", {"a.jpg"}, {"a.jpg": [(0.1, 0.2, 0.3, 0.4)]}, "absolute", {"b.jpg"})
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(query_json(query)) + "\n")
    assert load_jsonl(path) == [query]
    assert anchor([query], "/p", {"/p/b.jpg": "b"})[0].ignored == {"/p/b.jpg"}


# ---- the failure report ------------------------------------------------------------------------------


def seg(index, box):
    return Segment(bbox=box, centroid=((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), area=0.1, mask_rle=b"",
                   mask_shape=(0, 0), index=index)  # fmt: skip


def outcome(text, ranks_of_relevant, order, ap=None, relevant=None):
    """A fake outcome: `ranks_of_relevant` is the first relevant rank (None: not found)."""
    query = EvalQuery(text, relevant or {"r.png"})
    row = {"map": ap if ap is not None else (1 / ranks_of_relevant if ranks_of_relevant else 0.0)}
    return QueryOutcome(query, row, [], ranks_of_relevant, order)


def test_worst_queries_keeps_the_lowest_ranked_relevant_images_ties_by_ap():
    worst = WorstQueries(3, depth=100)
    for item in [
        outcome("first", 1, 0),
        outcome("missing", None, 1),
        outcome("tenth", 10, 2),
        outcome("tenth, better AP", 10, 3, ap=0.5),
        outcome("tenth, worse AP", 10, 4, ap=0.01),
        outcome("second", 2, 5),
    ]:
        worst(item)
    assert [o.query.text for o in worst.worst()] == ["missing", "tenth, worse AP", "tenth"]
    few = WorstQueries(5)
    for item in (outcome("perfect", 1, 0), outcome("first of two", 1, 1, ap=0.75), outcome("second", 2, 2)):
        few(item)
    assert [o.query.text for o in few.worst()] == ["second", "first of two"]  # a perfect query is no failure


def test_failure_rows_and_their_text():
    wrong, right = seg(2, (0.6, 0.1, 0.9, 0.4)), seg(0, (0.05, 0.4, 0.25, 0.6))
    results = [
        SearchResult("/g/x.png", "x", 0.9, {"image": 0.2, "segment": 0.8}, wrong, ["/g/x.png"],
                     [Match("a red circle", wrong, {"similarity": 0.8, "position": 0.1}, 0.7)]),
        SearchResult("/g/r.png", "r", 0.4, {"image": 0.1, "segment": 0.4}, right, ["/g/r.png"],
                     [Match("a red circle", right, {"similarity": 0.4, "position": 0.9}, 0.3)]),
    ]  # fmt: skip
    query = EvalQuery("a red circle on the left", {"r.png"}, {"r.png": [(0.05, 0.4, 0.25, 0.62)]})
    best = PhraseFits("a red circle", "left", (SegmentFit(1, (0.0, 0.0, 1.0, 1.0), 0.5, 0.3),))
    explained = Explanation("r", 0.4, {}, (), (best,))
    calls = []

    def explain(text, sha):
        calls.append((text, sha))
        return explained

    ranked = QueryOutcome(query, {"map": 0.5}, results, 2, 0)
    [failure] = find_failures([ranked], "segments_positions", explain, {"/g/x.png": "x", "/g/r.png": "r"},
                              shown=lambda p: p.removeprefix("/g/"))  # fmt: skip
    assert calls == [("a red circle on the left", "r")]
    assert failure.parse == "object: a red circle · position: left" and failure.rank == 2
    assert [(r.path, r.relevant) for r in failure.top] == [("x.png", False), ("r.png", True)]
    rel = failure.relevant
    assert rel.path == "r.png" and rel.rank == 2 and rel.score == 0.4 and rel.phrases == (best,)
    assert rel.matches[0].segment == 0 and rel.matches[0].confidence == 0.3
    assert rel.regions == ((0.05, 0.4, 0.25, 0.62),) and rel.region_iou == pytest.approx(0.2 / 0.22 * 1, abs=0.1)
    text = format_failures([failure], 7)
    assert text.startswith("worst 1 of 7 queries, mode segments_positions")
    assert "1. 'a red circle on the left'" in text and "relevant image: rank 2" in text
    assert "parsed: object: a red circle · position: left" in text
    assert "1. x.png  0.9000  not relevant" in text and "2. r.png  0.4000  RELEVANT" in text
    assert "'a red circle' -> segment #2 box 0.60,0.10,0.90,0.40" in text
    assert "best for 'a red circle' (left): #1 box 0.00,0.00,1.00,1.00 sim 0.500 pos 0.30" in text
    assert "ground truth: 0.05,0.40,0.25,0.62" in text

    # not in the top `depth`: the relevant image is explained, not found; NaN confidences become null
    missing = QueryOutcome(query, {"map": 0.0}, results[:1], None, 1)
    [failure] = find_failures([missing], "segments", explain, {"/g/r.png": "r"}, depth=1)
    assert failure.rank is None and failure.relevant.path == "/g/r.png" and failure.relevant.rank is None
    assert "relevant image: not in the top 1" in format_failures([failure])
    out = failure.to_json()
    json.dumps(out, allow_nan=False)
    assert out["relevant"]["phrases"][0]["best"][0]["box"] == [0.0, 0.0, 1.0, 1.0]
    nothing = find_failures([missing], "segments", lambda text, sha: None, {"/g/r.png": "r"})
    assert nothing[0].relevant is None and "none of its relevant images is indexed" in format_failures(nothing)


def test_the_explainer_scores_as_the_search_does(index, scenes_folder):
    index.add_folder(scenes_folder)
    for mode in ("whole_image", "segments", "segments_positions"):
        settings = index.settings.replace(**MODES[mode])
        explain = Explainer(index.store, index.embedder, settings)
        for text in ("a red circle on the left", "a blue square left of a green star", "a cat -dog"):
            for result in index.search(text, 4, settings=settings):
                explained = explain(text, result.sha256)
                assert explained.score == pytest.approx(result.score, abs=1e-5), (mode, text)
                assert [m.segment for m in explained.matches] == [m.segment.index for m in result.matches]
                assert len(explained.phrases) == len(result.parsed.phrases)
                assert all(len(p.best) == min(3, len(index.segments_of(result.sha256))) for p in explained.phrases)
    assert explain("?!", result.sha256) is None  # nothing to search for

    # the README's example runs as written
    readme = (REPO / "README.md").read_text().split("\n### Which queries failed, and why\n", 1)[1]
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    queries = [EvalQuery("a red circle", {"scene_00001.png"}), EvalQuery("a blue star", {"scene_00002.png"})]
    printed = []
    scope = {"index": index, "s": index.settings, "queries": queries, "print": printed.append}
    exec(example, scope)
    assert len(scope["rows"]) <= 2 and all(isinstance(row, Failure) for row in scope["rows"])
    assert printed == [format_failures(scope["rows"], 2)]


# ---- end to end on the demo profile ------------------------------------------------------------------


def test_the_failure_report_names_the_query_with_a_misleading_relevant_image(tmp_path):
    """Six queries over eight scenes, one naming a scene that does not answer it (a yellow square, for "a green
    circle on the left"): the demo model finds the real one, so that query is the worst."""
    scenes = write_folder(tmp_path / "scenes", 8, seed=5, side=128)
    lines = []
    for index in (0, 1, 3, 4, 5, 7):
        obj = next(o for o in scenes[index].objects if o.name not in ("white diamond", "pink diamond", "pink circle"))
        name = f"scene_{index:05d}.png"
        lines.append({"query": f"{obj.a_name} {obj.place}", "relevant": [name], "regions": {name: [obj.bbox]}})
    assert lines[1]["query"] == "a green circle on the left"
    lines[1] |= {"relevant": ["scene_00003.png"], "regions": {"scene_00003.png": [[0.05, 0.3, 0.3, 0.6]]}}
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = subprocess.run(
        [sys.executable, "-m", "irs", "--db", str(tmp_path / "db"), "eval", str(queries), "--folder",
         str(tmp_path / "scenes"), "--modes", "segments_positions", "--failures", "2", "--failures-json",
         str(tmp_path / "f.json")],
        cwd=REPO, env=cli_env(IRS_PROFILE="demo"), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # only failed queries are listed (AP < 1): the misleading one, perhaps another
    report = re.split(r"worst [12] of 6 queries, mode segments_positions .*\n", out.stdout)[1]
    failures = json.loads((tmp_path / "f.json").read_text())
    first = failures[0]
    assert first["query"] == "a green circle on the left" and first["mode"] == "segments_positions"
    assert first["parse"] == "object: a green circle · position: left"
    rank = first["relevant"]["rank"]
    assert rank is not None and rank >= 2 and first["rank"] == rank
    assert report.lstrip().startswith(f"1. 'a green circle on the left'  family all · AP {first['ap']:.3f}")
    assert "parsed: object: a green circle · position: left" in report.split("\n2. ")[0]
    assert f"relevant: scene_00003.png  rank {rank}" in report
    # the scene that does have a green circle on the left comes first, matched there
    assert first["top"][0]["path"] == "scene_00001.png" and not first["top"][0]["relevant"]
    best = first["relevant"]["phrases"][0]
    assert best["phrase"] == "a green circle" and best["position"] == "left" and best["best"][0]["box"]
    assert first["relevant"]["regions"] == [[0.05, 0.3, 0.3, 0.6]]
    assert "ground truth: 0.05,0.30,0.30,0.60" in report
