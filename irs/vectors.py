"""The vectors: two Chroma collections, whole images (id = sha256) and segments (id = "sha256:index",
with the segment's box, centre and area as metadata), in `chroma/` or on a Chroma server.

Every call is cut to the server's batch limit, retried while a Chroma *server* is unreachable (all of
irs's calls are idempotent: upserts and deletes by id, and reads), and tolerant of another process's
unflushed writes. Recently read segment vectors stay in memory (an LRU) for rescoring.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from irs.catalog import StoreError
from irs.pipeline import chunks
from irs.records import EmbeddedImage, Segment, SegmentedImage
from irs.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

SEGMENT_CACHE = 20_000  # images whose segment vectors stay in memory for rescoring (LRU)


def segment_id(sha: str, idx: int) -> str:
    return f"{sha}:{idx}"


def segment_metadata(sha: str, segment: Segment) -> dict[str, Any]:
    """What Chroma keeps beside a segment vector: its image and position (masks stay in the catalog)."""
    x0, y0, x1, y1 = segment.bbox
    cx, cy = segment.centroid
    return {
        "image": sha,
        "idx": segment.index,
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "cx": cx,
        "cy": cy,
        "area": segment.area,
    }


def segment_from_metadata(meta: dict[str, Any]) -> Segment:
    """The segment (position only, no mask) that `segment_metadata` describes."""
    return Segment(
        bbox=(meta["x0"], meta["y0"], meta["x1"], meta["y1"]),
        centroid=(meta["cx"], meta["cy"]),
        area=meta["area"],
        mask_rle=b"",
        mask_shape=(0, 0),
        index=int(meta["idx"]),
    )


class Vectors:
    """The Chroma half of a database: the image and segment collections of database `db_id`."""

    def __init__(self, settings: Settings, root: Path, db_id: str) -> None:
        """Connect (a PersistentClient in root/chroma, or the server settings name) and open the collections."""
        self.where = f"{settings.chroma_host}:{settings.chroma_port}" if settings.chroma_host else ""
        self.retry_seconds = settings.chroma_retry_seconds
        self._cache: OrderedDict[str, dict[int, np.ndarray]] = OrderedDict()  # sha256 -> index -> vector
        self._cache_lock = threading.Lock()
        self.client = self.retry(lambda: _client(settings, root))
        self.batch_limit: int = self.retry(self.client.get_max_batch_size)
        prefix = f"irs-{db_id[:12]}"
        self.images = _Retrying(self, self._collection(f"{prefix}-images", settings.chroma_ef_search))
        self.segments = _Retrying(self, self._collection(f"{prefix}-segments", settings.chroma_ef_search))

    def _collection(self, name: str, ef_search: int) -> Any:
        """Open or create a collection, searched with `ef_search` (a stored property of the collection, so
        an existing one is changed when the setting differs; it costs nothing to change)."""
        hnsw = {"space": "cosine", "ef_search": ef_search}
        collection = self.retry(
            lambda: self.client.get_or_create_collection(name, embedding_function=None, configuration={"hnsw": hnsw})
        )
        if (collection.configuration.get("hnsw") or {}).get("ef_search") != ef_search:
            self.retry(lambda: collection.modify(configuration={"hnsw": {"ef_search": ef_search}}))
        return collection

    def retry(self, call: Callable[[], T]) -> T:
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
                cause = transport_error(err) if self.where else None
                if cause is None:
                    raise
                first, failed = failed is None, f"{type(cause).__name__}: {cause}"
                if time.monotonic() + delay > started + self.retry_seconds:
                    host, _, port = self.where.rpartition(":")
                    raise StoreError(
                        f"the Chroma server at {self.where} is not answering ({failed}); retried for "
                        f"{self.retry_seconds:g} s. Start it (chroma run --path PATH --host {host} --port {port}) "
                        "and run the command again: indexing resumes where it stopped"
                    ) from None
                if first:
                    log.warning(
                        "Chroma server at %s not answering (%s); retrying for %g s",
                        self.where,
                        failed,
                        self.retry_seconds,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if failed is not None:
                log.warning("Chroma server at %s answering again after %.1f s", self.where, time.monotonic() - started)
            return result

    # counts ---------------------------------------------------------------------------------------
    def image_count(self) -> int:
        return self.images.count()

    def segment_count(self) -> int:
        return self.segments.count()

    # writes ---------------------------------------------------------------------------------------
    def upsert_images(self, images: list[EmbeddedImage]) -> None:
        """Whole-image vectors, with each image's width and height."""
        for chunk in chunks(images, self.batch_limit):
            self.images.upsert(
                ids=[image.sha256 for image in chunk],
                embeddings=np.stack([image.vector for image in chunk]),
                metadatas=[{"width": image.width, "height": image.height} for image in chunk],
            )

    def upsert_segments(self, images: list[SegmentedImage]) -> None:
        """The segment vectors of several images, in as few calls as the batch limit allows (Chroma's cost is
        mostly per call)."""
        self.forget_cached([im.sha256 for im in images])
        ids = [segment_id(im.sha256, s.index) for im in images for s in im.segments]
        metas = [segment_metadata(im.sha256, s) for im in images for s in im.segments]
        if not ids:
            return
        vecs = np.concatenate([np.asarray(im.vectors)[: len(im.segments)] for im in images if im.segments])
        n = self.batch_limit
        for batch in zip(chunks(ids, n), chunks(vecs, n), chunks(metas, n)):
            self.segments.upsert(ids=batch[0], embeddings=batch[1], metadatas=batch[2])

    def delete_images(self, shas: list[str]) -> None:
        for chunk in chunks(shas, self.batch_limit):
            self.images.delete(ids=chunk)

    def delete_segments(self, ids: list[str]) -> None:
        """Delete segment vectors by id (and forget the cached vectors of their images)."""
        self.forget_cached(sorted({i.rpartition(":")[0] for i in ids}))
        for chunk in chunks(ids, self.batch_limit):
            self.segments.delete(ids=chunk)

    def forget_cached(self, shas: list[str]) -> None:
        with self._cache_lock:
            for sha in shas:
                self._cache.pop(sha, None)

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    # reads ----------------------------------------------------------------------------------------
    def query_images(self, vector: np.ndarray, n: int) -> dict[str, float]:
        """Nearest whole images: sha256 -> cosine similarity."""
        if n <= 0:  # an empty collection answers with no neighbours: no count() (a round trip) needed
            return {}
        res = self._query(self.images, vector, n, ["distances"])
        return {i: 1.0 - d for i, d in zip(res["ids"][0], res["distances"][0])}

    def image_vectors(self, shas: list[str]) -> dict[str, np.ndarray]:
        """sha256 -> whole-image vector, for the images that have one."""
        if not shas:
            return {}
        res = self._get(self.images, shas, ["embeddings"])
        return {i: np.asarray(e, np.float32) for i, e in zip(res["ids"], res["embeddings"])}

    def segment_vector(self, sha: str, idx: int) -> np.ndarray | None:
        res = self._get(self.segments, [segment_id(sha, idx)], ["embeddings"])
        return np.asarray(res["embeddings"][0], np.float32) if res["ids"] else None

    def segment_neighbours(self, vector: np.ndarray, n: int) -> tuple[list[str], np.ndarray]:
        """Ids and cosine similarities of the n nearest segments, best first: distances only, because
        Chroma's metadata costs 5-7x the query itself (positions come from irs.positions instead)."""
        if n <= 0:
            return [], np.zeros(0)
        res = self._query(self.segments, vector, n, ["distances"])
        return list(res["ids"][0]), 1.0 - np.asarray(res["distances"][0], np.float64)

    def segment_vectors(self, wanted: dict[str, list[int]]) -> Iterator[tuple[str, int, np.ndarray]]:
        """(sha256, index, vector) of the given segments of the given images, image by image (the ones Chroma
        has). Embeddings only: positions come from the catalog.

        Recently read images are kept in memory (an LRU of `SEGMENT_CACHE` images), so the rescoring of
        repeated and similar queries reads nothing twice; writes to an image drop its entry."""
        with self._cache_lock:
            # an entry counts only when it holds every index wanted (the image may have gained segments since)
            cached = {
                sha: got
                for sha in wanted
                if (got := self._cache.get(sha)) is not None and set(wanted[sha]) <= got.keys()
            }
            for sha in cached:
                self._cache.move_to_end(sha)
        missing = [sha for sha in wanted if sha not in cached]
        fetched: dict[str, dict[int, np.ndarray]] = {sha: {} for sha in missing}
        ids = [segment_id(s, i) for s in missing for i in wanted[s]]
        for chunk in chunks(ids, self.batch_limit):
            res = self._get(self.segments, chunk, ["embeddings"])
            for id_, vec in zip(res["ids"], res["embeddings"]):
                sha, _, idx = id_.rpartition(":")
                fetched[sha][int(idx)] = np.asarray(vec, np.float32)
        with self._cache_lock:
            for sha, vectors in fetched.items():
                self._cache[sha] = vectors
            while len(self._cache) > SEGMENT_CACHE:
                self._cache.popitem(last=False)
        for sha in wanted:
            vectors = cached[sha] if sha in cached else fetched.get(sha, {})
            for idx in wanted[sha]:
                if idx in vectors:
                    yield sha, idx, vectors[idx]

    def all_ids(self, collection: Any) -> Iterator[str]:
        """Every id in a collection (`self.images` or `self.segments`), a batch at a time."""
        offset = 0
        while True:
            ids = collection.get(include=[], limit=self.batch_limit, offset=offset)["ids"]
            yield from ids
            if len(ids) < self.batch_limit:
                return
            offset += len(ids)

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


class _Retrying:
    """A Chroma collection whose calls go through Vectors.retry."""

    def __init__(self, vectors: Vectors, collection: Any) -> None:
        self._vectors = vectors
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._collection, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._vectors.retry(lambda: attr(*args, **kwargs))


def _unflushed(err: BaseException) -> bool:
    """Whether a Chroma read failed only because another process has not flushed its writes yet."""
    text = str(err)
    return "Error finding id" in text or "Nothing found on disk" in text


def transport_error(err: BaseException) -> BaseException | None:
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


def _client(settings: Settings, root: Path) -> Any:
    """A local PersistentClient in the database folder, or an HttpClient when chroma_host is set."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_host:
        return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
    return chromadb.PersistentClient(path=str(root / "chroma"), settings=chroma_settings)
