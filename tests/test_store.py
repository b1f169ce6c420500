import shutil
from pathlib import Path

import numpy as np
import pytest
from chromadb.api.client import SharedSystemClient

from irs.index import Index
from irs.settings import COMPONENTS_REVISION, load_settings
from irs.store import DatabaseMissing, ManifestMismatch, StoreError
from irs.vectors import segment_id


@pytest.mark.parametrize("older", [None, 2])  # None: as irs wrote it before background regions were dropped
def test_a_database_of_an_older_weight_free_segmenter_is_refused_not_mixed(test_settings, scenes_folder, older):
    settings = test_settings.replace(segmenter="components")
    with Index(settings) as index:
        index.add_folder(scenes_folder)
        manifest = index.catalog.manifest()
        manifest["settings"]["components_revision"] = older
        index.catalog.set_manifest(manifest)
    with pytest.raises(ManifestMismatch) as err:
        Index(settings)
    message = str(err.value)
    assert f"components_revision: database has {older}, asked for {COMPONENTS_REVISION}" in message
    assert "joins fragments" in message and "new --db" in message


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
    # search-only settings may change freely, and are used
    with Index(settings.replace(weight_image=0.9, image_pool=5)) as again:
        results = again.search("a red circle", k=3)
        assert len(results) == 3
        for r in results:
            assert r.parts["fused"] == pytest.approx(
                0.9 * r.parts["image"] + settings.weight_segment * r.parts["segment"]
            )


def test_garbage_collection_removes_vectors_no_file_refers_to(index, scenes_folder):
    index.add_folder(scenes_folder)
    paths = list(index.catalog.known_files())
    index.store.forget_paths(paths[:3])
    assert index.store.collect_garbage() == 3
    s = index.stats()
    assert s.images == 5 and index.store.vectors.image_count() == 5
    assert index.store.vectors.segment_count() == s.segments


QUERIES = ("a red circle", "a blue square on the left", "a star above a cross", "a red circle -square")


def test_the_catalog_keeps_an_exact_copy_of_each_image_vector_and_search_reads_it(index, scenes_folder, monkeypatch):
    index.add_folder(scenes_folder)
    shas = sorted(f.sha256 for f in index.catalog.known_files().values())
    copies, chroma = index.catalog.image_vectors(shas), index.store.vectors.image_vectors(shas)
    assert copies.keys() == chroma.keys() == set(shas)
    # the vectors irs gave Chroma; Chroma normalised its copy again, which may move the last bit
    assert all(np.abs(copies[sha] - chroma[sha]).max() <= 1e-7 for sha in shas)
    before = {q: ranking(index, q) for q in QUERIES}

    def no_chroma_reads(ids: list[str]) -> dict:
        raise AssertionError("image vectors read from Chroma")

    monkeypatch.setattr(index.store.vectors, "image_vectors", no_chroma_reads)
    assert {q: ranking(index, q) for q in QUERIES} == before
    monkeypatch.undo()
    index.store.forget_paths([p for p, f in index.catalog.known_files().items() if f.sha256 in shas[:3]])
    index.store.collect_garbage()
    assert sorted(index.catalog.image_vectors(shas)) == shas[3:]  # the copy goes with its image


def test_a_database_without_the_copies_answers_the_same_and_indexing_copies_them(index, scenes_folder):
    """A database indexed before the catalog kept image vectors: search reads them from Chroma, and the next
    indexing run copies them (once, with progress)."""
    index.add_folder(scenes_folder)
    before = {q: ranking(index, q) for q in QUERIES}
    with index.catalog.transaction() as sql:
        sql.execute("DELETE FROM image_vectors")
    assert len(index.catalog.embedded_without_vectors()) == 8
    assert {q: ranking(index, q) for q in QUERIES} == before
    seen = []
    report = index.add_folder(scenes_folder, progress=seen.append)
    assert report.unchanged == 8 and index.catalog.embedded_without_vectors() == []
    assert [(p.stage, p.done, p.total) for p in seen if p.stage == "copy vectors"][-1] == ("copy vectors", 8, 8)
    assert {q: ranking(index, q) for q in QUERIES} == before


def ranking(index: Index, query: str) -> list[tuple[str, float, int | None]]:
    return [(r.path, round(r.score, 5), r.segment.index if r.segment else None) for r in index.search(query, k=8)]


