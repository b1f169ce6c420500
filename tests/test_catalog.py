"""The catalog: schema versions and upgrades, named rows, the write order it enforces."""

import json
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import pytest
from chromadb.api.client import SharedSystemClient

from irs.catalog import SCHEMA_VERSION, Catalog, StoreError
from irs.geometry import rle_encode
from irs.index import Index
from irs.records import EmbeddedImage, FileEntry, Segment, SegmentedImage
from irs.settings import load_settings

OLD_DB = Path(__file__).parent / "data" / "db-schema0.tar.gz"  # made by irs at 2b42185, see expected.json in it


@pytest.fixture
def old_database(tmp_path: Path) -> tuple[Path, dict]:
    """A database written by irs before schema versions (3 scenes, test profile), and what that irs answered."""
    with tarfile.open(OLD_DB) as archive:
        archive.extractall(tmp_path, filter="data")
    SharedSystemClient.clear_system_cache()
    return tmp_path, json.loads((tmp_path / "expected.json").read_text())


def test_a_database_from_before_schema_versions_is_upgraded_and_answers_as_before(old_database, monkeypatch):
    root, expected = old_database
    # that irs's relation fits (0.5 at centres 5% apart, 0.04 ramps), so its answers to "a star above a cross"
    # can be compared to the last bit; only the stored data, not the scoring, is under test here
    monkeypatch.setattr("irs.spatial.RELATION_MARGIN", 0.05)
    monkeypatch.setattr("irs.spatial.RELATION_SHARPNESS", 0.04)
    with sqlite3.connect(root / "db" / "irs.sqlite") as sql:
        assert sql.execute("PRAGMA user_version").fetchone()[0] == 0
    with Index(load_settings({"db": str(root / "db")}), create=False) as index:
        assert index.problem is None
        stats = index.stats()
        assert {k: getattr(stats, k) for k in expected["stats"]} == expected["stats"]
        for query, ranked in expected["searches"].items():
            results = index.search(query, 3)
            # the same images and segments; scores to float32 rounding (the text tower's arithmetic may differ
            # in the last bits between versions, not in the ranking)
            assert [[r.sha256, r.segment.index if r.segment else None] for r in results] == [
                [sha, segment] for sha, _, segment in ranked
            ], query
            assert [r.score for r in results] == pytest.approx([score for _, score, _ in ranked], abs=1e-5), query
        for sha, segments in expected["segments"].items():
            got = [
                [
                    s.index,
                    round(s.predicted_iou, 6),
                    round(s.stability_score, 6),
                    list(s.mask_shape),
                    int(s.mask().sum()),
                ]
                for s in index.segments_of(sha)
            ]
            assert got == segments
        assert len(index.catalog.embedded_without_vectors()) == 3  # searched with Chroma's image vectors
        # and it takes new work: the same pictures in another folder reuse the stored vectors
        report = index.add_folder(root / "photos")
        assert (report.reused, report.added, report.failed) == (3, 0, [])
        assert index.catalog.embedded_without_vectors() == []  # copied into the catalog on the way
        assert index.check().ok
    with sqlite3.connect(root / "db" / "irs.sqlite") as sql:
        assert sql.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_database_from_a_newer_irs_is_refused_with_a_message(tmp_path):
    path = tmp_path / "irs.sqlite"
    Catalog(path).close()
    with sqlite3.connect(path) as sql:
        sql.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError) as err:
        Catalog(path)
    assert f"catalog schema {SCHEMA_VERSION + 1}" in str(err.value) and "Upgrade irs" in str(err.value)


def segment(index: int, x: float) -> Segment:
    mask = [[False] * 8 for _ in range(8)]
    mask[2][index] = True
    return Segment((x, 0.1, x + 0.2, 0.3), (x + 0.1, 0.2), 0.04, rle_encode(mask), (8, 8), 0.9, 0.8, index)


def test_rows_come_back_as_written(tmp_path):
    catalog = Catalog(tmp_path / "irs.sqlite")
    catalog.add_images([EmbeddedImage("a" * 64, 640, 480, np.zeros(4))])
    catalog.mark("embedded", ["a" * 64], True)
    assert catalog.link_files([(FileEntry("/p/x.jpg", 10, 123), "a" * 64)]) == 1
    known = catalog.known_files()["/p/x.jpg"]
    assert known.sha256 == "a" * 64 and known.unchanged(FileEntry("/p/x.jpg", 10, 123))
    assert not known.unchanged(FileEntry("/p/x.jpg", 11, 123))
    written = [segment(0, 0.1), segment(1, 0.5)]
    catalog.replace_segments([SegmentedImage("a" * 64, written, np.zeros((2, 4)))])
    assert catalog.segments_of("a" * 64) == written
    assert catalog.segment("a" * 64, 1) == written[1] and catalog.segment("a" * 64, 2) is None
    catalog.replace_segments(
        [SegmentedImage("a" * 64, written[:1], np.zeros((1, 4)))]
    )  # replacing leaves no stale rows
    assert catalog.segment_count(["a" * 64, "b" * 64]) == {"a" * 64: 1, "b" * 64: 0}
    counts = catalog.counts()
    assert (counts.files, counts.images, counts.embedded, counts.segmented, counts.segments) == (1, 1, 1, 0, 1)
    assert [(row.sha256, row.path) for row in catalog.image_page(0, 10)] == [("a" * 64, "/p/x.jpg")]


def test_a_file_is_never_linked_to_an_image_without_its_vector(tmp_path, test_settings):
    catalog = Catalog(tmp_path / "irs.sqlite")
    catalog.add_images([EmbeddedImage("b" * 64, 64, 64, np.zeros(4))])  # row written, vector not yet stored
    assert catalog.link_files([(FileEntry("/p/y.jpg", 1, 1), "b" * 64)]) == 0
    assert catalog.known_files() == {}
    with Index(test_settings) as index:
        index.store.catalog.add_images([EmbeddedImage("b" * 64, 64, 64, np.zeros(4))])
        with pytest.raises(RuntimeError, match="not yet embedded"):
            index.store.link_files([(FileEntry("/p/y.jpg", 1, 1), "b" * 64)])
