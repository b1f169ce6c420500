"""Ranking: the fused score, the top k exact even when candidates come from small pools."""

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from irs.index import Index
from irs.models import WeightsError
from irs.query import parse_query
from irs.records import Segment
from irs.search import VectorQueries, embed_query, rank, scan, score_image, soft_and
from irs.segment import make_segmenter
from irs.synthetic import write_folder


def indexed_shas(index: Index) -> list[str]:
    """Every indexed image, as the browse pages list them."""
    return sorted({row.sha256 for row in index.image_page(0, index.image_count())})


def brute_force(index: Index, text: str, settings) -> list[tuple[str, float]]:
    """Every indexed image scored exactly from all its segments (no pools, no bounds), best first: what the
    top k of a search must agree with. An image without segments is scored as one whole-image segment."""
    parsed = parse_query(text)
    return scan(index.store, [(parsed, embed_query(index.embedder, parsed))], settings, indexed_shas(index))[0]


QUERIES = [
    "a red circle",  # plain
    "blue",
    "a green star at the top",  # positional
    "a yellow triangle in the bottom left",
    "a red circle left of a blue square",  # relation
    "a green star above a yellow triangle",
    "a red circle and a green star",  # two objects
    "a red circle with a green star plus a blue square",  # three objects, each on its own segment
    "a cat and a dog in the top right",
    "circle -red",  # negatives
    "a circle -2:red +3:star",
    "2:square +star",  # weighted terms
    "3:red +0.5:blue circle",
]
WEIGHTS = [
    {"weight_image": 0.3, "weight_segment": 0.7},
    {"weight_position": 0.8, "weight_relation": 0.9, "weight_negative": 2.0},
    {"weight_all": 0.7, "weight_relation": 0.5},
]


@pytest.fixture
def scenes_index(index, scenes_folder):
    index.add_folder(scenes_folder)
    return index


def assert_exact_top_k(index: Index, text: str, k: int, settings) -> None:
    """The search's top k are the brute-force top k: the same scores, each result scored as it claims."""
    expected = brute_force(index, text, settings)
    exact = dict(expected)
    got = index.search(text, k=k, settings=settings)
    where = f"{text!r} k={k}"
    assert [r.score for r in got] == pytest.approx([s for _, s in expected[:k]], abs=1e-5), where
    assert [exact[r.sha256] for r in got] == pytest.approx([r.score for r in got], abs=1e-5), where
    for r in got:
        assert r.parts["fused"] == pytest.approx(r.score)
        assert len(r.matches) == max(len(parse_query(text).phrases), 1)
        # a confidence for the result and every match, 0..1, the result's its weakest counted match's
        assert 0.0 <= r.confidence <= 1.0 and all(0.0 <= m.confidence <= 1.0 for m in r.matches), where
        assert r.confidence in [m.confidence for m in r.matches], where


@pytest.mark.parametrize("image_pool,segment_pool", [(100, 400), (0, 0), (1, 1), (2, 3), (0, 5)])
@pytest.mark.parametrize("weights", WEIGHTS, ids=["image-segment", "position-relation-negative", "soft-and"])
def test_top_k_equals_brute_force_for_any_pool_size(scenes_index, image_pool, segment_pool, weights):
    """Tiny pools must grow until the top k are exact: the same images with the same scores as scoring
    every image."""
    settings = scenes_index.settings.replace(image_pool=image_pool, segment_pool=segment_pool, **weights)
    for text in QUERIES:
        for k in (1, 4):
            assert_exact_top_k(scenes_index, text, k, settings)


@pytest.mark.parametrize("image_pool,segment_pool", [(1, 1), (0, 5), (100, 400)])
def test_top_k_exact_with_images_indexed_without_segments(scenes_index, tmp_path, image_pool, segment_pool):
    """An image whose segmentation is pending (or found nothing) is scored with its whole image as its one
    segment; the segment pools do not bound that, so tiny pools must not leave a deserving one out."""
    write_folder(tmp_path / "unsegmented", 4, seed=9, side=160)
    scenes_index.add_folder(tmp_path / "unsegmented", segment=False)
    settings = scenes_index.settings.replace(
        image_pool=image_pool, segment_pool=segment_pool, weight_image=0.3, weight_segment=0.7
    )
    for text in QUERIES:
        for k in (1, 4):
            assert_exact_top_k(scenes_index, text, k, settings)


def test_whole_image_pools_are_queried_only_while_an_image_lacks_segments(scenes_index, tmp_path, monkeypatch):
    calls = []
    query_images = scenes_index.store.vectors.query_images
    monkeypatch.setattr(scenes_index.store.vectors, "query_images", lambda v, n: calls.append(n) or query_images(v, n))
    scenes_index.search("a red circle left of a blue square", k=3)
    assert len(calls) == 1  # every image has segments: the whole query's image pool alone
    write_folder(tmp_path / "unsegmented", 2, seed=9, side=160)
    scenes_index.add_folder(tmp_path / "unsegmented", segment=False)
    calls.clear()
    scenes_index.search("a red circle left of a blue square", k=3)
    assert len(calls) == 3  # and one per phrase while some image has none


