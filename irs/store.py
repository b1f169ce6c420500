"""Store: vectors in Chroma (one collection for whole images, one for segments), everything else in
SQLite beside it (files, image state, segment masks, errors, the manifest).

Write order makes every step safe to kill: a SQLite row marked pending is committed first, then the
vectors go to Chroma (upserts, so repeating them is harmless), then the row is marked done. A rerun
redoes pending work; `collect_garbage` deletes whatever no file refers to any more.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from irs import __version__
from irs.locks import open_lock
from irs.records import BadFile, FileEntry, ImageRow, Segment
from irs.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS files_sha ON files (sha256);
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY, width INTEGER, height INTEGER,
    embedded INTEGER NOT NULL DEFAULT 0, segmented INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS segments (
    sha256 TEXT NOT NULL, idx INTEGER NOT NULL,
    x0 REAL, y0 REAL, x1 REAL, y1 REAL, cx REAL, cy REAL, area REAL,
    predicted_iou REAL, stability REAL, mask BLOB, mask_h INTEGER, mask_w INTEGER,
    PRIMARY KEY (sha256, idx));
CREATE TABLE IF NOT EXISTS errors (path TEXT PRIMARY KEY, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS folders (path TEXT PRIMARY KEY, at REAL NOT NULL);
"""


ORPHAN_IMAGES = "SELECT sha256 FROM images WHERE sha256 NOT IN (SELECT sha256 FROM files)"
SEGMENT_CACHE = 20_000  # images whose segment vectors stay in memory for rescoring (LRU)


class ManifestMismatch(RuntimeError):
    """The database was built with other index settings; mixing them would corrupt results."""


class StoreError(RuntimeError):
    """The database cannot be used as it is (damaged, or its Chroma server unreachable); the message says
    what happened and what to do."""


class DatabaseMissing(FileNotFoundError):
    """No database where one was expected (search, stats, errors and check never create one)."""


@dataclass
class Consistency:
    """How SQLite (the catalog) and Chroma (the vectors) disagree; empty lists mean they agree."""

    missing_images: list[str] = field(default_factory=list)  # embedded per SQLite, no vector in Chroma
    extra_images: list[str] = field(default_factory=list)  # vectors of images SQLite does not know
    missing_segments: list[str] = field(default_factory=list)  # images whose segment vectors are incomplete
    extra_segments: list[str] = field(default_factory=list)  # segment vectors with no row
    orphan_images: list[str] = field(default_factory=list)  # image rows no file refers to
    orphan_segment_rows: int = 0  # segment rows of unknown images

    @property
    def ok(self) -> bool:
        return not (
            self.missing_images
            or self.extra_images
            or self.missing_segments
            or self.extra_segments
            or self.orphan_images
            or self.orphan_segment_rows
        )

    def __str__(self) -> str:
        if self.ok:
            return "SQLite and Chroma agree"
        parts = [
            (len(self.missing_images), "image vectors missing"),
            (len(self.extra_images), "image vectors with no image"),
            (len(self.missing_segments), "images with segment vectors missing"),
            (len(self.extra_segments), "segment vectors with no segment"),
            (len(self.orphan_images), "images no file refers to"),
            (self.orphan_segment_rows, "segment rows of unknown images"),
        ]
        return ", ".join(f"{n:,} {what}" for n, what in parts if n)


@dataclass(frozen=True)
class Stats:
    """What a database holds: catalog counts, vectors in Chroma, its size on disk, its model."""

    files: int  # indexed paths
    images: int  # distinct contents (copies share one)
    embedded: int
    segmented: int
    segments: int
    errors: int  # files listed as not indexed
    image_vectors: int
    segment_vectors: int
    disk_bytes: int
    model: str
    segmenter: str

    def to_json(self) -> dict[str, Any]:
        """The `stats` command's output."""
        return asdict(self)


@dataclass(frozen=True)
class SegmentHit:
    """A segment returned by a vector query, with its similarity to the query."""

    sha256: str
    segment: Segment
    similarity: float


