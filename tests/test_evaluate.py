"""Metrics against hand-computed cases, and the loaders."""

import json

import pytest

from irs.evaluate import (
    EvalQuery,
    anchor,
    average_precision,
    drop_ambiguous,
    load_coco_captions,
    load_jsonl,
    load_karpathy,
    localized,
    ndcg_at,
    recall_at,
    score_queries,
)
from irs.records import Match, SearchResult, Segment


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
