"""Relevance judgments: kept per annotator, image and segment judged apart, old files upgraded in place,
exported and imported without loss (old exports too), bad files refused with the line and field at fault,
presets, the scores the Annotate page shows, and the fair (pooled) comparison of settings."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irs.evaluate import MODES
from irs.judgments import (
    Judgment,
    Judgments,
    JudgmentsError,
    Localisation,
    Rankings,
    SearchSettings,
    Shown,
    Verdict,
    awaits_segment,
    compare,
    judged_ap,
    localisation,
    precision_at,
    rank,
    score,
    settings_json,
)
from irs.records import SearchResult, Segment
from irs.settings import INDEX_FIELDS, load_settings


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
    Judgment("a red car", "aa11", "/photos/car.jpg", True, "ada", 1000.5, '{"weight_image": 0.5}', 3, True),
    Judgment("a red car", "dd44", "/photos/van.jpg", True, "ada", 1000.75, "{}", 0, False),
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
    assert store.record(SAMPLE) == 4
    text = store.export_csv() if fmt == "csv" else store.export_jsonl()
    assert fresh.import_text(text, fmt) == 4
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
        (jsonl({**GOOD, "segment": 1, "right_object": "maybe"}), "line 1: field 'right_object' is 'maybe'"),
        (jsonl({**GOOD, "segment": -1, "right_object": True}), "line 1: field 'segment' is -1"),
        (jsonl({**GOOD, "segment": 1.5, "right_object": True}), "line 1: field 'segment' is 1.5"),
        (jsonl({**GOOD, "right_object": True}), "line 1: field 'right_object' is set but 'segment' is missing"),
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
        ("query,sha256,relevant,segment,right_object\nq,aa11,true,x,true\n", "line 2: field 'segment' is 'x'"),
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


def test_an_image_judgment_keeps_the_segment_judgment_made_before(store: Judgments) -> None:
    store.record([Judgment("q", "aa11", "", True, "ada", 1.0, segment=2, right_object=False)])
    store.record([Judgment("q", "aa11", "", True, "bob", 2.0)])  # bob judged only the image
    assert store.verdicts("q") == {"aa11": Verdict(True, 2, False)}
    store.record([Judgment("q", "aa11", "", False, "bob", 3.0, segment=2, right_object=True)])
    assert store.verdicts("q") == {"aa11": Verdict(False, 2, True)}
    assert store.get("q", "aa11", "ada") == Judgment("q", "aa11", "", True, "ada", 1.0, "{}", 2, False)
    assert store.get("q", "aa11", "eve") is None


OLD_SCHEMA = (
    "CREATE TABLE judgments (query TEXT NOT NULL, sha256 TEXT NOT NULL, path TEXT, "
    "relevant INTEGER NOT NULL, annotator TEXT NOT NULL, at REAL NOT NULL, settings TEXT, "
    "PRIMARY KEY (query, sha256, annotator))"
)


def test_a_file_from_before_segment_judgments_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    old = sqlite3.connect(db / "judgments.sqlite")
    old.execute(OLD_SCHEMA)
    old.execute("INSERT INTO judgments VALUES ('q', 'aa11', '/a.jpg', 1, 'ada', 5.0, '{\"weight_image\": 0.5}')")
    old.commit()
    old.close()

    store = Judgments(db)
    assert store.all() == [Judgment("q", "aa11", "/a.jpg", True, "ada", 5.0, '{"weight_image": 0.5}')]
    store.record([Judgment("q", "bb22", "/b.jpg", True, "ada", 6.0, segment=1, right_object=True)])
    store.save_preset("mine", SearchSettings(0.1, 0.9, 0.5, 0.5, 0.5, 100, 400))
    store.close()

    store = Judgments(db)  # opening an upgraded file again changes nothing
    assert store.verdicts("q") == {"aa11": Verdict(True), "bb22": Verdict(True, 1, True)}
    assert "mine" in {p.name for p in store.presets(SearchSettings(0.5, 0.5, 0.5, 0.5, 0.5, 100, 400))}
    assert store.sql.execute("PRAGMA user_version").fetchone()[0] == 1
    store.close()


def test_a_file_from_a_newer_irs_is_refused(tmp_path: Path) -> None:
    Judgments(tmp_path).close()
    newer = sqlite3.connect(tmp_path / "judgments.sqlite")
    newer.execute("PRAGMA user_version = 99")
    newer.close()
    with pytest.raises(JudgmentsError, match="newer irs"):
        Judgments(tmp_path)


def test_an_export_from_before_segment_judgments_still_imports(store: Judgments) -> None:
    text = 'query,sha256,path,relevant,annotator,at,settings\nq,aa11,/a.jpg,True,ada,5.0,"{}"\n'
    assert store.import_text(text, "csv") == 1
    assert store.all() == [Judgment("q", "aa11", "/a.jpg", True, "ada", 5.0)]
    old_jsonl = jsonl({"query": "q", "sha256": "bb22", "relevant": False, "at": 6.0})
    assert store.import_text(old_jsonl, "jsonl") == 1
    assert store.verdicts("q")["bb22"] == Verdict(False)


def test_each_judgment_records_every_weight_pool_and_the_index(tmp_path: Path) -> None:
    shown = load_settings({"profile": "test", "db": str(tmp_path), "weight_image": 0.3, "segment_pool": 90}, environ={})
    recorded = json.loads(settings_json(shown))
    assert set(INDEX_FIELDS) | set(SearchSettings.__dataclass_fields__) == set(recorded)
    assert recorded["weight_image"] == 0.3 and recorded["segment_pool"] == 90
    assert SearchSettings.of(shown).apply(load_settings({"profile": "test"}, environ={})).weight_image == 0.3


BASE = SearchSettings(0.5, 0.5, 0.5, 0.5, 0.5, 100, 400)


def test_presets_are_the_built_in_modes_then_the_saved_ones(store: Judgments) -> None:
    builtin = store.presets(BASE)
    assert [p.name for p in builtin] == list(MODES) and all(p.builtin for p in builtin)
    assert builtin[0].settings == BASE.replace(**MODES["whole_image"])
    store.save_preset(" strict ", BASE.replace(weight_position=2.0))
    store.save_preset("strict", BASE.replace(weight_position=1.5))  # the same name again replaces it
    saved = store.presets(BASE)[len(MODES) :]
    assert [(p.name, p.settings.weight_position, p.builtin) for p in saved] == [("strict", 1.5, False)]
    for name in ("whole_image", "  "):
        with pytest.raises(ValueError):
            store.save_preset(name, BASE)
    store.sql.execute("INSERT INTO presets VALUES ('old', '{\"weight_image\": 0.9}', 0)")  # fields added later
    old = next(p for p in store.presets(BASE) if p.name == "old")
    assert old.settings == BASE.replace(weight_image=0.9)


# rankings made by hand: a result is an image (sha256) and the segment matched in it
def result(sha: str, segment: int | None = 0) -> SearchResult:
    matched = None
    if segment is not None:
        matched = Segment((0.0, 0.0, 1.0, 1.0), (0.5, 0.5), 1.0, b"", (1, 1), index=segment)
    return SearchResult(f"/{sha}.jpg", sha, 0.0, {}, matched)


def results(text: str) -> list[SearchResult]:
    """ "a b:2 c-" -> a (segment 0), b (segment 2), c (no segment)."""
    out = []
    for word in text.split():
        if word.endswith("-"):
            out.append(result(word[:-1], None))
        else:
            sha, _, segment = word.partition(":")
            out.append(result(sha, int(segment or 0)))
    return out


def test_localisation_counts_only_judged_segments_of_relevant_results() -> None:
    verdicts = {
        "a": Verdict(True, 0, True),
        "b": Verdict(True, 0, False),
        "c": Verdict(True, 1, True),  # judged for segment 1: unjudged for a ranking that matched segment 0
        "d": Verdict(False, 0, True),  # not relevant: not counted
        "e": Verdict(True),  # image judged, segment not
    }
    ranked = results("a b c d e f")
    assert localisation(ranked, verdicts, 6) == Localisation(1, 2)
    assert localisation(results("c:1 a"), verdicts, 1) == Localisation(1, 1)
    assert localisation(ranked, verdicts, 6).accuracy == 0.5
    assert Localisation(0, 0).accuracy is None  # no judged segment: no number, not 0
    found = score(ranked, verdicts, 4)
    assert (found.precision, found.unjudged) == (0.75, 0)
    assert score(ranked, verdicts, 6).unjudged == 1  # f


def test_compare_pools_the_top_k_of_every_setting(store: Judgments) -> None:
    store.record(
        [
            Judgment("cars", "a", "", True, segment=0, right_object=True),
            Judgment("cars", "b", "", False),
            Judgment("dogs", "d", "", True),
        ]
    )
    rankings = Rankings(
        2,
        {"A": "{}", "B": "{}"},
        {
            "cars": {"A": results("a b x"), "B": results("y a")},  # x is below k: not pooled
            "dogs": {"A": results("c-"), "B": results("d:3")},
        },
    )
    comparison = compare(rankings, store)
    cars, dogs = comparison.rows
    assert (cars.pooled, cars.unjudged, cars.judged, cars.segments_unjudged) == (3, 1, 2, 0)
    assert (cars.scores["A"].precision, cars.scores["B"].precision) == (0.5, 0.5)
    assert (cars.scores["A"].ap, cars.scores["B"].ap) == (1.0, 0.5)
    assert (cars.scores["A"].unjudged, cars.scores["B"].unjudged) == (0, 1)
    assert cars.scores["A"].localisation == cars.scores["B"].localisation == Localisation(1, 1)
    assert (dogs.pooled, dogs.unjudged, dogs.segments_unjudged) == (2, 1, 1)  # d is relevant, its segment unjudged
    assert comparison.unjudged == 2 and comparison.segments_unjudged == 1
    assert [(s.query, s.result.sha256, s.setting, s.rank) for s in comparison.to_judge] == [
        ("cars", "y", "B", 1),
        ("dogs", "c", "A", 1),
        ("dogs", "d", "B", 1),
    ]
    assert comparison.mean("B").precision == pytest.approx((0.5 + 0.5) / 2)

    store.record([Judgment(s.query, s.result.sha256, "", False, "ada") for s in comparison.to_judge[:2]])
    assert compare(rankings, store).unjudged == 0  # judging the listed results empties the list of images


def test_rank_searches_each_query_under_each_setting_once(tmp_path: Path) -> None:
    base = load_settings({"profile": "test", "db": str(tmp_path)}, environ={})
    named = {"A": base, "B": base.replace(weight_image=1.0, weight_segment=0.0)}
    calls = []

    def search(query: str, shown: object) -> list[SearchResult]:
        calls.append((query, shown))
        return results("a b c d")

    rankings = rank(search, ["q1", "q2"], named, 3)
    assert len(calls) == 4 and rankings.names == ["A", "B"]
    assert [r.sha256 for r in rankings.ranked["q2"]["B"]] == ["a", "b", "c"]
    assert json.loads(rankings.settings["B"])["weight_image"] == 1.0


SHAS = st.sampled_from("abcdefghij")


@settings(max_examples=60, deadline=None)
@given(
    a=st.lists(SHAS, unique=True, max_size=8),
    b=st.lists(SHAS, unique=True, max_size=8),
    judged=st.dictionaries(SHAS, st.booleans()),
    k=st.integers(1, 6),
)
def test_pooled_counts_and_scores_hold_for_any_rankings(
    a: list[str], b: list[str], judged: dict[str, bool], k: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Judgments(folder)
        store.record([Judgment("q", sha, "", relevant) for sha, relevant in judged.items()])
        rankings = Rankings(
            k, {"A": "{}", "B": "{}"}, {"q": {"A": [result(s) for s in a], "B": [result(s) for s in b]}}
        )
        comparison = compare(rankings, store)
        (row,) = comparison.rows
        pool = set(a[:k]) | set(b[:k])
        assert row.pooled == len(pool)
        assert row.unjudged == len(pool) - len(pool & set(judged))
        assert {s.result.sha256 for s in comparison.to_judge} == pool - set(judged) | {
            sha
            for sha in pool
            if judged.get(sha)  # relevant, their segment not judged yet
        }
        for name, ranked in (("A", a), ("B", b)):
            found = row.scores[name]
            assert 0.0 <= found.precision <= 1.0 and 0.0 <= found.ap <= 1.0
            assert found.precision == sum(judged.get(s, False) for s in ranked[:k]) / k
            assert found.unjudged == len([s for s in ranked[:k] if s not in judged])
        store.record([Judgment("q", s.result.sha256, "", False) for s in comparison.to_judge])
        assert compare(rankings, store).unjudged == 0
        store.close()


def test_judging_a_shown_result_image_then_segment(store: Judgments) -> None:
    shown = Shown("q", result("a", 2), "B: whole_image", '{"weight_image": 1.0}', 1)
    assert store.judge_segment(shown, "ada", True) is None  # the image first: a row needs its relevance
    first = store.judge_image(shown, "ada", True)
    assert awaits_segment(first, shown.result)  # relevant, its segment not judged: the page waits for o / w
    second = store.judge_segment(shown, "ada", False)
    assert second is not None and (second.segment, second.right_object) == (2, False)
    assert not awaits_segment(second, shown.result)
    again = store.judge_image(shown, "ada", True)  # re-judging the image keeps the segment's verdict
    assert (again.segment, again.right_object, again.settings) == (2, False, '{"weight_image": 1.0}')
    assert not awaits_segment(store.judge_image(shown, "ada", False), shown.result)
    assert not awaits_segment(store.judge_image(Shown("q", result("n", None), "A"), "ada", True), result("n", None))
    assert awaits_segment(again, result("a", 0))  # another ranking matched another segment of it


def test_mark_the_rest_not_relevant_judges_only_what_nobody_has(store: Judgments) -> None:
    store.record([Judgment("q", "a", "", True, "bob")])
    items = [Shown("q", r, "A") for r in results("a b c b")] + [Shown("other", result("a"), "A")]
    assert store.mark_rest_not_relevant(items, "ada") == 3
    assert store.for_query("q") == {"a": True, "b": False, "c": False}
    assert store.for_query("other") == {"a": False}
    assert store.mark_rest_not_relevant(items, "ada") == 0
