"""Store: vectors in Chroma (one collection for whole images, one for segments), everything else in
SQLite beside it (files, image state, segment masks, errors, the manifest).

Write order makes every step safe to kill: a SQLite row marked pending is committed first, then the
vectors go to Chroma (upserts, so repeating them is harmless), then the row is marked done. A rerun
redoes pending work; `collect_garbage` deletes whatever no file refers to any more.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irs import __version__
from irs.records import BadFile, FileEntry, Segment
from irs.settings import Settings

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


SEGMENT_CACHE = 20_000  # images whose segment vectors stay in memory for rescoring (LRU)


class ManifestMismatch(RuntimeError):
    """The database was built with other index settings; mixing them would corrupt results."""


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

    def __init__(self, settings: Settings) -> None:
        self.root = Path(settings.db)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._segment_cache: OrderedDict[str, list[tuple[Segment, np.ndarray]]] = OrderedDict()
        self.sql = sqlite3.connect(self.root / "irs.sqlite", check_same_thread=False, isolation_level=None)
        self.sql.execute("PRAGMA journal_mode=WAL")
        self.sql.execute("PRAGMA synchronous=NORMAL")
        self.sql.executescript(SCHEMA)
        self._check_manifest(settings)
        self.chroma = _chroma_client(settings, self.root)
        self.batch_limit = self.chroma.get_max_batch_size()
        prefix = f"irs-{self.manifest['db_id'][:12]}"
        hnsw = {"hnsw": {"space": "cosine"}}
        self.images = self.chroma.get_or_create_collection(
            f"{prefix}-images", embedding_function=None, configuration=hnsw
        )
        self.segments = self.chroma.get_or_create_collection(
            f"{prefix}-segments", embedding_function=None, configuration=hnsw
        )

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
            orphans = [
                r[0]
                for r in self.sql.execute("SELECT sha256 FROM images WHERE sha256 NOT IN (SELECT sha256 FROM files)")
            ]
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

    def image_page(self, offset: int, limit: int) -> list[tuple[str, str]]:
        """(sha256, first path) of indexed images, by path, for browsing."""
        with self._lock:
            rows = self.sql.execute(
                "SELECT sha256, MIN(path) AS p FROM files GROUP BY sha256 ORDER BY p LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [(sha, path) for sha, path in rows]

    def segment_vector(self, sha: str, idx: int) -> np.ndarray | None:
        res = self.segments.get(ids=[segment_id(sha, idx)], include=["embeddings"])
        return np.asarray(res["embeddings"][0], np.float32) if res["ids"] else None

    # queries ------------------------------------------------------------------------------------
    def query_images(self, vector: np.ndarray, n: int) -> dict[str, float]:
        """Nearest whole images: sha256 -> cosine similarity."""
        if n <= 0 or self.images.count() == 0:
            return {}
        res = self.images.query(query_embeddings=[vector], n_results=n, include=["distances"])
        return {i: 1.0 - d for i, d in zip(res["ids"][0], res["distances"][0])}

    def query_segments(self, vector: np.ndarray, n: int) -> list[SegmentHit]:
        """Nearest segments, with their positions (no masks), best first."""
        if n <= 0 or self.segments.count() == 0:
            return []
        res = self.segments.query(query_embeddings=[vector], n_results=n, include=["distances", "metadatas"])
        return [
            SegmentHit(meta["image"], _segment_from_meta(meta), 1.0 - d)
            for meta, d in zip(res["metadatas"][0], res["distances"][0])
        ]

    def image_vectors(self, shas: list[str]) -> dict[str, np.ndarray]:
        if not shas:
            return {}
        res = self.images.get(ids=shas, include=["embeddings"])
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
            res = self.segments.get(ids=ids[start : start + self.batch_limit], include=["embeddings", "metadatas"])
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

    def image_count(self) -> int:
        """Indexed images (cheap: no disk walk, unlike stats())."""
        with self._lock:
            return int(self.sql.execute("SELECT COUNT(DISTINCT sha256) FROM files").fetchone()[0])

    # stats --------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock:
            files = self.sql.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            images, embedded, segmented = self.sql.execute(
                "SELECT COUNT(*), COALESCE(SUM(embedded), 0), COALESCE(SUM(segmented), 0) FROM images"
            ).fetchone()
            segments = self.sql.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
            errors = self.sql.execute("SELECT COUNT(*) FROM errors").fetchone()[0]
        size = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        index_settings = self.manifest["settings"]
        return {
            "files": files,
            "images": images,
            "embedded": embedded,
            "segmented": segmented,
            "segments": segments,
            "errors": errors,
            "disk_bytes": size,
            "model": f"{index_settings['clip_model']} / {index_settings['clip_pretrained'] or 'random'}",
            "segmenter": index_settings["segmenter"],
        }

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


def _chroma_client(settings: Settings, root: Path) -> Any:
    """A local PersistentClient in the database folder, or an HttpClient when chroma_host is set."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_host:
        return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
    return chromadb.PersistentClient(path=str(root / "chroma"), settings=chroma_settings)
