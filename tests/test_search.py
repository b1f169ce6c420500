"""Ranking: the fused score, the top k exact even when candidates come from small pools."""

import numpy as np
import pytest

from irs.query import parse_query
from irs.records import Segment
from irs.search import WHOLE_IMAGE, embed_query, rank, score_image


def brute_force(index, parsed, vectors, settings) -> list[tuple[str, float]]:
    """Score every image from every stored vector, no pools, no bounds (what rank must agree with)."""
    imgs = index.store.images.get(include=["embeddings"])
    segs = index.store.segments.get(include=["embeddings", "metadatas"])
    by_image: dict[str, list] = {}
    for meta, vec in zip(segs["metadatas"], segs["embeddings"]):
        seg = Segment(
            bbox=(meta["x0"], meta["y0"], meta["x1"], meta["y1"]),
            centroid=(meta["cx"], meta["cy"]),
            area=meta["area"],
            mask_rle=b"",
            mask_shape=(0, 0),
            index=meta["idx"],
        )
        by_image.setdefault(meta["image"], []).append((seg, np.asarray(vec, np.float32)))
    scored = []
    for sha, vec in zip(imgs["ids"], imgs["embeddings"]):
        vec = np.asarray(vec, np.float32)
        pairs = by_image.get(sha) or [(WHOLE_IMAGE, vec)]
        sims = np.stack([v for _, v in pairs]) @ np.stack(vectors.phrases).T
        negative = sum(n.weight * float(v @ vec) for n, v in zip(parsed.negatives, vectors.negatives))
        s = score_image(parsed, [p for p, _ in pairs], sims, float(vec @ vectors.whole), negative, settings)
        scored.append((sha, s.fused))
    return sorted(scored, key=lambda t: (-t[1], t[0]))  # ties by sha256, as rank breaks them


QUERIES = [
    "a red circle",
    "a green star at the top",
    "blue",
    "a red circle left of a blue square",
    "a cat and a dog in the top right",
    "circle -red",
    "2:square +star",
    "a red circle and a green star",
]


@pytest.mark.parametrize("image_pool,segment_pool", [(100, 400), (1, 1), (2, 3), (0, 5)])
def test_rank_agrees_with_brute_force_for_any_pool_size(index, scenes_folder, image_pool, segment_pool):
    index.add_folder(scenes_folder)
    settings = index.settings.replace(
        image_pool=image_pool, segment_pool=segment_pool, weight_image=0.3, weight_segment=0.7
    )
    for text in QUERIES:
        parsed = parse_query(text)
        vectors = embed_query(index.embedder, parsed)
        expected = brute_force(index, parsed, vectors, settings)[:4]
        got = rank(index.store, parsed, vectors, 4, settings)
        assert [r.score for r in got] == pytest.approx([s for _, s in expected], abs=1e-5), text
        assert [r.sha256 for r in got] == [sha for sha, _ in expected], text
        for r in got:
            assert r.parts["fused"] == pytest.approx(r.score)
            assert len(r.matches) == len(parsed.phrases)


def test_whole_image_mode_ignores_segments(index, scenes_folder):
    index.add_folder(scenes_folder)
    settings = index.settings.replace(weight_segment=0.0, weight_image=1.0)
    parsed = parse_query("a red circle in the top left")
    vectors = embed_query(index.embedder, parsed)
    got = rank(index.store, parsed, vectors, 3, settings)
    imgs = index.store.images.get(include=["embeddings"])
    sims = sorted((float(np.asarray(v) @ vectors.whole) for v in imgs["embeddings"]), reverse=True)[:3]
    assert [r.score for r in got] == pytest.approx(sims, abs=1e-5)
    assert all(r.segment is None and r.matches == [] for r in got)


def test_best_segment_is_the_most_similar_one(index, scenes_folder):
    index.add_folder(scenes_folder)
    parsed = parse_query("a yellow triangle")
    vectors = embed_query(index.embedder, parsed)
    query = vectors.phrases[0]
    for r in rank(index.store, parsed, vectors, 3, index.settings):
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


def test_search_does_not_load_sam(index, scenes_folder):
    index.add_folder(scenes_folder, segment=False)
    db = index.settings.db
    index.close()
    from irs.index import Index

    with Index.open(db) as fresh:
        fresh.search("a red circle", k=2)
        assert fresh._segmenter_loaded is False
