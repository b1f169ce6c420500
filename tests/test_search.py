"""Ranking: the fused score, the top k exact even when candidates come from small pools."""

import numpy as np
import pytest

from irs.search import rank


def brute_force(index, query: np.ndarray, settings) -> list[tuple[str, float]]:
    """Score every image in Python from every stored vector (what rank must agree with)."""
    imgs = index.store.images.get(include=["embeddings"])
    segs = index.store.segments.get(include=["embeddings", "metadatas"])
    best: dict[str, float] = {}
    for meta, vec in zip(segs["metadatas"], segs["embeddings"]):
        sim = float(np.asarray(vec) @ query)
        best[meta["image"]] = max(best.get(meta["image"], -2.0), sim)
    scored = []
    for sha, vec in zip(imgs["ids"], imgs["embeddings"]):
        image_sim = float(np.asarray(vec) @ query)
        seg = best.get(sha, image_sim)
        scored.append((sha, settings.weight_image * image_sim + settings.weight_segment * seg))
    return sorted(scored, key=lambda t: t[1], reverse=True)


@pytest.mark.parametrize("image_pool,segment_pool", [(100, 400), (1, 1), (2, 3), (0, 5)])
def test_rank_agrees_with_brute_force_for_any_pool_size(index, scenes_folder, image_pool, segment_pool):
    index.add_folder(scenes_folder)
    settings = index.settings.replace(
        image_pool=image_pool, segment_pool=segment_pool, weight_image=0.3, weight_segment=0.7
    )
    for text in ["a red circle", "a green star at the top", "blue"]:
        query = index.embedder.texts([text])[0]
        expected = brute_force(index, query, settings)[:4]
        got = rank(index.store, query, 4, settings)
        assert [r.sha256 for r in got] == [sha for sha, _ in expected]
        assert [r.score for r in got] == pytest.approx([s for _, s in expected], abs=1e-5)
        for r in got:
            assert r.parts["fused"] == pytest.approx(0.3 * r.parts["image"] + 0.7 * r.parts["segment"])


def test_best_segment_is_the_most_similar_one(index, scenes_folder):
    index.add_folder(scenes_folder)
    query = index.embedder.texts(["a yellow triangle"])[0]
    for r in rank(index.store, query, 3, index.settings):
        stored = [(seg, vec) for sha, seg, vec in index.store.segment_vectors([r.sha256])]
        best = max(stored, key=lambda sv: float(sv[1] @ query))[0]
        assert r.segment.index == best.index
        assert r.segment.mask().shape == r.segment.mask_shape


def test_empty_index_and_zero_k(index):
    assert index.search("anything", k=5) == []
    assert index.search("anything", k=0) == []


def test_search_does_not_load_sam(index, scenes_folder):
    index.add_folder(scenes_folder, segment=False)
    db = index.settings.db
    index.close()
    from irs.index import Index

    with Index.open(db) as fresh:
        fresh.search("a red circle", k=2)
        assert fresh._segmenter_loaded is False
