"""Relevance judgments: kept per annotator, exported and imported without loss, bad files refused with
the line and field at fault, and the scores the Annotate page shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from irs.judgments import Judgment, Judgments, compare, judged_ap, precision_at


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Judgments]:
    judgments = Judgments(tmp_path / "db")
    yield judgments
    judgments.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Judgments]:
    judgments = Judgments(tmp_path / "other")
    yield judgments
    judgments.close()


SAMPLE = [
    Judgment("a red car", "aa11", "/photos/car.jpg", True, "ada", 1000.5, '{"weight_image": 0.5}'),
    Judgment("a red car", "bb22", "/photos/bus, red.jpg", False, "ada", 1001.25),
    Judgment('a "quoted"\nquery', "cc33", "", True, "bob", 1002.125),
]


def test_a_later_judgment_by_the_same_annotator_replaces_the_earlier(store: Judgments) -> None:
    store.record([Judgment("q", "aa11", "/a.jpg", True, "ada", 1.0)])
    store.record([Judgment("q", "aa11", "/a.jpg", False, "ada", 2.0)])
    assert store.for_query("q") == {"aa11": False}
    assert len(store.all()) == 1


def test_the_latest_annotator_wins_for_a_query(store: Judgments) -> None:
    store.record([Judgment("q", "aa11", "", True, "ada", 2.0), Judgment("q", "aa11", "", False, "bob", 1.0)])
    assert store.for_query("q") == {"aa11": True}
    assert len(store.all()) == 2  # both opinions are kept
    assert store.queries() == ["q"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_gives_the_same_judgments(store: Judgments, fresh: Judgments, fmt: str) -> None:
    assert store.record(SAMPLE) == 3
    text = store.export_csv() if fmt == "csv" else store.export_jsonl()
    assert fresh.import_text(text, fmt) == 3
    assert fresh.all() == store.all()
    assert set(fresh.all()) == set(SAMPLE)


def test_import_accepts_minimal_records(store: Judgments) -> None:
    text = "query,sha256,relevant\nq,aa11,TRUE\nq,bb22,0\n"
    assert store.import_text(text, "csv") == 2
    assert store.for_query("q") == {"aa11": True, "bb22": False}
    assert all(j.at > 0 and j.settings == "{}" for j in store.all())


def bad(store: Judgments, text: str, fmt: str) -> str:
    with pytest.raises(ValueError) as err:
        store.import_text(text, fmt)
    assert store.all() == []  # a bad file saves nothing, not its first good lines
    return str(err.value)


GOOD = {"query": "q", "sha256": "aa11", "relevant": True}


def jsonl(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


@pytest.mark.parametrize(
    "text, message",
    [
        (jsonl(GOOD, "{not json"), "line 2: not JSON"),
        (jsonl(GOOD, "5"), "line 2: not a JSON object"),
        (jsonl(GOOD, "", {"query": "q"}), "line 3: missing sha256, relevant"),  # blank lines still count
        (jsonl({**GOOD, "relevant": "maybe"}), "line 1: field 'relevant' is 'maybe'"),
        (jsonl({**GOOD, "relevant": 2}), "line 1: field 'relevant' is 2"),
        (jsonl({**GOOD, "relevant": [True]}), "line 1: field 'relevant'"),
        (jsonl(GOOD, {**GOOD, "at": "yesterday"}), "line 2: field 'at' is 'yesterday'"),
        (jsonl({**GOOD, "at": "nan"}), "line 1: field 'at' is 'nan'"),
    ],
)
def test_a_bad_jsonl_file_is_refused_naming_the_line_and_field(store: Judgments, text: str, message: str) -> None:
    assert message in bad(store, text, "jsonl")


@pytest.mark.parametrize(
    "text, message",
    [
        ("query,sha256,relevant\nq,aa11,true\nq,bb22\n", "line 3: missing relevant"),
        ("query,sha256,relevant\nq,aa11,yes\n", "line 2: field 'relevant' is 'yes'"),
        ("query,sha256,relevant,at\nq,aa11,true,noon\n", "line 2: field 'at' is 'noon'"),
        ("q,aa11,true\nq,bb22,false\n", "line 1: the header lacks query, sha256, relevant"),
    ],
)
def test_a_bad_csv_file_is_refused_naming_the_line_and_field(store: Judgments, text: str, message: str) -> None:
    assert message in bad(store, text, "csv")


def test_an_unknown_format_is_refused(store: Judgments) -> None:
    assert "csv or jsonl" in bad(store, "<judgments/>", "xml")


RANKED = ["a", "b", "c", "d"]
JUDGED = {"a": True, "b": False, "c": True, "x": True}  # x: relevant but never retrieved


def test_precision_counts_unjudged_as_not_relevant_and_divides_by_k() -> None:
    assert precision_at(RANKED, JUDGED, 1) == 1.0
    assert precision_at(RANKED, JUDGED, 2) == 0.5
    assert precision_at(RANKED, JUDGED, 4) == 0.5
    assert precision_at(RANKED, JUDGED, 10) == 0.2  # fewer results than k is not a better score
    assert precision_at(RANKED, {}, 4) == 0.0


def test_average_precision_on_a_known_ranking() -> None:
    assert judged_ap(RANKED, JUDGED) == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert judged_ap(["a", "c"], {"a": True, "c": True}) == 1.0
    assert judged_ap(["b", "a"], {"a": True, "b": False}) == 0.5
    assert judged_ap(RANKED, {"b": False}) == 0.0  # nothing relevant: 0, not a division error


def test_compare_scores_two_settings_on_every_judged_query(store: Judgments) -> None:
    store.record(
        [
            Judgment("cars", "a", "", True),
            Judgment("cars", "b", "", False),
            Judgment("dogs", "d", "", True),
        ]
    )
    rankings = {("cars", "A"): ["a", "b"], ("cars", "B"): ["b", "a"], ("dogs", "A"): ["c"], ("dogs", "B"): ["d"]}

    def search(query: str, settings: object) -> list[str]:
        return rankings[(query, settings)]

    rows = compare(search, store, "A", "B", 2)
    assert rows == [
        {"query": "cars", "judged": 2, "P@k A": 0.5, "P@k B": 0.5, "AP A": 1.0, "AP B": 0.5},
        {"query": "dogs", "judged": 1, "P@k A": 0.0, "P@k B": 0.5, "AP A": 0.0, "AP B": 1.0},
    ]
