"""Hostile queries: every search ends within a bound, and no NaN or inf reaches a score; or it is refused
with a message (a ValueError)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, cli_env
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from irs.index import Index
from irs.query import EMPTY_QUERY, NOTHING_WANTED, ParsedQuery, Phrase
from irs.records import SearchResult
from irs.search import embed_query, rank
from irs.settings import load_settings

SECONDS_PER_SEARCH = 5.0
IMAGES = 8  # in scenes_folder
REFUSALS = (EMPTY_QUERY, NOTHING_WANTED, "k must be at least 1")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, scenes_folder: Path) -> Index:
    """scenes_folder indexed once for the whole module (test profile)."""
    db = tmp_path_factory.mktemp("hostile") / "db"
    index = Index(load_settings({"profile": "test", "db": str(db)}, environ={}))
    index.add_folder(scenes_folder)
    yield index
    index.close()


def assert_finite(results: list[SearchResult]) -> None:
    for r in results:
        values = [r.score, *r.parts.values(), *(v for m in r.matches for v in m.parts.values())]
        assert all(math.isfinite(v) for v in values), (r.path, r.score, r.parts, [m.parts for m in r.matches])
        assert r.parts["fused"] == pytest.approx(r.score)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)


def search_checked(index: Index, text: str, k: int, note: Callable[[str], None] = print) -> list[SearchResult] | None:
    """Search, timed; the results (checked) or None for a refusal (checked to say why). `note` tells
    which (hypothesis.event in a property test, for --hypothesis-show-statistics)."""
    started = time.monotonic()
    try:
        results = index.search(text, k=k)
    except ValueError as err:
        results, refusal = None, str(err)
    elapsed = time.monotonic() - started
    assert elapsed < SECONDS_PER_SEARCH, f"{text!r} k={k} took {elapsed:.1f}s"
    if results is None:
        assert refusal.startswith(REFUSALS), refusal
        note("refused: " + next(reason for reason in REFUSALS if refusal.startswith(reason)))
        return None
    note("answered")
    assert len(results) <= min(k, IMAGES)
    assert_finite(results)
    return results


# rclip-style terms: signs, weights that are 0, -0, NaN, inf, huge, subnormal or anything, positions, relations
WEIGHTS = [
    "0",
    "-0",
    "0.0",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "1e-320",
    "1e400",
    "5e-324",
    "1" * 400,
    "0." + "0" * 330 + "1",
]
weight_texts = st.one_of(
    st.sampled_from(WEIGHTS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(0, 10**6).map(str),
)
BODIES = [
    "cat",
    "dog",
    "a red circle",
    "a blue square on the left",
    "a green star at the top",
    "in the top right corner",
    "on the left",
    "a cat left of a dog",
    "a star above a square",
    "a cup on a table",
    "a dog in the car",
    "a circle next to a star and a square",
    "left of",
    "and",
    ", ,",
    "the",
    "!!!",
    "😀",
    "",
]
terms = st.builds(
    lambda sign, weight, body: f"{sign}{weight}{body}",
    st.sampled_from(["", "", "+", "-"]),
    st.one_of(st.just(""), weight_texts.map(lambda w: w + ":")),
    st.one_of(st.sampled_from(BODIES), st.text(max_size=8)),
)
rclip_queries = st.lists(terms, max_size=8).map(" ".join)
ks = st.one_of(st.integers(-2, 12), st.sampled_from([10**9, 2**40]))


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=rclip_queries, k=ks)
def test_rclip_style_terms_always_end_with_finite_scores(indexed, text, k):
    search_checked(indexed, text, k, note=event)


@pytest.mark.timeout(120)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(), st.text(max_size=12).map(lambda t: t * 90)), k=st.integers(1, 10))
def test_any_unicode_query_ends_with_finite_scores(indexed, text, k):
    search_checked(indexed, text, k, note=event)


# regressions ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", ["0:cat -dog", "0:cat", "-0:cat", "-dog", "0:cat 0:dog"])
def test_zero_weight_queries_are_refused_at_once(indexed, text):
    started = time.monotonic()
    with pytest.raises(ValueError, match="^nothing to look for"):
        indexed.search(text, k=5)
    assert time.monotonic() - started < SECONDS_PER_SEARCH


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", ["1e308:cat", "1e-320:cat", "1e400:cat", "cat -0:dog", "nan:cat", "inf:cat -dog"])
def test_extreme_weights_give_finite_scores(indexed, text):
    assert len(search_checked(indexed, text, 5)) == 5


def test_only_the_ratio_of_positive_weights_counts(indexed):
    plain = [(r.sha256, r.score) for r in indexed.search("cat", k=4)]
    for text in ["1e-320:cat", "1e308:cat", "0.001:cat -0:dog"]:
        got = [(r.sha256, r.score) for r in indexed.search(text, k=4)]
        assert [s for s, _ in got] == [s for s, _ in plain], text
        assert [v for _, v in got] == pytest.approx([v for _, v in plain], abs=1e-6), text


@pytest.mark.timeout(60)
def test_rank_ends_even_when_every_weight_is_zero(indexed):
    """The old hang, below the parser: zero unit weights made every bound NaN."""
    parsed = ParsedQuery(
        "0:cat -dog", (Phrase("cat", "left", 0.0), Phrase("star", None, 0.0)), (), (Phrase("dog", None, 0.0),), True
    )
    vectors = embed_query(indexed.embedder, parsed)
    for pools in [(1, 1), (0, 3), (100, 400)]:
        settings = indexed.settings.replace(image_pool=pools[0], segment_pool=pools[1])
        results = rank(indexed.store, parsed, vectors, 3, settings)
        assert len(results) == 3
        assert_finite(results)


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "!!!", "?!. ,;", "- + -", "\u200b\u3000"])
def test_empty_queries_are_refused(indexed, text):
    with pytest.raises(ValueError, match="^empty query: type what to look for$"):
        indexed.search(text)


@pytest.mark.parametrize("k,message", [(0, "k must be at least 1, got 0"), (-1, "k must be at least 1, got -1")])
def test_k_below_one_is_refused(indexed, k, message):
    with pytest.raises(ValueError, match=message):
        indexed.search("a red circle", k=k)
    sha = indexed.search("a red circle", k=1)[0].sha256
    with pytest.raises(ValueError, match=message):
        indexed.similar(sha, k=k)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", [10**9, 2**40, 1e9])
def test_a_huge_k_is_capped_at_the_collection(indexed, monkeypatch, k):
    asked = []
    for name in ("query_images", "segment_neighbours"):  # what irs asks Chroma for
        real = getattr(indexed.store.vectors, name)
        monkeypatch.setattr(indexed.store.vectors, name, lambda vec, n, real=real: asked.append(n) or real(vec, n))
    results = search_checked(indexed, "a red circle left of a blue square", k)
    assert len(results) == IMAGES
    most = max(indexed.store.vectors.image_count(), indexed.store.vectors.segment_count())
    assert asked and max(asked) <= most
    assert len(indexed.similar(results[0].sha256, k=k)) == IMAGES


@pytest.mark.timeout(60)
def test_all_zero_settings_weights_give_zero_scores_in_a_stable_order(indexed):
    zero = {
        name: 0.0
        for name in ("weight_image", "weight_segment", "weight_position", "weight_relation", "weight_negative")
    }
    for pools in [(1, 1), (100, 400)]:
        settings = indexed.settings.replace(**zero, image_pool=pools[0], segment_pool=pools[1])
        for text in ["a red circle", "cat -dog", "a star above a square"]:
            first = indexed.search(text, k=5, settings=settings)
            assert [r.score for r in first] == [0.0] * 5
            assert_finite(first)
            shas = [r.sha256 for r in first]
            assert shas == sorted(shas)  # ties go by sha256
            assert [r.sha256 for r in indexed.search(text, k=5, settings=settings)] == shas


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_bad_settings_weights_are_refused(indexed, value):
    with pytest.raises(ValueError, match="weight_negative"):  # by rank, or by settings validation if it has any
        indexed.search("cat -dog", settings=indexed.settings.replace(weight_negative=value))


def test_cli_refuses_with_a_message(tmp_path):
    """`python -m irs search` prints `irs: <why>` and exits 2, instead of spinning or showing ten arbitrary images."""
    (tmp_path / "photos").mkdir()  # an empty index: search never creates one
    irs_index = [sys.executable, "-m", "irs", "index", str(tmp_path / "photos"), "--db", str(tmp_path / "db")]
    assert subprocess.run(irs_index, cwd=REPO, env=cli_env(), capture_output=True, timeout=120).returncode == 0
    for args, message in [(["search", "0:cat -dog"], NOTHING_WANTED), (["search", "  "], EMPTY_QUERY)]:
        out = subprocess.run(
            [sys.executable, "-m", "irs", "--db", str(tmp_path / "db"), *args],
            cwd=REPO,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2 and f"irs: {message}" in out.stderr, out.stderr