def test_a_lost_vector_store_is_reported_and_rebuilt_to_the_same_results(test_settings, scenes_folder):
    with Index(test_settings) as index:
        index.add_folder(scenes_folder)
        before = {q: ranking(index, q) for q in ("a red circle", "a blue square on the left", "a star above a cross")}
        stats = index.stats()
    shutil.rmtree(Path(test_settings.db) / "chroma")
    SharedSystemClient.clear_system_cache()  # as a new process would: Chroma caches clients by path

    with Index(test_settings) as index:
        assert index.problem and "holds 0 image and 0 segment vectors" in index.problem
        assert "check --repair" in index.problem
        found = index.check()
        assert len(found.missing_images) == 8 and len(found.missing_segments) == 8 and not found.ok
        report = index.add_folder(scenes_folder)  # index repairs on its own
        assert (report.added, report.segmented, report.failed) == (8, 8, [])
        assert index.check().ok and index.problem is None
        assert index.stats().segments == stats.segments == index.store.vectors.segment_count()
        assert {q: ranking(index, q) for q in before} == before


def test_check_repair_deletes_stray_vectors_and_restores_missing_ones(index, scenes_folder):
    index.add_folder(scenes_folder)
    shas = sorted(f.sha256 for f in index.catalog.known_files().values())
    victim = shas[0]
    index.store.vectors.images.delete(ids=[victim])
    index.store.vectors.segments.delete(ids=[segment_id(shas[1], 0)])
    index.store.vectors.images.upsert(ids=["f" * 64], embeddings=[[0.1] * 32])
    index.store.vectors.segments.upsert(ids=["e" * 64 + ":0"], embeddings=[[0.1] * 32])
    found = index.check()
    assert found.missing_images == [victim] and found.missing_segments == [shas[1]]
    assert found.extra_images == ["f" * 64] and found.extra_segments == ["e" * 64 + ":0"]
    assert "1 image vectors missing" in str(found)

    found, report = index.repair()
    assert not found.ok and (report.added, report.segmented, report.failed) == (1, 1, [])
    assert index.check().ok
    assert index.store.vectors.image_count() == 8 and index.store.vectors.segment_count() == index.stats().segments


def test_a_damaged_catalog_says_so_and_how_to_rebuild(test_settings, scenes_folder):
    with Index(test_settings) as index:
        index.add_folder(scenes_folder, segment=False)
    catalog = Path(test_settings.db) / "irs.sqlite"
    for leftover in catalog.parent.glob("irs.sqlite-*"):
        leftover.unlink()
    catalog.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as err:
        Index(test_settings)
    assert "the catalog is damaged" in str(err.value) and "index your folders again" in str(err.value)


def test_search_never_creates_a_database(tmp_path, test_settings):
    settings = test_settings.replace(db=str(tmp_path / "nothing-here"))
    with pytest.raises(DatabaseMissing, match="no irs database at"):
        Index(settings, create=False)
    assert not (tmp_path / "nothing-here").exists()


def test_a_weight_free_database_reopens_from_its_own_irs_toml(tmp_path, scenes_folder):
    db = tmp_path / "db"
    with Index(load_settings({"profile": "demo", "db": str(db)}, environ={})) as index:
        index.add_folder(scenes_folder)
    # reopened as the CLI and the app do: only the folder given, everything else from db/irs.toml
    with Index(load_settings({"db": str(db)}, environ={})) as again:
        assert again.settings.segmenter == "components" and again.image_count() == 8


def test_a_search_sees_images_another_process_added_since_its_last_search(test_settings, scenes_folder, tmp_path):
    """The vector counts a search sizes its pools with are cached, but never across a write."""
    half = tmp_path / "half"
    half.mkdir()
    names = sorted(p.name for p in scenes_folder.glob("*.png"))
    for name in names[:4]:
        shutil.copy(scenes_folder / name, half / name)
    with Index(test_settings) as reader, Index(test_settings) as writer:
        writer.add_folder(half)
        assert len(reader.search("a red circle", k=100)) == 4
        images, segments = reader.store.vector_counts()
        writer.add_folder(scenes_folder)  # the other four, written by another connection
        assert reader.store.vector_counts() == (8, writer.store.vectors.segment_count()) and images == 4
        assert len(reader.search("a red circle", k=100)) == 8


def test_a_vector_store_locked_for_a_moment_is_waited_for_and_never_called_damaged(test_settings, monkeypatch):
    import irs.store as store_module

    real, calls = store_module.Vectors, []

    def locked_twice(*args):
        calls.append(args)
        if len(calls) <= 2:
            raise RuntimeError("Database error: error returned from database: (code: 5) database is locked")
        return real(*args)

    monkeypatch.setattr(store_module, "Vectors", locked_twice)
    with Index(test_settings) as index:
        assert len(calls) == 3 and index.stats().images == 0

    def always_locked(*args):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(store_module, "Vectors", always_locked)
    monkeypatch.setattr(store_module, "LOCKED_WAIT", 0.5)
    with pytest.raises(StoreError) as err:
        Index(test_settings)
    assert "stayed locked for 0.5 s" in str(err.value) and "try again" in str(err.value)
    assert "Move it aside" not in str(err.value)  # a busy store is not damaged: nothing to rebuild
