import pytest

from irs.index import Index
from irs.store import ManifestMismatch


def test_opening_with_another_model_is_refused_with_the_difference(index, scenes_folder):
    index.add_folder(scenes_folder, segment=False)
    settings = index.settings
    index.close()
    with pytest.raises(ManifestMismatch) as err:
        Index(settings.replace(clip_model="ViT-B-32", clip_pretrained="laion2b_s34b_b79k"))
    message = str(err.value)
    assert "clip_model: database has 'irs-tiny', asked for 'ViT-B-32'" in message
    assert "new --db" in message
    with pytest.raises(ManifestMismatch, match="max_segments"):
        Index(settings.replace(max_segments=3))
    # search-only settings may change freely
    with Index(settings.replace(weight_image=0.9, image_pool=5)) as again:
        assert again.search("x", k=1)


def test_writes_respect_chromas_batch_limit(index, scenes_folder, monkeypatch):
    sizes = []
    original = index.store.segments.upsert

    def spy(**kw):
        sizes.append(len(kw["ids"]))
        return original(**kw)

    monkeypatch.setattr(index.store, "batch_limit", 2)
    monkeypatch.setattr(index.store.segments, "upsert", spy)
    index.add_folder(scenes_folder)
    assert sizes and max(sizes) <= 2
    assert index.store.segments.count() == index.stats()["segments"]


def test_garbage_collection_removes_vectors_no_file_refers_to(index, scenes_folder):
    index.add_folder(scenes_folder)
    paths = list(index.store.known_files())
    index.store.forget_paths(paths[:3])
    assert index.store.collect_garbage() == 3
    s = index.stats()
    assert s["images"] == 5 and index.store.images.count() == 5
    assert index.store.segments.count() == s["segments"]
