"""The catalog: everything of a database except the vectors, in one SQLite file (`irs.sqlite`).

Tables: files (path -> content hash), images (one row per distinct content, with its embedded and
segmented marks), image_vectors (a copy of each image's whole-image vector: search reads a few hundred per
query, 4x faster here than from Chroma), segments (box, centre, area, scores, run-length mask), errors (files
not indexed), folders (indexed folders, for the app), manifest (the database's id and index settings).

The schema has a version (`PRAGMA user_version`); opening a database written by an older irs upgrades
it in place, one step at a time (`UPGRADES`), and a database written by a newer irs is refused with a
message. Reads return named rows (`sqlite3.Row`) turned into the dataclasses below.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irs.pipeline import chunks
from irs.records import BadFile, EmbeddedImage, FileEntry, ImageRow, Segment, SegmentedImage
from irs.version import __version__

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
CREATE INDEX files_sha ON files (sha256);
CREATE TABLE images (
    sha256 TEXT PRIMARY KEY, width INTEGER, height INTEGER,
    embedded INTEGER NOT NULL DEFAULT 0, segmented INTEGER NOT NULL DEFAULT 0);
CREATE TABLE image_vectors (sha256 TEXT PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE segments (
    sha256 TEXT NOT NULL, idx INTEGER NOT NULL,
    x0 REAL, y0 REAL, x1 REAL, y1 REAL, cx REAL, cy REAL, area REAL,
    predicted_iou REAL, stability_score REAL, mask BLOB, mask_h INTEGER, mask_w INTEGER,
    PRIMARY KEY (sha256, idx));
CREATE TABLE errors (path TEXT PRIMARY KEY, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE folders (path TEXT PRIMARY KEY, at REAL NOT NULL);
"""
SEGMENT_COLUMNS = "idx, x0, y0, x1, y1, cx, cy, area, predicted_iou, stability_score, mask, mask_h, mask_w"
ORPHAN_IMAGES = "SELECT sha256 FROM images WHERE sha256 NOT IN (SELECT sha256 FROM files)"
IN_CHUNK = 500  # ids per `IN (...)` list: well under SQLite's limit on bound parameters


def _upgrade_to_1(sql: sqlite3.Connection) -> None:
    """Schema 0 (irs before schema versions) -> 1: the stability column takes the Segment field's name."""
    sql.execute("ALTER TABLE segments RENAME COLUMN stability TO stability_score")


def _upgrade_to_2(sql: sqlite3.Connection) -> None:
    """1 -> 2: whole-image vectors are kept in the catalog too (filled from Chroma by Store.copy_image_vectors)."""
    sql.execute("CREATE TABLE IF NOT EXISTS image_vectors (sha256 TEXT PRIMARY KEY, vector BLOB NOT NULL)")


# version -> step from the one before
UPGRADES: dict[int, Callable[[sqlite3.Connection], None]] = {1: _upgrade_to_1, 2: _upgrade_to_2}


class StoreError(RuntimeError):
    """The database cannot be used as it is (damaged, written by a newer irs, or its Chroma server
    unreachable); the message says what happened and what to do."""


class DatabaseMissing(FileNotFoundError):
    """No database where one was expected (search, stats, errors and check never create one)."""


class ManifestMismatch(RuntimeError):
    """The database was built with other index settings; mixing them would corrupt results."""


@dataclass(frozen=True)
class KnownFile:
    """An indexed path: the content it held when indexed, and the size and time that vouch for it."""

    path: str
    sha256: str
    size: int
    mtime_ns: int

    def unchanged(self, entry: FileEntry) -> bool:
        """Whether the file on disk still looks the same (size and modification time)."""
        return (self.size, self.mtime_ns) == (entry.size, entry.mtime_ns)


@dataclass(frozen=True)
class CatalogCounts:
    """Rows in the catalog."""

    files: int
    images: int
    embedded: int
    segmented: int
    segments: int
    errors: int


