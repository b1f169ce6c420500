"""Segment positions in memory: every segment's image, box, centre and area as numpy columns, read from the
catalog once and kept current, so that a search looks up the positions of a pool of segment ids in one
vectorised step instead of asking Chroma for their metadata (which costs 5-7x the vector query itself).

Kept current across processes: the table's own SQLite connection sees `PRAGMA data_version` change after
any other connection commits (free to ask). Only then does it read the segments table's signature: its
largest rowid (SQLite gives a new row a rowid above every existing one, so every insert raises it) and a
count of deleted rows kept by a trigger (`irs_segment_deletions`). Rows only added: they are appended.
Rows deleted (a re-segmented or removed image): the table is read again. A rowid that a delete freed can
be given out again, so the maximum alone could miss a replaced last image; the deletion count cannot.

A snapshot is immutable: a search holds one from start to end while a refresh builds the next.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from irs.records import Segment

IDX_BITS = 20  # a segment's key: image number << IDX_BITS | its index (a million segments per image)
COLUMNS = "rowid, sha256, idx, x0, y0, x1, y1, cx, cy, area"
DELETIONS = """
CREATE TABLE IF NOT EXISTS irs_segment_deletions (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
INSERT OR IGNORE INTO irs_segment_deletions VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS irs_segment_deleted AFTER DELETE ON segments
BEGIN UPDATE irs_segment_deletions SET n = n + 1 WHERE id = 0; END;
"""


def has_deletion_counter(sql: sqlite3.Connection) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type='trigger' AND name='irs_segment_deleted'"
    return sql.execute(query).fetchone() is not None


def install_deletion_counter(sql: sqlite3.Connection) -> None:
    """Create the deletion counter and its trigger (inside the caller's write transaction)."""
    for statement in DELETIONS.split(";\n"):
        if statement.strip():
            sql.execute(statement)


@dataclass(frozen=True)
class Positions:
    """One consistent view of every segment's position. Rows are sorted by key (image number, index)."""

    shas: list[str]  # image number -> sha256
    numbers: dict[str, int]  # sha256 -> image number
    keys: np.ndarray  # int64, sorted
    columns: np.ndarray  # float64, rows x 7: x0, y0, x1, y1, cx, cy, area
    max_rowid: int
    deletions: int

    def rows(self, ids: list[str]) -> np.ndarray:
        """The row of each "sha256:index" id; -1 where the catalog has no such segment."""
        numbers = np.array([self.numbers.get(i.rpartition(":")[0], -1) for i in ids], np.int64)
        idx = np.array([int(i.rpartition(":")[2]) for i in ids], np.int64)
        if not len(self.keys):
            return np.full(len(ids), -1, np.int64)
        wanted = (numbers << IDX_BITS) | idx
        at = np.searchsorted(self.keys, wanted).clip(max=len(self.keys) - 1)
        return np.where((numbers >= 0) & (self.keys[at] == wanted), at, -1)

    def segment(self, row: int) -> Segment:
        """The segment (position only, no mask) of one row."""
        x0, y0, x1, y1, cx, cy, area = self.columns[row].tolist()
        index = int(self.keys[row] & ((1 << IDX_BITS) - 1))
        return Segment(
            bbox=(x0, y0, x1, y1), centroid=(cx, cy), area=area, mask_rle=b"", mask_shape=(0, 0), index=index
        )

    def segments(self, rows: np.ndarray | range) -> list[Segment]:
        """The segments (positions only, no masks) of several rows, read in one step."""
        rows = np.asarray(rows, np.int64)
        columns = self.columns[rows].tolist()
        indices = (self.keys[rows] & ((1 << IDX_BITS) - 1)).tolist()
        return [
            Segment(bbox=(x0, y0, x1, y1), centroid=(cx, cy), area=area, mask_rle=b"", mask_shape=(0, 0), index=i)
            for (x0, y0, x1, y1, cx, cy, area), i in zip(columns, indices)
        ]

    def image_rows(self, sha: str) -> range:
        """An image's rows, by index (empty when it has none)."""
        starts, ends = self.image_spans([sha])
        return range(int(starts[0]), int(ends[0]))

    def image_spans(self, shas: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each image's first row and the row after its last, for many images in one step (equal when it has
        none; an image the catalog does not list counts as number -1, before every key)."""
        numbers = np.array([self.numbers.get(sha, -1) for sha in shas], np.int64)
        return np.searchsorted(self.keys, numbers << IDX_BITS), np.searchsorted(self.keys, (numbers + 1) << IDX_BITS)


@dataclass(frozen=True)
class SegmentPool:
    """The segments a vector query found that the catalog lists, best first, as rows of one positions snapshot:
    columns, not objects, because a search reads hundreds of hits and scores a few (`segments` makes those)."""

    positions: Positions
    rows: np.ndarray  # int64: each hit's row in `positions`
    similarities: np.ndarray  # float64: each hit's similarity to the query
    returned: np.ndarray  # the similarities of everything the query returned, listed or not, best first

    def by_image(self) -> tuple[list[str], list[np.ndarray]]:
        """The images hit, and each one's hits (numbers into this pool, best first)."""
        if not len(self.rows):
            return [], []
        numbers = self.positions.keys[self.rows] >> IDX_BITS
        order = np.argsort(numbers, kind="stable")  # stable: an image's hits stay best first
        ranked = numbers[order]
        starts = np.flatnonzero(np.diff(ranked, prepend=-1))
        return [self.positions.shas[n] for n in ranked[starts].tolist()], np.split(order, starts[1:])

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """Every hit's centre (x, y)."""
        return self.positions.columns[self.rows, 4], self.positions.columns[self.rows, 5]

    def segments(self, hits: np.ndarray) -> list[Segment]:
        """The segments (positions only, no masks) of some hits."""
        return self.positions.segments(self.rows[hits])


class PositionTable:
    """The positions of a catalog's segments, refreshed when the catalog changes (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # one refresh at a time; readers use the snapshot they were given
        self._sql: sqlite3.Connection | None = None
        self._version: int | None = None
        self._current = Positions([], {}, np.zeros(0, np.int64), np.zeros((0, 7)), 0, -1)
        self.reloads = 0  # full reads of the table, for tests and benchmarks

    def current(self) -> Positions:
        """The positions as the catalog has them now."""
        with self._lock:
            sql = self._connection()
            version = sql.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._current = self._refreshed(sql, self._current)
                self._version = version
            return self._current

    def data_version(self) -> int:
        """A number that changes whenever the catalog is committed to, by any connection or process."""
        with self._lock:
            return int(self._connection().execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._sql is not None:
                self._sql.close()
                self._sql = None

    def _connection(self) -> sqlite3.Connection:
        if self._sql is None:
            self._sql = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        return self._sql

    def _refreshed(self, sql: sqlite3.Connection, old: Positions) -> Positions:
        # one read transaction: the signature and the rows it describes come from the same moment
        sql.execute("BEGIN")
        try:
            max_rowid = sql.execute("SELECT COALESCE(MAX(rowid), 0) FROM segments").fetchone()[0]
            deletions = _deletions(sql, old)
            if (max_rowid, deletions) == (old.max_rowid, old.deletions):
                return old
            if deletions == old.deletions:  # only added: read the new rows
                added = sql.execute(f"SELECT {COLUMNS} FROM segments WHERE rowid > ?", (old.max_rowid,)).fetchall()
                return _with_rows(old, added, max_rowid, deletions)
            self.reloads += 1
            rows = sql.execute(f"SELECT {COLUMNS} FROM segments").fetchall()
            empty = Positions([], {}, np.zeros(0, np.int64), np.zeros((0, 7)), 0, deletions)
            return _with_rows(empty, rows, max_rowid, deletions)
        finally:
            sql.execute("COMMIT")


def _deletions(sql: sqlite3.Connection, old: Positions) -> int:
    """The deletion count; without the counter (a database this irs could not write to), a value that
    differs from the last, so that every change reads the table again."""
    try:
        return int(sql.execute("SELECT n FROM irs_segment_deletions").fetchone()[0])
    except sqlite3.OperationalError:
        return old.deletions - 1


def _with_rows(old: Positions, rows: list[tuple], max_rowid: int, deletions: int) -> Positions:
    """`old` with catalog rows (rowid, sha256, idx, x0, y0, x1, y1, cx, cy, area) added."""
    shas, numbers = list(old.shas), dict(old.numbers)
    for row in rows:
        if row[1] not in numbers:
            numbers[row[1]] = len(shas)
            shas.append(row[1])
    keys = np.array([(numbers[r[1]] << IDX_BITS) | r[2] for r in rows], np.int64)
    columns = np.array([r[3:] for r in rows], np.float64).reshape(len(rows), 7)
    keys, columns = np.concatenate([old.keys, keys]), np.concatenate([old.columns, columns])
    order = np.argsort(keys, kind="stable")
    return Positions(shas, numbers, keys[order], columns[order], max_rowid, deletions)