def _segment(box: tuple[float, float, float, float]) -> Segment:
    x0, y0, x1, y1 = box
    return Segment(box, ((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0) * (y1 - y0), b"", (0, 0))


def test_two_phrases_never_share_one_object(test_settings):
    """ "a red circle with a blue square" asks for two objects: an image whose one red circle is also the
    closest thing to a blue square must not be scored as if it held both."""
    parsed = parse_query("a red circle with a blue square")
    circle, circle_again, grass = (
        _segment((0.1, 0.1, 0.3, 0.3)),
        _segment((0.11, 0.1, 0.3, 0.31)),  # SAM's second mask of the same circle
        _segment((0.0, 0.5, 1.0, 1.0)),
    )
    sims = np.array([[0.9, 0.8], [0.88, 0.79], [0.1, 0.3]])  # rows: segments; columns: the two phrases
    scored = score_image(parsed, [circle, circle_again, grass], sims, 0.0, 0.0, test_settings)
    assert [m.segment for m in scored.matches] == [circle, grass]
    objects = test_settings.replace(weight_image=0.0, weight_segment=1.0, weight_all=0.0)
    assert score_image(parsed, [circle, circle_again, grass], sims, 0.0, 0.0, objects).fused == pytest.approx(0.6)
    # with the soft AND the weaker phrase counts more, and the choice still keeps the objects apart
    strict = objects.replace(weight_all=1.0)
    assert score_image(parsed, [circle, circle_again, grass], sims, 0.0, 0.0, strict).fused == pytest.approx(0.3)
    # an image with one segment (nothing else was found) lets it stand for both
    alone = score_image(parsed, [circle], sims[:1], 0.0, 0.0, objects)
    assert [m.segment for m in alone.matches] == [circle, circle] and alone.fused == pytest.approx(0.85)


@pytest.mark.parametrize("text_dtype", ["float32", "int8"])
def test_search_with_early_vector_queries_agrees_with_rank_and_asks_chroma_once(scenes_index, text_dtype, request):
    """Index.search starts each vector query as soon as its text is encoded (texts one at a time with int8
    queries, in one batch otherwise): the same results as embedding first and ranking after, with every
    query asked of Chroma once, and no thread left running."""
    index = Index(scenes_index.settings.replace(text_dtype=text_dtype))
    request.addfinalizer(index.close)
    asked = []
    vectors, store = index.store.vectors, index.store
    query_images, query_segments = vectors.query_images, store.query_segments
    vectors.query_images = lambda v, n: asked.append(("images", v.tobytes(), n)) or query_images(v, n)
    store.query_segments = lambda v, n: asked.append(("segments", v.tobytes(), n)) or query_segments(v, n)
    threads = threading.active_count()
    for text in QUERIES:
        parsed = parse_query(text)
        direct = rank(store, parsed, embed_query(index.embedder, parsed), 3, index.settings)
        asked.clear()
        got = index.search(text, k=3)
        assert [(r.sha256, r.score) for r in got] == [(r.sha256, r.score) for r in direct], text
        assert len(asked) == len(set(asked)) == len(parse_query(text).phrases or [text]) + 1, text
    assert threading.active_count() == threads


def test_with_int8_queries_each_vector_query_starts_before_the_next_text_is_encoded(scenes_index, monkeypatch):
    index = Index(scenes_index.settings.replace(text_dtype="int8"))
    events = []
    texts, start = index.embedder.texts, VectorQueries.start
    monkeypatch.setattr(index.embedder, "texts", lambda batch: events.append(("encode", *batch)) or texts(batch))
    monkeypatch.setattr(
        VectorQueries, "start", lambda self, kind, *a: events.append(("start", kind)) or start(self, kind, *a)
    )
    try:
        index.search("a red circle left of a blue square", k=3)
    finally:
        index.close()
    assert events[:6] == [
        ("encode", "a red circle"),
        ("start", "segments"),
        ("encode", "a blue square"),
        ("start", "segments"),
        ("encode", "a red circle left of a blue square"),
        ("start", "images"),
    ]


def test_a_pool_that_did_not_grow_is_not_asked_again(scenes_index, monkeypatch):
    """With a tiny image pool and a segment pool that holds every segment, only the image pool can grow: each
    phrase's segment query is asked of Chroma once however many rounds the search takes (a 100-image demo
    collection: the second round would ask for the same thousands of segments again)."""
    asked = []
    query_segments = scenes_index.store.query_segments
    monkeypatch.setattr(scenes_index.store, "query_segments", lambda v, n: asked.append(n) or query_segments(v, n))
    settings = scenes_index.settings.replace(image_pool=1, segment_pool=100_000, weight_image=0.9, weight_segment=0.1)
    parsed, trace = parse_query("a red circle left of a blue square"), {}
    vectors = embed_query(scenes_index.embedder, parsed)
    rank(scenes_index.store, parsed, vectors, 4, settings, trace)
    assert trace["rounds"] > 1 and trace["image_pool"] > 1
    assert len(asked) == 2  # one per phrase


def test_a_failing_early_vector_query_fails_the_search_with_its_own_error(scenes_index):
    def broken(vector, n):
        raise RuntimeError("Chroma is gone")

    scenes_index.store.query_segments = broken
    with pytest.raises(RuntimeError, match="Chroma is gone"):
        scenes_index.search("a red circle on the left", k=3)


def test_embed_query_reports_each_vector_as_soon_as_it_is_known(scenes_index):
    parsed = parse_query("a red circle left of a blue square -green")
    ready = []
    vectors = embed_query(scenes_index.embedder, parsed, lambda vector, phrase: ready.append((phrase, vector)))
    assert [phrase for phrase, _ in ready] == [0, 1, None]  # the phrases' vectors first, the whole query's last
    assert all(np.array_equal(v, w) for (_, v), w in zip(ready, [*vectors.phrases, vectors.whole]))
    again = embed_query(scenes_index.embedder, parsed)
    assert np.array_equal(again.whole, vectors.whole) and len(again.negatives) == 1


def test_whole_image_mode_ignores_segments(index, scenes_folder):
    index.add_folder(scenes_folder)
    settings = index.settings.replace(weight_segment=0.0, weight_image=1.0)
    got = index.search("a red circle in the top left", k=3, settings=settings)
    vectors = embed_query(index.embedder, parse_query("a red circle in the top left"))
    image_vecs = index.store.vectors.image_vectors(indexed_shas(index))
    sims = sorted((float(v @ vectors.whole) for v in image_vecs.values()), reverse=True)[:3]
    assert [r.score for r in got] == pytest.approx(sims, abs=1e-5)
    assert all(r.segment is None and r.matches == [] for r in got)
    assert all(0.0 <= r.confidence <= 1.0 for r in got)  # from the image's similarity alone


def test_best_segment_is_the_most_similar_one(index, scenes_folder):
    index.add_folder(scenes_folder)
    query = embed_query(index.embedder, parse_query("a yellow triangle")).phrases[0]
    for r in index.search("a yellow triangle", k=3):
        stored = [(seg, vec) for sha, seg, vec in index.store.segment_vectors([r.sha256])]
        best = max(stored, key=lambda sv: float(sv[1] @ query))[0]
        assert r.segment.index == best.index
        assert r.segment.mask().shape == r.segment.mask_shape


def test_empty_index_and_bad_k(index):
    assert index.search("anything", k=5) == []
    for k, message in [(0, "k must be at least 1, got 0"), (-3, "k must be at least 1, got -3")]:
        with pytest.raises(ValueError, match=message):
            index.search("anything", k=k)
    with pytest.raises(ValueError, match="k must be a whole number"):
        index.search("anything", k=2.5)


def test_search_works_where_sam_cannot_be_loaded(test_settings, scenes_folder, tmp_path):
    """A search never loads SAM: a database whose SAM checkpoint is missing on this machine still answers."""
    settings = test_settings.replace(sam_model_type="vit_b", sam_checkpoint=str(tmp_path / "missing-sam.pth"))
    with pytest.raises(WeightsError, match="not found"):
        make_segmenter(settings)
    with Index(settings) as idx:
        idx.add_folder(scenes_folder, segment=False)
    with Index.open(settings.db) as fresh:
        results = fresh.search("a red circle", k=2)
    assert len(results) == 2 and all(r.path for r in results)


@given(
    st.lists(st.floats(-1, 1), min_size=1, max_size=6),
    st.floats(0, 1),
    st.integers(0, 5),
    st.floats(0, 0.5),
)
def test_soft_and_lies_between_the_weakest_and_the_mean_and_never_falls_as_a_value_rises(values, share, i, rise):
    weights = [1.0] * len(values)
    both = soft_and(weights, values, share)
    mean = float(np.mean(values))
    assert min(values) - 1e-9 <= both <= mean + 1e-9
    higher = list(values)
    higher[i % len(values)] += rise
    assert soft_and(weights, higher, share) >= both - 1e-9  # so a bound made of value bounds stays a bound
    assert soft_and(weights, values, 0.0) == pytest.approx(mean)


def test_an_image_whose_vector_cannot_be_read_is_left_out_not_fatal(scenes_index):
    """Found through its segments but without a readable image vector (lost): the search still answers,
    with every other image, and never that one."""
    settings = scenes_index.settings.replace(image_pool=1, segment_pool=400)
    full = scenes_index.search("a red circle", k=20, settings=settings)
    lost = full[0].sha256
    scenes_index.store.vectors.delete_images([lost])  # from Chroma and the catalog's copy: a damaged database
    with scenes_index.catalog.transaction() as sql:
        sql.execute("DELETE FROM image_vectors WHERE sha256=?", (lost,))
    got = scenes_index.search("a red circle", k=20, settings=settings)
    assert lost not in {r.sha256 for r in got}
    assert [r.sha256 for r in got] == [r.sha256 for r in full if r.sha256 != lost][: len(got)]
    assert len(got) >= len(full) - 2