def segment_id(sha: str, idx: int) -> str:
    return f"{sha}:{idx}"


def _segment_from_meta(meta: dict[str, Any]) -> Segment:
    return Segment(
        bbox=(meta["x0"], meta["y0"], meta["x1"], meta["y1"]),
        centroid=(meta["cx"], meta["cy"]),
        area=meta["area"],
        mask_rle=b"",
        mask_shape=(0, 0),
        index=int(meta["idx"]),
    )


def _segment_from_row(r: tuple) -> Segment:
    return Segment(
        bbox=(r[1], r[2], r[3], r[4]),
        centroid=(r[5], r[6]),
        area=r[7],
        mask_rle=r[10],
        mask_shape=(r[11], r[12]),
        predicted_iou=r[8],
        stability_score=r[9],
        index=r[0],
    )


class Store:
    """One irs database: a folder with `irs.sqlite` and (unless a server is used) `chroma/`."""

    def __init__(self, settings: Settings, create: bool = True) -> None:
        """Open the database in `settings.db`; with create=False a missing one raises DatabaseMissing."""
        self.root = Path(settings.db)
        if not create and not (self.root / "irs.sqlite").is_file():
            raise DatabaseMissing(
                f"no irs database at {self.root}: index a folder first (python -m irs index FOLDER --db {self.root})"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._segment_cache: OrderedDict[str, list[tuple[Segment, np.ndarray]]] = OrderedDict()
        self.chroma_where = f"{settings.chroma_host}:{settings.chroma_port}" if settings.chroma_host else ""
        self.retry_seconds = settings.chroma_retry_seconds
        # several processes may create the same new database at once: one at a time builds the tables
        with open_lock(self.root):
            self.sql = _open_sqlite(self.root / "irs.sqlite")
            self._check_manifest(settings)
            try:
                self._open_chroma(settings)
            except (StoreError, ManifestMismatch):
                raise
            except Exception as err:
                if self.chroma_where:
                    raise
                raise StoreError(
                    f"{self.root / 'chroma'}: the vector store cannot be opened ({type(err).__name__}: {err}). "
                    f"Move it aside (mv {self.root / 'chroma'} {self.root / 'chroma.damaged'}), then run "
                    f"python -m irs check --repair --db {self.root} to rebuild the vectors from the images"
                ) from None

    def _open_chroma(self, settings: Settings) -> None:
        self.chroma = self._retry(lambda: _chroma_client(settings, self.root))
        self.batch_limit = self._retry(self.chroma.get_max_batch_size)
        prefix = f"irs-{self.manifest['db_id'][:12]}"
        hnsw = {"hnsw": {"space": "cosine"}}
        self.images = _Retrying(self, self._collection(f"{prefix}-images", hnsw))
        self.segments = _Retrying(self, self._collection(f"{prefix}-segments", hnsw))

    def _collection(self, name: str, configuration: dict[str, Any]) -> Any:
        return self._retry(
            lambda: self.chroma.get_or_create_collection(name, embedding_function=None, configuration=configuration)
        )

    def _retry(self, call: Callable[[], T]) -> T:
        """Run a Chroma call; while a Chroma *server* is unreachable, retry with backoff for
        `chroma_retry_seconds`, then raise StoreError with one line saying what to do.

        Retrying is safe because every call irs makes is idempotent: creating the client, get-or-create
        of a collection, upserts and deletes by id, and reads. A request the server applied but died
        before answering is simply applied again."""
        delay, started, failed = 0.2, time.monotonic(), None
        while True:
            try:
                result = call()
            except Exception as err:
                cause = _transport_error(err) if self.chroma_where else None
                if cause is None:
                    raise
                first, failed = failed is None, f"{type(cause).__name__}: {cause}"
                if time.monotonic() + delay > started + self.retry_seconds:
                    host, _, port = self.chroma_where.rpartition(":")
                    raise StoreError(
                        f"the Chroma server at {self.chroma_where} is not answering ({failed}); retried for "
                        f"{self.retry_seconds:g} s. Start it (chroma run --path PATH --host {host} --port {port}) "
                        "and run the command again: indexing resumes where it stopped"
                    ) from None
                if first:
                    log.warning(
                        "Chroma server at %s not answering (%s); retrying for %g s",
                        self.chroma_where,
                        failed,
                        self.retry_seconds,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if failed is not None:
                log.warning(
                    "Chroma server at %s answering again after %.1f s", self.chroma_where, time.monotonic() - started
                )
            return result

    # manifest -----------------------------------------------------------------------------------
    def _check_manifest(self, settings: Settings) -> None:
        rows = dict(self.sql.execute("SELECT key, value FROM manifest"))
        wanted = settings.index_fingerprint()
        if not rows:
            manifest = {"db_id": uuid.uuid4().hex, "irs_version": __version__, "settings": wanted}
            with self.transaction():
                for key, value in manifest.items():
                    self.sql.execute("INSERT INTO manifest VALUES (?, ?)", (key, json.dumps(value)))
            self.manifest = manifest
            return
        self.manifest = {k: json.loads(v) for k, v in rows.items()}
        stored = self.manifest["settings"]
        diffs = [
            f"{name}: database has {stored.get(name)!r}, asked for {wanted[name]!r}"
            for name in wanted
            if stored.get(name) != wanted[name]
        ]
        if diffs:
            raise ManifestMismatch(
                f"{self.root} was built with other index settings, and irs never mixes them:\n  "
                + "\n  ".join(diffs)
                + "\nUse the database's settings (see irs.toml in it) or choose a new --db."
            )

    def check_dimension(self, dim: int) -> None:
        """Record the embedding size on first use; refuse a model that gives another."""
        stored = self.manifest.get("dim")
        if stored is None:
            with self.transaction():
                self.sql.execute("INSERT OR REPLACE INTO manifest VALUES ('dim', ?)", (json.dumps(dim),))
            self.manifest["dim"] = dim
        elif stored != dim:
            raise ManifestMismatch(f"{self.root}: vectors are {stored}-d, this model gives {dim}-d")

    # transactions -------------------------------------------------------------------------------
    def transaction(self) -> _Transaction:
        return _Transaction(self)

    # files and images ---------------------------------------------------------------------------
    def known_files(self) -> dict[str, tuple[str, int, int]]:
        """path -> (sha256, size, mtime_ns) for every indexed file."""
        with self._lock:
            rows = self.sql.execute("SELECT path, sha256, size, mtime_ns FROM files").fetchall()
        return {p: (s, size, m) for p, s, size, m in rows}

    def image_state(self, sha: str) -> tuple[bool, bool] | None:
        """(embedded, segmented) for an image, or None if unknown."""
        with self._lock:
            row = self.sql.execute("SELECT embedded, segmented FROM images WHERE sha256=?", (sha,)).fetchone()
        return None if row is None else (bool(row[0]), bool(row[1]))

    def link_files(self, links: Iterable[tuple[FileEntry, str]]) -> None:
        """Point file paths at image identities (the image must already be embedded)."""
        with self.transaction():
            for entry, sha in links:
                self.sql.execute(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", (entry.path, sha, entry.size, entry.mtime_ns)
                )
                self.sql.execute("DELETE FROM errors WHERE path=?", (entry.path,))

    def add_images(self, rows: list[tuple[str, int, int]], vectors: np.ndarray) -> None:
        """Store whole-image vectors for (sha256, width, height) rows."""
        if not rows:
            return
        with self.transaction():
            self.sql.executemany("INSERT OR IGNORE INTO images (sha256, width, height) VALUES (?, ?, ?)", rows)
        for start in range(0, len(rows), self.batch_limit):
            chunk = rows[start : start + self.batch_limit]
            self.images.upsert(
                ids=[r[0] for r in chunk],
                embeddings=vectors[start : start + len(chunk)],
                metadatas=[{"width": r[1], "height": r[2]} for r in chunk],
            )
        with self.transaction():
            self.sql.executemany("UPDATE images SET embedded=1 WHERE sha256=?", [(r[0],) for r in rows])

    def pending_segmentation(self) -> list[str]:
        """Embedded images still waiting for segments (in a stable order)."""
        with self._lock:
            rows = self.sql.execute(
                "SELECT sha256 FROM images WHERE embedded=1 AND segmented=0 "
                "AND sha256 IN (SELECT sha256 FROM files) ORDER BY sha256"
            ).fetchall()
        return [r[0] for r in rows]

    def paths_of(self, shas: Iterable[str]) -> dict[str, list[str]]:
        """sha256 -> its file paths, sorted."""
        shas = list(shas)
        out: dict[str, list[str]] = {sha: [] for sha in shas}
        for path, sha in self._select_in("SELECT path, sha256 FROM files WHERE sha256 IN ({}) ORDER BY path", shas):
            out[sha].append(path)
        return out

    def _select_in(self, query: str, shas: list[str]) -> list[tuple]:
        """Rows of `query`, whose IN list is filled with `shas`, in chunks SQLite accepts."""
        rows: list[tuple] = []
        with self._lock:
            for start in range(0, len(shas), 500):
                chunk = shas[start : start + 500]
                rows += self.sql.execute(query.format(",".join("?" * len(chunk))), chunk).fetchall()
        return rows

    # segments -----------------------------------------------------------------------------------
    def add_segments(self, sha: str, segments: list[Segment], vectors: np.ndarray) -> None:
        """Replace one image's segments."""
        self.add_segments_many([(sha, segments, vectors)])

    def add_segments_many(self, items: list[tuple[str, list[Segment], np.ndarray]]) -> None:
        """Replace the segments of several images: rows first, then vectors in large Chroma batches, then
        the done marks. One call per batch of images, not per image: Chroma's cost is mostly per call."""
        self._drop_segments([sha for sha, _, _ in items])
        with self.transaction():
            self.sql.executemany(
                "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        sha,
                        s.index,
                        *s.bbox,
                        *s.centroid,
                        s.area,
                        s.predicted_iou,
                        s.stability_score,
                        s.mask_rle,
                        s.mask_shape[0],
                        s.mask_shape[1],
                    )
                    for sha, segments, _ in items
                    for s in segments
                ],
            )
        ids, metas, vecs = [], [], []
        for sha, segments, vectors in items:
            for s, v in zip(segments, vectors):
                ids.append(segment_id(sha, s.index))
                metas.append(
                    {
                        "image": sha,
                        "idx": s.index,
                        "x0": s.bbox[0],
                        "y0": s.bbox[1],
                        "x1": s.bbox[2],
                        "y1": s.bbox[3],
                        "cx": s.centroid[0],
                        "cy": s.centroid[1],
                        "area": s.area,
                    }
                )
                vecs.append(v)
        for start in range(0, len(ids), self.batch_limit):
            end = start + self.batch_limit
            self.segments.upsert(ids=ids[start:end], embeddings=np.asarray(vecs[start:end]), metadatas=metas[start:end])
        with self.transaction():
            self.sql.executemany("UPDATE images SET segmented=1 WHERE sha256=?", [(sha,) for sha, _, _ in items])

    def _drop_segments(self, shas: list[str]) -> None:
        """Delete images' segments: vectors first, then rows (a kill in between leaves rows a rerun redoes)."""
        with self._lock:
            for sha in shas:
                self._segment_cache.pop(sha, None)
        counts = self.segment_count(shas)
        ids = [segment_id(sha, i) for sha in shas for i in range(counts[sha])]
        for start in range(0, len(ids), self.batch_limit):
            self.segments.delete(ids=ids[start : start + self.batch_limit])
        with self.transaction():
            self.sql.executemany("DELETE FROM segments WHERE sha256=?", [(sha,) for sha in shas])

    def segments_of(self, sha: str) -> list[Segment]:
        """An image's segments with masks, best first."""
        with self._lock:
            rows = self.sql.execute(
                "SELECT idx, x0, y0, x1, y1, cx, cy, area, predicted_iou, stability, mask, mask_h, mask_w "
                "FROM segments WHERE sha256=? ORDER BY idx",
                (sha,),
            ).fetchall()
        return [_segment_from_row(r) for r in rows]

    def segment(self, sha: str, idx: int) -> Segment | None:
        """One stored segment with its mask."""
        with self._lock:
            r = self.sql.execute(
                "SELECT idx, x0, y0, x1, y1, cx, cy, area, predicted_iou, stability, mask, mask_h, mask_w "
                "FROM segments WHERE sha256=? AND idx=?",
                (sha, idx),
            ).fetchone()
        return None if r is None else _segment_from_row(r)

    def segment_count(self, shas: Iterable[str]) -> dict[str, int]:
        """sha256 -> how many segments it has."""
        shas = list(shas)
        out = dict.fromkeys(shas, 0)
        query = "SELECT sha256, COUNT(*) FROM segments WHERE sha256 IN ({}) GROUP BY sha256"
        for sha, n in self._select_in(query, shas):
            out[sha] = n
        return out

    # removal ------------------------------------------------------------------------------------
    def forget_paths(self, paths: Iterable[str]) -> None:
        """Drop file rows; their images go at the next collect_garbage if nothing else refers to them."""
        with self.transaction():
            self.sql.executemany("DELETE FROM files WHERE path=?", [(p,) for p in paths])

    def collect_garbage(self) -> int:
        """Delete images (vectors, segments, rows) that no file refers to. Returns how many."""
        with self._lock:
            orphans = [r[0] for r in self.sql.execute(ORPHAN_IMAGES)]
        if not orphans:
            return 0
        self._drop_segments(orphans)
        for start in range(0, len(orphans), self.batch_limit):
            self.images.delete(ids=orphans[start : start + self.batch_limit])
        with self.transaction():
            self.sql.executemany("DELETE FROM images WHERE sha256=?", [(s,) for s in orphans])
        return len(orphans)

    # errors -------------------------------------------------------------------------------------
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
        with self._lock:
            rows = self.sql.execute("SELECT path, reason FROM errors ORDER BY path").fetchall()
        return [BadFile(p, r) for p, r in rows]

    # folders ----------------------------------------------------------------------------------
    def remember_folder(self, path: str) -> None:
        with self.transaction():
            self.sql.execute("INSERT OR REPLACE INTO folders VALUES (?, ?)", (path, time.time()))

    def recent_folders(self, limit: int = 10) -> list[str]:
        with self._lock:
            rows = self.sql.execute("SELECT path FROM folders ORDER BY at DESC LIMIT ?", (limit,)).fetchall()
        return [r[0] for r in rows]

    def image_page(self, offset: int, limit: int) -> list[ImageRow]:
        """Indexed images with their first path, in path order, for browsing."""
        with self._lock:
            rows = self.sql.execute(
                "SELECT sha256, MIN(path) AS p FROM files GROUP BY sha256 ORDER BY p LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [ImageRow(sha, path) for sha, path in rows]

    def segment_vector(self, sha: str, idx: int) -> np.ndarray | None:
        res = self._get(self.segments, [segment_id(sha, idx)], ["embeddings"])
        return np.asarray(res["embeddings"][0], np.float32) if res["ids"] else None

    # queries ------------------------------------------------------------------------------------
    def query_images(self, vector: np.ndarray, n: int) -> dict[str, float]:
        """Nearest whole images: sha256 -> cosine similarity."""
        if n <= 0 or self.images.count() == 0:
            return {}
        res = self._query(self.images, vector, n, ["distances"])
        return {i: 1.0 - d for i, d in zip(res["ids"][0], res["distances"][0])}

    def query_segments(self, vector: np.ndarray, n: int) -> list[SegmentHit]:
        """Nearest segments, with their positions (no masks), best first."""
        if n <= 0 or self.segments.count() == 0:
            return []
        res = self._query(self.segments, vector, n, ["distances", "metadatas"])
        return [
            SegmentHit(meta["image"], _segment_from_meta(meta), 1.0 - d)
            for meta, d in zip(res["metadatas"][0], res["distances"][0])
        ]

    def image_vectors(self, shas: list[str]) -> dict[str, np.ndarray]:
        if not shas:
            return {}
        res = self._get(self.images, shas, ["embeddings"])
        return {i: np.asarray(e, np.float32) for i, e in zip(res["ids"], res["embeddings"])}

    def segment_vectors(self, shas: list[str]) -> Iterator[tuple[str, Segment, np.ndarray]]:
        """Every stored segment of the given images with its vector (for rescoring a few candidates).

        Recently fetched images are kept in memory (an LRU of `SEGMENT_CACHE` images), so the rescoring
        of repeated and similar queries reads nothing twice; writes to an image drop its entry."""
        with self._lock:
            cached = {sha: self._segment_cache[sha] for sha in shas if sha in self._segment_cache}
            for sha in cached:
                self._segment_cache.move_to_end(sha)
        missing = [sha for sha in shas if sha not in cached]
        fetched: dict[str, list[tuple[Segment, np.ndarray]]] = {sha: [] for sha in missing}
        counts = self.segment_count(missing)
        ids = [segment_id(s, i) for s in missing for i in range(counts[s])]
        for start in range(0, len(ids), self.batch_limit):
            res = self._get(self.segments, ids[start : start + self.batch_limit], ["embeddings", "metadatas"])
            for meta, vec in zip(res["metadatas"], res["embeddings"]):
                fetched[meta["image"]].append((_segment_from_meta(meta), np.asarray(vec, np.float32)))
        with self._lock:
            for sha, pairs in fetched.items():
                self._segment_cache[sha] = pairs
            while len(self._segment_cache) > SEGMENT_CACHE:
                self._segment_cache.popitem(last=False)
        for sha in shas:
            for segment, vector in cached.get(sha) or fetched.get(sha, []):
                yield sha, segment, vector

    # Reads while another process writes. A local Chroma is written by one process at a time (the
    # writer lock); until that writer flushes, other processes cannot read what it added: a get of a
    # new id fails ("Error finding id") and a query of a collection with nothing flushed fails ("Nothing
    # found on disk"). Searches made meanwhile see what the indexer has flushed, instead of failing.
    def _get(self, collection: Any, ids: list[str], include: list[str]) -> dict[str, list]:
        """collection.get(ids), leaving out ids another process has added but not yet flushed."""
        try:
            res = collection.get(ids=ids, include=include)
            return {"ids": res["ids"], **{key: list(res[key]) for key in include}}
        except Exception as err:
            if not _unflushed(err):
                raise
        if len(ids) <= 1:
            return {"ids": [], **{key: [] for key in include}}
        halves = [self._get(collection, part, include) for part in (ids[: len(ids) // 2], ids[len(ids) // 2 :])]
        return {key: halves[0][key] + halves[1][key] for key in ("ids", *include)}

    def _query(self, collection: Any, vector: np.ndarray, n: int, include: list[str]) -> dict[str, list]:
        """collection.query for one vector; no neighbours while nothing is readable yet."""
        try:
            return collection.query(query_embeddings=[vector], n_results=n, include=include)
        except Exception as err:
            if not _unflushed(err):
                raise
            return {"ids": [[]], **{key: [[]] for key in include}}

    def image_count(self) -> int:
        """Indexed images (cheap: no disk walk, unlike stats())."""
        with self._lock:
            return int(self.sql.execute("SELECT COUNT(DISTINCT sha256) FROM files").fetchone()[0])

    # consistency between SQLite and Chroma -----------------------------------------------------
    def quick_check(self) -> str | None:
        """A cheap comparison of counts (done on every open): a message when Chroma holds fewer vectors
        than SQLite says are stored (a lost or replaced vector store), else None."""
        with self._lock:
            embedded = self.sql.execute("SELECT COUNT(*) FROM images WHERE embedded=1").fetchone()[0]
            segments = self.sql.execute(
                "SELECT COUNT(*) FROM segments WHERE sha256 IN (SELECT sha256 FROM images WHERE segmented=1)"
            ).fetchone()[0]
        have_images, have_segments = self.images.count(), self.segments.count()
        if have_images >= embedded and have_segments >= segments:
            return None
        return (
            f"{self.root}: the vector store holds {have_images:,} image and {have_segments:,} segment vectors, "
            f"the catalog lists {embedded:,} and {segments:,}. Run python -m irs check --repair --db {self.root} "
            "(index does it too) to re-embed what is missing"
        )

    def check(self) -> Consistency:
        """Compare every id both ways (reads every id in Chroma: seconds per million vectors)."""
        with self._lock:
            embedded = {r[0] for r in self.sql.execute("SELECT sha256 FROM images WHERE embedded=1")}
            known = {r[0] for r in self.sql.execute("SELECT sha256 FROM images")}
            rows = self.sql.execute(
                "SELECT s.sha256, s.idx, i.segmented FROM segments s LEFT JOIN images i ON s.sha256 = i.sha256"
            ).fetchall()
            orphans = [r[0] for r in self.sql.execute(ORPHAN_IMAGES)]
        have_images = set(self._all_ids(self.images))
        have_segments = set(self._all_ids(self.segments))
        row_ids = {segment_id(sha, idx) for sha, idx, _ in rows}
        missing_segments = sorted({sha for sha, i, done in rows if done and segment_id(sha, i) not in have_segments})
        return Consistency(
            missing_images=sorted(embedded - have_images),
            extra_images=sorted(have_images - known),
            missing_segments=missing_segments,
            extra_segments=sorted(have_segments - row_ids),
            orphan_images=orphans,
            orphan_segment_rows=sum(1 for _, _, done in rows if done is None),
        )

    def repair(self, found: Consistency) -> None:
        """Make the two stores agree: delete what nothing refers to, and mark images whose vectors are
        missing as not done, so that the next indexing pass (Index.repair, or add_folder) redoes them."""
        for start in range(0, len(found.extra_images), self.batch_limit):
            self.images.delete(ids=found.extra_images[start : start + self.batch_limit])
        for start in range(0, len(found.extra_segments), self.batch_limit):
            self.segments.delete(ids=found.extra_segments[start : start + self.batch_limit])
        with self.transaction():
            self.sql.executemany("UPDATE images SET embedded=0 WHERE sha256=?", [(s,) for s in found.missing_images])
            self.sql.executemany("UPDATE images SET segmented=0 WHERE sha256=?", [(s,) for s in found.missing_segments])
            self.sql.execute("DELETE FROM segments WHERE sha256 NOT IN (SELECT sha256 FROM images)")
        with self._lock:
            self._segment_cache.clear()
        self.collect_garbage()

    def unembedded_files(self) -> list[FileEntry]:
        """Files whose image has no vector (after a repair): the indexer embeds them again."""
        with self._lock:
            rows = self.sql.execute(
                "SELECT f.path, f.size, f.mtime_ns FROM files f JOIN images i ON f.sha256 = i.sha256 "
                "WHERE i.embedded = 0 ORDER BY f.path"
            ).fetchall()
        return [FileEntry(path, size, mtime) for path, size, mtime in rows]

    def _all_ids(self, collection: Any) -> Iterator[str]:
        offset = 0
        while True:
            ids = collection.get(include=[], limit=self.batch_limit, offset=offset)["ids"]
            yield from ids
            if len(ids) < self.batch_limit:
                return
            offset += len(ids)

    # stats --------------------------------------------------------------------------------------
    def stats(self) -> Stats:
        with self._lock:
            files = self.sql.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            images, embedded, segmented = self.sql.execute(
                "SELECT COUNT(*), COALESCE(SUM(embedded), 0), COALESCE(SUM(segmented), 0) FROM images"
            ).fetchone()
            segments = self.sql.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
            errors = self.sql.execute("SELECT COUNT(*) FROM errors").fetchone()[0]
        size = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        index_settings = self.manifest["settings"]
        return Stats(
            files=files,
            images=images,
            embedded=embedded,
            segmented=segmented,
            segments=segments,
            errors=errors,
            image_vectors=self.images.count(),
            segment_vectors=self.segments.count(),
            disk_bytes=size,
            model=f"{index_settings['clip_model']} / {index_settings['clip_pretrained'] or 'random'}",
            segmenter=index_settings["segmenter"],
        )

    def close(self) -> None:
        with self._lock:
            self.sql.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the store's lock; ROLLBACK on error."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        self.store.sql.execute("BEGIN IMMEDIATE")
        return self.store.sql

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self.store.sql.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.store._lock.release()


class _Retrying:
    """A Chroma collection whose calls go through Store._retry (all of irs's calls are idempotent:
    upserts and deletes by id, and reads)."""

    def __init__(self, store: Store, collection: Any) -> None:
        self._store = store
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._collection, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._store._retry(lambda: attr(*args, **kwargs))


def _unflushed(err: BaseException) -> bool:
    """Whether a Chroma read failed only because another process has not flushed its writes yet."""
    text = str(err)
    return "Error finding id" in text or "Nothing found on disk" in text


def _open_sqlite(path: Path) -> sqlite3.Connection:
    """Connect and create the tables; a damaged file gives a StoreError saying how to rebuild."""
    try:
        sql = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        sql.execute("PRAGMA journal_mode=WAL")
        sql.execute("PRAGMA synchronous=NORMAL")
        sql.executescript(SCHEMA)
        sql.execute("SELECT COUNT(*) FROM manifest").fetchone()
        return sql
    except sqlite3.DatabaseError as err:
        raise StoreError(damaged_message(path, err)) from None


def damaged_message(path: Path, err: Exception) -> str:
    """What to say when SQLite refuses the catalog."""
    db = path.parent
    return (
        f"{path}: the catalog is damaged (SQLite says: {err}). Rebuild it: move the database folder aside "
        f"(mv {db} {db}.damaged) and index your folders again with --db {db}; your judgments are in "
        f"{db / 'judgments.sqlite'} and can be copied back"
    )


def _unreachable(err: BaseException) -> bool:
    """Whether an error means "the Chroma server did not answer" (worth retrying); see _transport_error."""
    return _transport_error(err) is not None


def _transport_error(err: BaseException) -> BaseException | None:
    """The connection failure behind an error from chromadb's HttpClient, or None when the server did answer.

    What the client raises when its server is down or dies (chromadb 1.5, httpx 0.28; tests/test_server.py):
    - creating the client (HttpClient checks the tenant and database at once) while the server is down:
      ValueError("Could not connect to a Chroma server. Are you sure it is running?"), raised while
      handling httpx.ConnectError; when the server dies during that check, ValueError("Could not connect to
      tenant ...") raised while handling one of the errors below (the same words follow a server's own
      refusal, so words are not trusted). So the chain is followed, the way Python prints it: __cause__,
      else __context__ unless suppressed.
    - any other call (get_or_create_collection, upsert, get, query, count, delete) while it is down:
      httpx.ConnectError (connection refused), as it is.
    - a call in flight when it dies: httpx.RemoteProtocolError ("Server disconnected without sending a
      response") or httpx.ReadError (connection reset); httpx.WriteError is the same death while the
      request body is still being sent.
    The client sets no timeouts, so no timeout errors arise; a server that answers with an error (4xx, 5xx)
    raises a ChromaError or a plain Exception with its text, and is not retried.
    """
    import httpx

    lost = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, lost):
            return current
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def _chroma_client(settings: Settings, root: Path) -> Any:
    """A local PersistentClient in the database folder, or an HttpClient when chroma_host is set."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_host:
        return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
    return chromadb.PersistentClient(path=str(root / "chroma"), settings=chroma_settings)
