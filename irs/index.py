"""The index pipeline and the `Index` facade: discover -> load -> embed images -> segment -> embed
segments -> store, then search.

Whole-image vectors for every new file are written first, so a folder is searchable before its slow
segmentation finishes. Every step is resumable: rerunning `add_folder` skips what is done.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from irs.embed import Embedder
from irs.load import LoadError, decode_image, discover
from irs.pipeline import Writer, prefetch
from irs.query import ParsedQuery, Phrase, parse_query
from irs.records import BadFile, FileEntry, LoadedImage, SearchResult, Segment
from irs.search import QueryVectors, rank
from irs.segment import Segmenter, make_segmenter, segment_images
from irs.settings import Settings, load_settings
from irs.store import Store

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """One progress report: a stage, how far it is, and how fast it goes."""

    stage: str  # "scan", "embed" or "segment"
    done: int
    total: int
    started: float
    path: str = ""

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def __str__(self) -> str:
        eta = f"{self.eta:.0f}s" if self.eta is not None else "?"
        return f"{self.stage}: {self.done}/{self.total} images, {self.rate:.1f}/s, ETA {eta}"


@dataclass
class IndexReport:
    """What one `add_folder` run did."""

    found: int = 0
    added: int = 0  # files whose image was embedded in this run
    reused: int = 0  # new paths whose bytes were already indexed (copies, renames)
    unchanged: int = 0
    removed: int = 0  # paths that vanished from the folder
    segmented: int = 0
    failed: list[BadFile] = field(default_factory=list)
    stopped: bool = False


ProgressFn = Callable[[Progress], Any]


@dataclass
class Prepared:
    """A file after the loader workers: its identity and, for unseen bytes, model-ready pixels."""

    entry: FileEntry
    sha256: str = ""
    pixels: torch.Tensor | None = None
    width: int = 0
    height: int = 0
    error: str = ""


class Index:
    """An irs database: open it, add folders to it, search it."""

    def __init__(self, settings: Settings, segmenter: Segmenter | None = None) -> None:
        """Open a database. `segmenter` replaces the one the settings name (the benchmark's oracle)."""
        self.settings = settings
        self.store = Store(settings)
        _write_config(settings)
        self._embedder: Embedder | None = None
        self._segmenter: Segmenter | None = segmenter
        self._segmenter_loaded = segmenter is not None
        self._model_lock = threading.Lock()

    @classmethod
    def open(cls, db: str | os.PathLike | None = None, **overrides: Any) -> Index:
        """Open (or create) a database. Settings: defaults < profile < db/irs.toml < IRS_* < overrides."""
        if db is not None:
            overrides["db"] = str(db)
        return cls(load_settings(overrides))

    # models are loaded on first use: a search never loads SAM -------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._model_lock:
            if self._embedder is None:
                from irs.models import load_clip

                s = self.settings
                clip = load_clip(s.clip_model, s.clip_pretrained, s.device)
                self._embedder = Embedder(clip, s.batch_size, s.segment_background, s.crop_padding)
                self.store.check_dimension(self._embedder.dim)
        return self._embedder

    @property
    def segmenter(self) -> Segmenter | None:
        with self._model_lock:
            if not self._segmenter_loaded:
                self._segmenter = make_segmenter(self.settings)
                self._segmenter_loaded = True
        return self._segmenter

    # indexing -------------------------------------------------------------------------------------
    def add_folder(
        self,
        folder: str | os.PathLike,
        progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
        segment: bool = True,
    ) -> IndexReport:
        """Index every image under `folder`; skip unchanged files, drop vanished ones.

        `stop` (set from another thread) ends the run cleanly after the current batch; rerunning
        continues where it stopped. With segment=False only whole-image vectors are made.
        """
        root = Path(folder).expanduser().resolve()
        report = IndexReport()
        entries, problems = discover(root, self.settings.extensions)
        self.store.remember_folder(str(root))
        report.found = len(entries)
        report.failed.extend(problems)

        known = self.store.known_files()
        on_disk = {e.path for e in entries}
        prefix = str(root) + os.sep
        vanished = [p for p in known if p.startswith(prefix) and p not in on_disk]
        self.store.forget_paths(vanished)
        self.store.clear_errors(vanished)
        report.removed = len(vanished)

        todo = []
        for entry in entries:
            old = known.get(entry.path)
            state = self.store.image_state(old[0]) if old else None
            if old and old[1:] == (entry.size, entry.mtime_ns) and state and state[0]:
                report.unchanged += 1
            else:
                todo.append(entry)

        stopped = self._embed_files(todo, report, progress, stop)
        if not stopped and segment and self.segmenter is not None:
            stopped = self._segment_pending(report, progress, stop)
        self.store.collect_garbage()
        self.store.record_errors(report.failed)
        report.stopped = stopped
        return report

    def _prepare(self, entry: FileEntry) -> Prepared:
        """Worker side of stage 1: read, hash, and (for unseen bytes) decode and preprocess one file."""
        try:
            data = Path(entry.path).read_bytes()
        except OSError as err:
            return Prepared(entry, error=f"cannot read file: {err.strerror or err}")
        sha = hashlib.sha256(data).hexdigest()
        state = self.store.image_state(sha)
        if state and state[0]:
            return Prepared(entry, sha)  # same bytes seen before: reuse the vectors
        try:
            image = decode_image(data, self.settings.max_pixels, self.settings.work_max_side, entry.path)
        except LoadError as err:
            return Prepared(entry, sha, error=str(err))
        pixels = self.embedder.clip.preprocess(Image.fromarray(image.pixels))
        return Prepared(entry, sha, pixels, image.width, image.height)

    def _embed_files(
        self, todo: list[FileEntry], report: IndexReport, progress: ProgressFn | None, stop: threading.Event | None
    ) -> bool:
        """Stage 1: embed whole images a batch at a time, decoding ahead and writing behind.
        Returns True if stopped."""
        started = time.monotonic()
        _ = self.embedder  # load the model before the workers need its preprocess
        batch: list[Prepared] = []
        writer = Writer()
        stopped = False
        try:
            work = prefetch(self._prepare, todo, self.settings.load_workers, 2 * self.settings.batch_size)
            for n, (entry, item) in enumerate(work, 1):
                if item.error:
                    report.failed.append(BadFile(entry.path, item.error))
                    writer.submit(self.store.forget_paths, [entry.path])  # its old content is gone from disk
                elif item.pixels is None:
                    writer.submit(self.store.link_files, [(entry, item.sha256)])
                    report.reused += 1
                else:
                    batch.append(item)
                if progress:
                    progress(Progress("embed", n, len(todo), started, entry.path))
                stopped = _is_set(stop)
                if batch and (len(batch) >= self.settings.batch_size or n == len(todo) or stopped):
                    self._flush_images(batch, writer)
                    report.added += len(batch)
                    batch = []
                if stopped:
                    break
        finally:
            writer.close()
        return stopped

    def _flush_images(self, batch: list[Prepared], writer: Writer) -> None:
        unique: dict[str, Prepared] = {}
        for item in batch:
            unique.setdefault(item.sha256, item)
        vectors = self.embedder.encode_pixels(torch.stack([item.pixels for item in unique.values()]))
        rows = [(sha, item.width, item.height) for sha, item in unique.items()]
        writer.submit(self.store.add_images, rows, vectors)
        writer.submit(self.store.link_files, [(item.entry, item.sha256) for item in batch])

    def _segment_pending(self, report: IndexReport, progress: ProgressFn | None, stop: threading.Event | None) -> bool:
        """Stage 2: segment every embedded image that has no segments yet; the crops of several images
        are embedded together. Returns True if stopped."""
        pending = self.store.pending_segmentation()
        paths = self.store.paths_of(pending)
        started = time.monotonic()
        waiting: list[tuple[str, list[Segment], torch.Tensor]] = []  # segmented, not yet embedded
        writer = Writer()
        stopped = False

        def load(sha: str) -> tuple[LoadedImage | None, list[BadFile]]:
            return self._load_any(paths.get(sha, []), sha)

        try:
            work = prefetch(load, pending, self.settings.load_workers, 4)
            group: list[tuple[str, LoadedImage]] = []  # images sharing one segmenter batch
            for n, (sha, (image, problems)) in enumerate(work, 1):
                report.failed.extend(problems)
                if image is not None:
                    group.append((sha, image))
                if group and (len(group) >= self.settings.sam_batch or n == len(pending) or _is_set(stop)):
                    pixels = [im.pixels for _, im in group]
                    for (sha_g, im), segments in zip(group, segment_images(self.segmenter, pixels, self.settings)):
                        waiting.append((sha_g, segments, self.embedder.segment_pixels(im.pixels, segments)))
                        report.segmented += 1
                    group = []
                if progress:
                    progress(Progress("segment", n, len(pending), started, paths.get(sha, [""])[0]))
                stopped = _is_set(stop)
                crops = sum(len(w[2]) for w in waiting)
                if waiting and (crops >= self.settings.batch_size or n == len(pending) or stopped):
                    self._flush_segments(waiting, writer)
                    waiting = []
                if stopped:
                    break
        finally:
            writer.close()
        return stopped

    def _flush_segments(self, waiting: list[tuple[str, list[Segment], torch.Tensor]], writer: Writer) -> None:
        vectors = self.embedder.encode_pixels(torch.cat([crops for _, _, crops in waiting]))
        items, start = [], 0
        for sha, segments, _ in waiting:
            items.append((sha, segments, vectors[start : start + len(segments)]))
            start += len(segments)
        writer.submit(self.store.add_segments_many, items)

    def _load_any(self, paths: list[str], sha: str) -> tuple[LoadedImage | None, list[BadFile]]:
        """Decode the first path that still holds these bytes (and the problems met on the way)."""
        problems = []
        for path in paths:
            try:
                data = Path(path).read_bytes()
            except OSError as err:
                problems.append(BadFile(path, f"cannot read file: {err.strerror or err}"))
                continue
            if hashlib.sha256(data).hexdigest() != sha:
                continue  # changed since stage 1; the next run re-embeds it
            try:
                return decode_image(data, self.settings.max_pixels, self.settings.work_max_side, path), problems
            except LoadError as err:
                problems.append(BadFile(path, str(err)))
        return None, problems

    # search ---------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, settings: Settings | None = None) -> list[SearchResult]:
        """The k images that best match a text query, each with the segment matched for every phrase.

        `settings` may change search-only fields (weights, pools) for this one call. A query with nothing
        to look for raises QueryError (a ValueError, see irs.query.check_searchable); k must be at least 1
        and is capped at the number of indexed images."""
        from irs.query import check_searchable  # imported here: this method's checks stay within it
        from irs.search import check_k

        k = check_k(k)
        parsed = parse_query(query)
        check_searchable(parsed)
        return rank(self.store, parsed, self.query_vectors(parsed), k, settings or self.settings)

    def query_vectors(self, parsed: ParsedQuery) -> QueryVectors:
        """Embed a parsed query: the whole of it, each phrase, each negative term (one batch)."""
        texts = [t.text for t in parsed.terms] or [parsed.text]
        texts += [p.text for p in parsed.phrases] + [n.text for n in parsed.negatives]
        vecs = self.embedder.texts(texts)
        n_terms = len(parsed.terms) or 1
        weights = np.array([t.weight for t in parsed.terms] or [1.0], np.float64)
        # only the ratios matter: scaling by the largest keeps 1e-320 weights from underflowing to a zero vector
        top = float(weights.max())
        weights = weights / top if np.isfinite(top) and top > 0 else np.ones_like(weights)
        whole = (vecs[:n_terms] * weights[:, None]).sum(axis=0)  # rclip-style weighted sum of the positive terms
        whole = whole / max(float(np.linalg.norm(whole)), 1e-12)
        n_phrases = len(parsed.phrases)
        return QueryVectors(whole, list(vecs[n_terms : n_terms + n_phrases]), list(vecs[n_terms + n_phrases :]))

    def similar(self, sha256: str, segment_index: int | None = None, k: int = 10) -> list[SearchResult]:
        """Images like a stored image, or like one of its segments (k as in `search`)."""
        from irs.search import check_k

        k = check_k(k)
        if segment_index is None:
            vector = self.store.image_vectors([sha256]).get(sha256)
        else:
            vector = self.store.segment_vector(sha256, segment_index)
        if vector is None:
            return []
        label = "(this image)" if segment_index is None else f"(segment {segment_index})"
        parsed = ParsedQuery(label, (Phrase(label),))
        return rank(self.store, parsed, QueryVectors(vector, [vector]), k, self.settings)

    def errors(self) -> list[BadFile]:
        """Files that could not be indexed, with reasons."""
        return self.store.errors()

    def stats(self) -> dict[str, Any]:
        return self.store.stats()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _is_set(event: threading.Event | None) -> bool:
    return event is not None and event.is_set()


def _write_config(settings: Settings) -> None:
    """On creation, record the profile and index settings in db/irs.toml so reopening needs no flags."""
    path = Path(settings.db) / "irs.toml"
    if path.exists():
        return
    lines = [
        "# Written when this database was created. Index settings must stay as they are.",
        f"profile = {_toml(settings.profile)}",
    ]
    lines += [f"{k} = {_toml(v)}" for k, v in settings.index_fingerprint().items()]
    path.write_text("\n".join(lines) + "\n")


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
