"""The vectors: segment metadata, batching to Chroma's limit, the segment cache."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from irs.index import Index
from irs.records import Segment, SegmentedImage
from irs.vectors import segment_from_metadata, segment_metadata

unit = st.floats(0, 1, allow_nan=False)


@given(x0=unit, y0=unit, w=unit, h=unit, cx=unit, cy=unit, area=unit, index=st.integers(0, 10_000))
def test_a_segments_position_survives_chromas_metadata(x0, y0, w, h, cx, cy, area, index):
    written = Segment((x0, y0, x0 + w, y0 + h), (cx, cy), area, b"mask", (4, 4), 0.5, 0.5, index)
    meta = segment_metadata("a" * 64, written)
    assert all(isinstance(v, str | int | float) for v in meta.values())  # what Chroma stores
    read = segment_from_metadata(meta)
    assert (read.bbox, read.centroid, read.area, read.index) == (written.bbox, written.centroid, area, index)
    assert meta["image"] == "a" * 64


def test_writes_respect_chromas_batch_limit(index, scenes_folder, monkeypatch):
    sizes = []
    original = index.store.vectors.segments.upsert

    def spy(**kw):
        sizes.append(len(kw["ids"]))
        return original(**kw)

    monkeypatch.setattr(index.store.vectors, "batch_limit", 2)
    monkeypatch.setattr(index.store.vectors.segments, "upsert", spy)
    index.add_folder(scenes_folder)
    assert sizes and max(sizes) <= 2
    assert index.store.vectors.segment_count() == index.stats().segments == sum(sizes)


def test_rewriting_an_images_segments_never_serves_the_old_vectors_from_memory(index, scenes_folder):
    index.add_folder(scenes_folder)
    sha = index.image_page(0, 1)[0].sha256
    before = list(index.store.segment_vectors([sha]))  # now cached
    segments = [segment for _, segment, _ in before][:2]
    dim = before[0][2].shape[0]
    fresh = np.eye(2, dim, dtype=np.float32)
    index.store.add_segments([SegmentedImage(sha, index.segments_of(sha)[:2], fresh)])
    after = list(index.store.segment_vectors([sha]))
    assert [s.index for _, s, _ in after] == [s.index for s in segments]
    assert np.array_equal(np.stack([v for _, _, v in after]), fresh)


def test_chroma_ef_search_reaches_both_collections_and_changes_on_an_existing_database(test_settings, scenes_folder):
    def searched_with(idx: Index) -> set[int]:
        return {c.configuration["hnsw"]["ef_search"] for c in (idx.store.vectors.images, idx.store.vectors.segments)}

    idx = Index(test_settings.replace(chroma_ef_search=250))
    idx.add_folder(scenes_folder)
    before = [r.sha256 for r in idx.search("a red circle on the left", 5)]
    assert searched_with(idx) == {250}
    idx.close()
    idx = Index(test_settings.replace(chroma_ef_search=40))  # the same database, opened to search narrower
    try:
        assert searched_with(idx) == {40}
        assert [r.sha256 for r in idx.search("a red circle on the left", 5)] == before  # a small collection: same
    finally:
        idx.close()