class Catalog:
    """The SQLite half of a database. Safe to share between threads: one connection, one lock."""

    def __init__(self, path: Path) -> None:
        """Open (creating or upgrading) the catalog at `path`; a damaged or newer one raises StoreError."""
        self.path = path
        self._lock = threading.RLock()
        try:
            self.sql = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self.sql.row_factory = sqlite3.Row
            # a new file only: 8 KiB pages hold three 2 KiB image vectors where 4 KiB pages hold one
            self.sql.execute("PRAGMA page_size=8192")
            self.sql.execute("PRAGMA journal_mode=WAL")
            self.sql.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise StoreError(damaged_message(path, err)) from None

    def _migrate(self) -> None:
        """Create the tables, or bring an older schema up to SCHEMA_VERSION one step at a time."""
        with self.transaction():
            version = self.sql.execute("PRAGMA user_version").fetchone()[0]
            tables = self.sql.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: written by a newer irs (catalog schema {version}; irs {__version__} reads "
                    f"schema {SCHEMA_VERSION} and older). Upgrade irs to use this database"
                )
            if tables == 0:
                for statement in SCHEMA.split(";"):  # not executescript: it would commit the transaction
                    if statement.strip():
                        self.sql.execute(statement)
            else:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    UPGRADES[step](self.sql)
                    log.info("%s: catalog schema upgraded to %d", self.path, step)
            self.sql.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the catalog's lock; ROLLBACK on error."""
        with self._lock:
            self.sql.execute("BEGIN IMMEDIATE")
            try:
                yield self.sql
            except BaseException:
                self.sql.execute("ROLLBACK")
                raise
            self.sql.execute("COMMIT")

    def _rows(self, query: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.sql.execute(query, tuple(params)).fetchall()

    def _rows_in(self, query: str, shas: list[str]) -> list[sqlite3.Row]:
        """Rows of `query`, whose `IN ({})` list is filled with `shas`, in chunks SQLite accepts."""
        rows: list[sqlite3.Row] = []
        for chunk in chunks(shas, IN_CHUNK):
            rows += self._rows(query.format(",".join("?" * len(chunk))), chunk)
        return rows

    # manifest -------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The manifest as written (an empty dict for a new database)."""
        return {row["key"]: json.loads(row["value"]) for row in self._rows("SELECT key, value FROM manifest")}

    def set_manifest(self, values: dict[str, Any]) -> None:
        with self.transaction():
            for key, value in values.items():
                self.sql.execute("INSERT OR REPLACE INTO manifest VALUES (?, ?)", (key, json.dumps(value)))

    # files and images -----------------------------------------------------------------------------
    def known_files(self) -> dict[str, KnownFile]:
        """path -> what was indexed there, for every indexed file."""
        rows = self._rows("SELECT path, sha256, size, mtime_ns FROM files")
        return {row["path"]: KnownFile(**row) for row in rows}

    def is_embedded(self, sha: str) -> bool:
        """Whether an image's whole-image vector is stored."""
        return bool(self._rows("SELECT 1 FROM images WHERE sha256=? AND embedded=1", (sha,)))

    def add_images(self, images: list[EmbeddedImage]) -> None:
        """Rows for new images, not yet marked embedded (known ones are left as they are), with their vectors."""
        rows = [(image.sha256, image.width, image.height) for image in images]
        with self.transaction():
            self.sql.executemany("INSERT OR IGNORE INTO images (sha256, width, height) VALUES (?, ?, ?)", rows)
            self._put_vectors({image.sha256: image.vector for image in images})

    def put_image_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        """Store whole-image vectors (sha256 -> vector) of known images."""
        with self.transaction():
            self._put_vectors(vectors)

    def _put_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        rows = [(sha, np.asarray(vec, np.float32).tobytes()) for sha, vec in vectors.items()]
        self.sql.executemany("INSERT OR REPLACE INTO image_vectors VALUES (?, ?)", rows)

    def image_vectors(self, shas: list[str]) -> dict[str, np.ndarray]:
        """sha256 -> whole-image vector, for the given images whose vector the catalog holds: the vector given to
        Chroma (whose cosine space normalises its own copy again: they may differ in the last bit). Reading
        it here costs a quarter of a Chroma `get` (bench/search_latency.py)."""
        rows = self._rows_in("SELECT sha256, vector FROM image_vectors WHERE sha256 IN ({})", shas)
        return {row["sha256"]: np.frombuffer(row["vector"], np.float32) for row in rows}

    def embedded_without_vectors(self) -> list[str]:
        """Embedded images whose vector only Chroma holds (indexed before the catalog kept a copy)."""
        query = "SELECT sha256 FROM images WHERE embedded=1 AND sha256 NOT IN (SELECT sha256 FROM image_vectors)"
        return [row["sha256"] for row in self._rows(query)]

    def mark(self, column: str, shas: Iterable[str], done: bool) -> None:
        """Set the `embedded` or `segmented` mark of images."""
        if column not in ("embedded", "segmented"):
            raise ValueError(f"no such mark: {column}")
        with self.transaction():
            self.sql.executemany(f"UPDATE images SET {column}=? WHERE sha256=?", [(int(done), s) for s in shas])

    def link_files(self, links: Iterable[tuple[FileEntry, str]]) -> int:
        """Point paths at embedded images and clear their errors; returns how many were linked (a path
        whose image is not embedded is not linked: see the write order in irs.store)."""
        linked = 0
        with self.transaction():
            for entry, sha in links:
                linked += self.sql.execute(
                    "INSERT OR REPLACE INTO files SELECT ?, sha256, ?, ? FROM images WHERE sha256=? AND embedded=1",
                    (entry.path, entry.size, entry.mtime_ns, sha),
                ).rowcount
                self.sql.execute("DELETE FROM errors WHERE path=?", (entry.path,))
        return linked

    def forget_paths(self, paths: Iterable[str]) -> None:
        """Drop file rows; their images go at the next garbage collection if nothing else refers to them."""
        with self.transaction():
            self.sql.executemany("DELETE FROM files WHERE path=?", [(p,) for p in paths])

    def orphan_images(self) -> list[str]:
        """Images no file refers to."""
        return [row["sha256"] for row in self._rows(ORPHAN_IMAGES)]

    def delete_images(self, shas: list[str]) -> None:
        """Delete image rows and their segment rows."""
        with self.transaction():
            self.sql.executemany("DELETE FROM segments WHERE sha256=?", [(s,) for s in shas])
            self.sql.executemany("DELETE FROM images WHERE sha256=?", [(s,) for s in shas])
            self.sql.executemany("DELETE FROM image_vectors WHERE sha256=?", [(s,) for s in shas])

    def pending_segmentation(self) -> list[str]:
        """Embedded images still waiting for segments (in a stable order)."""
        rows = self._rows(
            "SELECT sha256 FROM images WHERE embedded=1 AND segmented=0 "
            "AND sha256 IN (SELECT sha256 FROM files) ORDER BY sha256"
        )
        return [row["sha256"] for row in rows]

    def unembedded_files(self) -> list[FileEntry]:
        """Files whose image has no vector (after a repair): the indexer embeds them again."""
        rows = self._rows(
            "SELECT f.path, f.size, f.mtime_ns FROM files f JOIN images i ON f.sha256 = i.sha256 "
            "WHERE i.embedded = 0 ORDER BY f.path"
        )
        return [FileEntry(**row) for row in rows]

    def paths_of(self, shas: Iterable[str]) -> dict[str, list[str]]:
        """sha256 -> its file paths, sorted."""
        shas = list(shas)
        out: dict[str, list[str]] = {sha: [] for sha in shas}
        for row in self._rows_in("SELECT path, sha256 FROM files WHERE sha256 IN ({}) ORDER BY path", shas):
            out[row["sha256"]].append(row["path"])
        return out

    def image_count(self) -> int:
        """Indexed images (distinct contents that some file holds)."""
        return int(self._rows("SELECT COUNT(DISTINCT sha256) AS n FROM files")[0]["n"])

    def image_page(self, offset: int, limit: int) -> list[ImageRow]:
        """Indexed images with their first path, in path order, for browsing."""
        rows = self._rows(
            "SELECT sha256, MIN(path) AS path FROM files GROUP BY sha256 ORDER BY path LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [ImageRow(**row) for row in rows]

    # segments -------------------------------------------------------------------------------------
    def replace_segments(self, images: list[SegmentedImage]) -> None:
        """Write the segment rows of several images, replacing what they had."""
        rows = [
            (
                im.sha256,
                s.index,
                *s.bbox,
                *s.centroid,
                s.area,
                s.predicted_iou,
                s.stability_score,
                s.mask_rle,
                *s.mask_shape,
            )
            for im in images
            for s in im.segments
        ]
        with self.transaction():
            self.sql.executemany("DELETE FROM segments WHERE sha256=?", [(im.sha256,) for im in images])
            self.sql.executemany(f"INSERT INTO segments (sha256, {SEGMENT_COLUMNS}) VALUES ({'?, ' * 13}?)", rows)

    def delete_segments(self, shas: list[str]) -> None:
        with self.transaction():
            self.sql.executemany("DELETE FROM segments WHERE sha256=?", [(sha,) for sha in shas])

    def segments_of(self, sha: str) -> list[Segment]:
        """An image's segments with masks, best first."""
        rows = self._rows(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE sha256=? ORDER BY idx", (sha,))
        return [_segment(row) for row in rows]

    def segment(self, sha: str, idx: int) -> Segment | None:
        """One stored segment with its mask."""
        rows = self._rows(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE sha256=? AND idx=?", (sha, idx))
        return _segment(rows[0]) if rows else None

    def image_size(self, sha: str) -> tuple[int, int] | None:
        """An image's original (width, height), or None when it is not in the catalog."""
        rows = self._rows("SELECT width, height FROM images WHERE sha256=?", (sha,))
        return (int(rows[0]["width"]), int(rows[0]["height"])) if rows and rows[0]["width"] else None

    def segment_count(self, shas: Iterable[str]) -> dict[str, int]:
        """sha256 -> how many segment rows it has."""
        shas = list(shas)
        out = dict.fromkeys(shas, 0)
        query = "SELECT sha256, COUNT(*) AS n FROM segments WHERE sha256 IN ({}) GROUP BY sha256"
        for row in self._rows_in(query, shas):
            out[row["sha256"]] = row["n"]
        return out

    # what the vectors should be: for comparing with Chroma ----------------------------------------
    def image_ids(self, embedded_only: bool) -> set[str]:
        where = " WHERE embedded=1" if embedded_only else ""
        return {row["sha256"] for row in self._rows("SELECT sha256 FROM images" + where)}

    def segment_rows(self) -> list[tuple[str, int, bool | None]]:
        """(image, segment index, whether the image is marked segmented; None for an unknown image)."""
        rows = self._rows(
            "SELECT s.sha256, s.idx, i.segmented FROM segments s LEFT JOIN images i ON s.sha256 = i.sha256"
        )
        return [(r["sha256"], r["idx"], None if r["segmented"] is None else bool(r["segmented"])) for r in rows]

    def delete_unknown_segments(self) -> None:
        """Segment rows of images the catalog does not know."""
        with self.transaction():
            self.sql.execute("DELETE FROM segments WHERE sha256 NOT IN (SELECT sha256 FROM images)")

    def counts(self) -> CatalogCounts:
        row = self._rows(
            "SELECT (SELECT COUNT(*) FROM files) AS files, COUNT(*) AS images, "
            "COALESCE(SUM(embedded), 0) AS embedded, COALESCE(SUM(segmented), 0) AS segmented, "
            "(SELECT COUNT(*) FROM segments) AS segments, (SELECT COUNT(*) FROM errors) AS errors FROM images"
        )[0]
        return CatalogCounts(**row)

    def done_segment_count(self) -> int:
        """Segment rows of images marked segmented: how many segment vectors Chroma should hold."""
        query = "SELECT COUNT(*) AS n FROM segments WHERE sha256 IN (SELECT sha256 FROM images WHERE segmented=1)"
        return int(self._rows(query)[0]["n"])

    # errors and folders ---------------------------------------------------------------------------
    def record_errors(self, bad: Iterable[BadFile]) -> None:
        now = time.time()
        with self.transaction():
            self.sql.executemany(
                "INSERT OR REPLACE INTO errors VALUES (?, ?, ?)", [(b.path, b.reason, now) for b in bad]
            )

    def clear_errors(self, paths: Iterable[str]) -> None:
        with self.transaction():
            self.sql.executemany("DELETE FROM errors WHERE path=?", [(p,) for p in paths])

    def errors(self) -> list[BadFile]:
        """Files that could not be indexed, by path."""
        return [BadFile(**row) for row in self._rows("SELECT path, reason FROM errors ORDER BY path")]

    def remember_folder(self, path: str) -> None:
        with self.transaction():
            self.sql.execute("INSERT OR REPLACE INTO folders VALUES (?, ?)", (path, time.time()))

    def recent_folders(self, limit: int = -1) -> list[str]:
        """Indexed folders, most recent first (all of them unless `limit`)."""
        return [row["path"] for row in self._rows("SELECT path FROM folders ORDER BY at DESC LIMIT ?", (limit,))]

    def close(self) -> None:
        with self._lock:
            self.sql.close()


def _segment(row: sqlite3.Row) -> Segment:
    return Segment(
        bbox=(row["x0"], row["y0"], row["x1"], row["y1"]),
        centroid=(row["cx"], row["cy"]),
        area=row["area"],
        mask_rle=row["mask"],
        mask_shape=(row["mask_h"], row["mask_w"]),
        predicted_iou=row["predicted_iou"],
        stability_score=row["stability_score"],
        index=row["idx"],
    )


def damaged_message(path: Path, err: Exception) -> str:
    """What to say when SQLite refuses the catalog."""
    db = path.parent
    return (
        f"{path}: the catalog is damaged (SQLite says: {err}). Rebuild it: move the database folder aside "
        f"(mv {db} {db}.damaged) and index your folders again with --db {db}; your judgments are in "
        f"{db / 'judgments.sqlite'} and can be copied back"
    )
