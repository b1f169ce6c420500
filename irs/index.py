"""The index pipeline and the `Index` facade: discover -> load -> embed images -> segment -> embed
segments -> store, then search.

Whole-image vectors for every new file are written first, so a folder is searchable before its slow
segmentation finishes. Every step is resumable: rerunning `add_folder` skips what is done.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from irs.embed import Embedder
from irs.evaluate import Explainer
from irs.load import (
    LoadError,
    check_folder,
    decode_image,
    discover,
    load_any,
    load_image,
    printable,
    relative_path,
    within_limit,
)
from irs.locks import FileLock, writer_lock
from irs.pipeline import Writer, batch_or_each, prefetch
from irs.query import ParsedQuery, Phrase, check_searchable, parse_query
from irs.records import (
    BadFile,
    EmbeddedImage,
    FileEntry,
    ImageRow,
    IndexReport,
    LoadedImage,
    Progress,
    ProgressFn,
    SearchResult,
    Segment,
    SegmentedImage,
)
from irs.search import QueryVectors, check_k, embed_query, rank, search
from irs.segment import Segmenter, make_segmenter, segment_images
from irs.settings import Settings, load_settings, write_config
from irs.store import Consistency, Stats, Store

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


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

    def __init__(self, settings: Settings, segmenter: Segmenter | None = None, create: bool = True) -> None:
        """Open a database (create=False: DatabaseMissing if there is none). `segmenter` replaces the one
        the settings name (the benchmark's oracle)."""
        self.settings = settings
        self.store = Store(settings, create=create)
        self.catalog = self.store.catalog
        write_config(settings)
        self._embedder: Embedder | None = None
        self._segmenter: Segmenter | None = segmenter
        self._segmenter_loaded = segmenter is not None
        self._model_lock = threading.Lock()
        # a lost or replaced vector store must never look like an empty result: say so on every open
        self.problem = self.store.quick_check()
        if self.problem:
            log.warning(self.problem)

    @classmethod
    def open(cls, db: str | os.PathLike | None = None, create: bool = True, **overrides: Any) -> Index:
        """Open (or create) a database. Settings: defaults < profile < db/irs.toml < IRS_* < overrides."""
        if db is not None:
            overrides["db"] = str(db)
        return cls(load_settings(overrides), create=create)

    # models are loaded on first use: a search never loads SAM -------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._model_lock:
            if self._embedder is None:
                from irs.models import load_clip

                s = self.settings
                clip = load_clip(s.clip_model, s.clip_pretrained, s.device)
                self._embedder = Embedder(clip, s.batch_size, s.segment_background, s.crop_padding, s.text_dtype)
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
        ray: str | None = None,
        ray_workers: int = 0,
    ) -> IndexReport:
        """Index every image under `folder`; skip unchanged files, drop vanished ones.

        `stop` (set from another thread) ends the run cleanly after the current batch; rerunning
        continues where it stopped. With segment=False only whole-image vectors are made. A file that
        cannot be used is that file's failure: it is recorded (see `errors`) and the run goes on.
        Only one process indexes a database at a time (DatabaseBusy names the other one).

        With `ray` ("local" starts Ray on this machine; else a cluster address such as "auto" or
        "ray://head:10001"), the models run in `ray_workers` Ray actors (default: one per GPU, else two)
        and this process writes what they send back (see irs.distributed).
        """
        if self.settings.allowed_roots:
            why = check_folder(str(folder), self.settings.allowed_roots)
            if why:
                raise ValueError(why)
        root = Path(folder).expanduser().resolve()
        if printable(str(root)) != str(root):
            raise ValueError(f"{printable(str(root))}: the folder's name is not valid UTF-8; rename it to index it")
        report = IndexReport()
        entries, problems = discover(root, self.settings.extensions, self.settings.allowed_roots)
        with self._writing():
            self._reconcile(progress)
            self.catalog.remember_folder(str(root))
            report.found = len(entries) + len(problems)  # every image-named thing seen, usable or not
            report.failed.extend(problems)
            self.catalog.record_errors(problems)  # listed at once: a killed run still shows them

            known = self.catalog.known_files()
            on_disk = {e.path for e in entries}
            prefix = str(root) + os.sep
            vanished = [p for p in known if p.startswith(prefix) and p not in on_disk]
            self.store.forget_paths(vanished)
            self.catalog.clear_errors(vanished)
            report.removed = len(vanished)

            todo = []
            for entry in entries:
                old = known.get(entry.path)
                if old and old.unchanged(entry) and not self._unseen(old.sha256):
                    report.unchanged += 1
                else:
                    todo.append(entry)
            # files elsewhere whose vectors a repair found missing
            todo += [e for e in self.catalog.unembedded_files() if e.path not in on_disk]
            return self._run_stages(todo, report, progress, stop, segment, ray, ray_workers)

    def check(self) -> Consistency:
        """Compare SQLite and Chroma id by id (see Store.check)."""
        return self.store.check()

    def repair(
        self, progress: ProgressFn | None = None, stop: threading.Event | None = None
    ) -> tuple[Consistency, IndexReport]:
        """Make SQLite and Chroma agree: delete vectors nothing refers to, re-embed and re-segment what
        is missing (from the files on disk). Returns what was found and what the re-indexing did."""
        with self._writing():
            found = self.store.check()
            if not found.ok:
                self.store.repair(found)
            self.problem = None
            return found, self._run_stages(self.catalog.unembedded_files(), IndexReport(), progress, stop, True)

    def _writing(self) -> FileLock:
        """The database's writer lock, for the length of a `with`."""
        return writer_lock(Path(self.settings.db), self.settings.lock_timeout)

    def _reconcile(self, progress: ProgressFn | None) -> None:
        """Before indexing: when the cheap count check finds vectors missing, compare ids and repair; copy
        into the catalog the image vectors only Chroma holds (a database from before the catalog kept them)."""
        if self.store.quick_check() is not None:
            found = self.store.check()
            log.warning("repairing %s: %s", self.settings.db, found)
            self.store.repair(found)
            self.problem = None
        started = time.monotonic()
        report = (lambda done, total: progress(Progress("copy vectors", done, total, started))) if progress else None
        copied = self.store.copy_image_vectors(report)
        if copied:
            log.info("%s: %d image vectors copied into the catalog", self.settings.db, copied)

    def _run_stages(
        self,
        todo: list[FileEntry],
        report: IndexReport,
        progress: ProgressFn | None,
        stop: threading.Event | None,
        segment: bool,
        ray: str | None = None,
        ray_workers: int = 0,
    ) -> IndexReport:
        """Stage 1 (embed `todo`), stage 2 (segment whatever is pending), then tidy up; on Ray both
        stages run together."""
        if ray is not None:
            from irs.distributed import index_on_ray

            stopped = index_on_ray(self.store, self.settings, todo, report, progress, stop, segment, ray, ray_workers)
        else:
            stopped = self._embed_files(todo, report, progress, stop)
            if not stopped and segment and self.segmenter is not None:
                stopped = self._segment_pending(report, progress, stop)
        self.store.collect_garbage()
        self.catalog.record_errors(report.failed)
        report.stopped = stopped
        return report

    def _within_limit(self, fn: Callable[[T], R], item: T) -> R:
        """fn(item) under `decode_timeout` (see irs.load.within_limit)."""
        return within_limit(fn, item, self.settings.decode_timeout)

    def _prepare_within_limit(self, entry: FileEntry) -> Prepared:
        """`_prepare`, with any failure (a hang included) as this file's error."""
        try:
            return self._within_limit(self._prepare, entry)
        except LoadError as err:
            return Prepared(entry, error=str(err))

    def _prepare(self, entry: FileEntry) -> Prepared:
        """Worker side of stage 1: read, hash, and (for unseen bytes) decode and preprocess one file."""
        try:
            image = load_image(entry.path, self.settings.max_pixels, self.settings.work_max_side, self._unseen)
        except LoadError as err:
            return Prepared(entry, error=str(err))
        if image.pixels is None:
            return Prepared(entry, image.sha256)  # same bytes seen before: reuse the vectors
        pixels = self.embedder.clip.preprocess(Image.fromarray(image.pixels))
        return Prepared(entry, image.sha256, pixels, image.width, image.height)

    def _unseen(self, sha: str) -> bool:
        """Whether these bytes still need a whole-image vector."""
        return not self.catalog.is_embedded(sha)

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
            work = prefetch(self._prepare_within_limit, todo, self.settings.load_workers, 2 * self.settings.batch_size)
            for n, (entry, item) in enumerate(work, 1):
                if item.error:
                    self._drop(BadFile(entry.path, item.error), writer, report)
                elif item.pixels is None:
                    writer.submit(self.store.link_files, [(entry, item.sha256)])
                    report.reused += 1
                else:
                    batch.append(item)
                if progress:
                    progress(Progress("embed", n, len(todo), started, entry.path))
                stopped = _is_set(stop)
                if batch and (len(batch) >= self.settings.batch_size or n == len(todo) or stopped):
                    self._flush_images(batch, writer, report)
                    batch = []
                if stopped:
                    break
        finally:
            writer.close()
        return stopped

    def _drop(self, bad: BadFile, writer: Writer, report: IndexReport) -> None:
        """A file stage 1 cannot use: its old record goes (its old content is gone from disk) and it is
        listed at once, so a killed run still shows it."""
        report.failed.append(bad)
        writer.submit(self.store.forget_paths, [bad.path])
        writer.submit(self.catalog.record_errors, [bad])

    def _flush_images(self, batch: list[Prepared], writer: Writer, report: IndexReport) -> None:
        """Embed a batch of whole images and queue their writes. If the model fails on the batch, each
        image is tried alone, so only the culprit is recorded."""
        unique: dict[str, Prepared] = {}
        for item in batch:
            unique.setdefault(item.sha256, item)
        vectors = batch_or_each(
            lambda items: self.embedder.encode_pixels(torch.stack([item.pixels for item in items])),
            list(unique.values()),
        )
        failed = {sha: out for sha, out in zip(unique, vectors) if isinstance(out, Exception)}
        for item in batch:
            if item.sha256 in failed:
                err = failed[item.sha256]
                self._drop(BadFile(item.entry.path, f"embedding failed: {type(err).__name__}: {err}"), writer, report)
        images = [
            EmbeddedImage(sha, item.width, item.height, v)
            for (sha, item), v in zip(unique.items(), vectors)
            if sha not in failed
        ]
        linked = [(item.entry, item.sha256) for item in batch if item.sha256 not in failed]
        if images:
            writer.submit(self.store.add_images, images)
            writer.submit(self.store.link_files, linked)
        report.added += len(linked)

    def _segment_pending(self, report: IndexReport, progress: ProgressFn | None, stop: threading.Event | None) -> bool:
        """Stage 2: segment every embedded image that has no segments yet; the crops of several images
        are embedded together. Returns True if stopped."""
        pending = self.catalog.pending_segmentation()
        paths = self.catalog.paths_of(pending)
        started = time.monotonic()
        waiting: list[tuple[str, list[Segment], torch.Tensor]] = []  # segmented, not yet embedded
        writer = Writer()
        stopped = False

        def load(sha: str) -> tuple[LoadedImage | None, list[BadFile]]:
            try:
                return self._within_limit(lambda s: self._load_any(paths.get(s, []), s), sha)
            except LoadError as err:
                return None, [BadFile(path, str(err)) for path in paths.get(sha, [])]

        try:
            work = prefetch(load, pending, self.settings.load_workers, 4)
            group: list[tuple[str, LoadedImage]] = []  # images sharing one segmenter batch
            for n, (sha, (image, problems)) in enumerate(work, 1):
                report.failed.extend(problems)
                if image is not None:
                    group.append((sha, image))
                if group and (len(group) >= self.settings.sam_batch or n == len(pending) or _is_set(stop)):
                    waiting += self._segment_group(group, paths, report)
                    group = []
                if progress:
                    progress(Progress("segment", n, len(pending), started, paths.get(sha, [""])[0]))
                stopped = _is_set(stop)
                crops = sum(len(w[2]) for w in waiting)
                if waiting and (crops >= self.settings.batch_size or n == len(pending) or stopped):
                    self._flush_segments(waiting, writer, paths, report)
                    waiting = []
                if stopped:
                    break
        finally:
            writer.close()
        return stopped

    def _segment_group(
        self, group: list[tuple[str, LoadedImage]], paths: dict[str, list[str]], report: IndexReport
    ) -> list[tuple[str, list[Segment], torch.Tensor]]:
        """Segment images together and cut their crops; when that fails, each image alone, so that only
        the culprit is recorded (it stays pending, and is tried again by the next run)."""

        def segment(items: list[tuple[str, LoadedImage]]) -> list[tuple[str, list[Segment], torch.Tensor]]:
            masks = segment_images(self.segmenter, [im.pixels for _, im in items], self.settings)
            return [(sha, segs, self.embedder.segment_pixels(im.pixels, segs)) for (sha, im), segs in zip(items, masks)]

        out = []
        for (sha, _), done in zip(group, batch_or_each(segment, group)):
            if isinstance(done, Exception):
                reason = f"segmentation failed: {type(done).__name__}: {done}"
                report.failed += [BadFile(path, reason) for path in paths.get(sha, [])]
            else:
                out.append(done)
        report.segmented += len(out)
        return out

    def _flush_segments(
        self,
        waiting: list[tuple[str, list[Segment], torch.Tensor]],
        writer: Writer,
        paths: dict[str, list[str]],
        report: IndexReport,
    ) -> None:
        """Embed the crops of several images at once and queue the writes (image by image on failure)."""
        embedded = batch_or_each(lambda items: self.embedder.encode_groups([crops for _, _, crops in items]), waiting)
        images = []
        for (sha, segments, _), vectors in zip(waiting, embedded):
            if isinstance(vectors, Exception):
                reason = f"embedding segments failed: {type(vectors).__name__}: {vectors}"
                report.failed += [BadFile(path, reason) for path in paths.get(sha, [])]
                report.segmented -= 1
            else:
                images.append(SegmentedImage(sha, segments, vectors))
        if not images:
            return
        writer.submit(self.store.add_segments, images)
        # an earlier run's failure for these images (a segmentation that now worked) is over
        writer.submit(self.catalog.clear_errors, [path for image in images for path in paths.get(image.sha256, [])])

    def _load_any(self, paths: list[str], sha: str) -> tuple[LoadedImage | None, list[BadFile]]:
        """Decode the first path that still holds these bytes (see irs.load.load_any)."""
        return load_any(paths, sha, self.settings.max_pixels, self.settings.work_max_side)

    # search ---------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, settings: Settings | None = None) -> list[SearchResult]:
        """The k images that best match a text query, each with the segment matched for every phrase.

        `settings` may change search-only fields (weights, pools) for this one call. A query with nothing
        to look for raises QueryError (a ValueError, see irs.query.check_searchable); k must be at least 1
        and is capped at the number of indexed images."""
        k = check_k(k)
        parsed = parse_query(query)
        check_searchable(parsed)
        return search(self.store, self.embedder, parsed, k, settings or self.settings)

    def similar(self, sha256: str, segment_index: int | None = None, k: int = 10) -> list[SearchResult]:
        """Images like a stored image, or like one of its segments (k as in `search`)."""
        k = check_k(k)
        if segment_index is None:
            vector = self.store.image_vectors([sha256]).get(sha256)
        else:
            vector = self.store.vectors.segment_vector(sha256, segment_index)
        if vector is None:
            return []
        if segment_index is None:
            # a whole image is compared with whole images: against segment crops it scores even itself ~0.6
            return self._rank_whole_images(ParsedQuery("(this image)"), vector, k, self.settings)
        label = f"(segment {segment_index})"
        parsed = ParsedQuery(label, (Phrase(label),))
        return rank(self.store, parsed, QueryVectors(vector, [vector]), k, self.settings)

    def search_image(
        self,
        image: str | os.PathLike | bytes,
        text: str | None = None,
        k: int = 10,
        image_weight: float = 1.0,
        text_weight: float = 1.0,
        settings: Settings | None = None,
    ) -> list[SearchResult]:
        """The k images most like a query image (a path, or the file's bytes), rclip-style: its vector,
        mixed with the whole vector of `text` when given (a weighted sum, normalised), against whole-image
        vectors. Negative terms in `text` ("-dog") count as in `search`.

        A file that cannot be read or decoded raises LoadError naming it and the reason; a text with nothing
        to search for raises QueryError; weights must be finite and >= 0, not both 0."""
        k = check_k(k)
        for name, weight in (("image_weight", image_weight), ("text_weight", text_weight)):
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}")
        if text is not None and image_weight + text_weight <= 0:
            raise ValueError("image_weight and text_weight are both 0: nothing to search for")
        name = "the query image" if isinstance(image, bytes) else printable(os.fspath(image))
        s = self.settings
        try:
            # decoded exactly as indexing decodes, so an indexed file's query vector equals its stored one
            if isinstance(image, bytes):
                loaded = decode_image(image, s.max_pixels, s.work_max_side)
            else:
                loaded = load_image(os.fspath(image), s.max_pixels, s.work_max_side)
        except LoadError as err:
            raise LoadError(f"{name}: {err}") from None
        vector = self.embedder.images([Image.fromarray(loaded.pixels)])[0]
        parsed, negatives = ParsedQuery(f"(image {Path(name).name})"), []
        if text is not None:
            wanted = parse_query(text)
            check_searchable(wanted)
            vectors = embed_query(self.embedder, wanted)
            vector = image_weight * vector + text_weight * vectors.whole
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
            parsed = ParsedQuery(f"{parsed.text} + {wanted.text}", negatives=wanted.negatives)
            negatives = vectors.negatives
        return self._rank_whole_images(parsed, vector, k, settings or self.settings, negatives)

    def _rank_whole_images(
        self,
        parsed: ParsedQuery,
        vector: np.ndarray,
        k: int,
        settings: Settings,
        negatives: list[np.ndarray] | None = None,
    ) -> list[SearchResult]:
        """Rank by a query vector against whole-image vectors only; `parsed` names the query (its text
        becomes its one phrase) and carries its negative terms."""
        parsed = ParsedQuery(parsed.text, (Phrase(parsed.text),), (), parsed.negatives)
        whole_only = settings.replace(weight_image=1.0, weight_segment=0.0)
        return rank(self.store, parsed, QueryVectors(vector, [vector], negatives or []), k, whole_only)

    def explainer(self, settings: Settings | None = None) -> Explainer:
        """How any indexed image scores for a query (for the failure report: relevant images ranked low)."""
        return Explainer(self.store, self.embedder, settings or self.settings)

    def image_size(self, sha256: str) -> tuple[int, int] | None:
        """An indexed image's original (width, height), or None when it is not known."""
        return self.catalog.image_size(sha256)

    def errors(self) -> list[BadFile]:
        """Files that could not be indexed, with reasons."""
        return self.catalog.errors()

    def stats(self) -> Stats:
        """What the database holds (counts, vectors, size on disk, model)."""
        return self.store.stats()

    # reads for the pages -------------------------------------------------------------------------
    def image_count(self) -> int:
        """Indexed images (cheap: no disk walk, unlike stats())."""
        return self.catalog.image_count()

    def image_page(self, offset: int, limit: int) -> list[ImageRow]:
        """Indexed images in path order, `limit` of them from `offset`, for browsing."""
        return self.catalog.image_page(offset, limit)

    def segments_of(self, sha256: str) -> list[Segment]:
        """An image's segments with their masks, best first."""
        return self.catalog.segments_of(sha256)

    def segment(self, sha256: str, index: int) -> Segment | None:
        """One stored segment with its mask, or None."""
        return self.catalog.segment(sha256, index)

    def indexed_paths(self) -> dict[str, str]:
        """Every indexed path -> the sha256 of its bytes."""
        return {path: known.sha256 for path, known in self.catalog.known_files().items()}

    def paths_of(self, sha256: str) -> list[str]:
        """An indexed image's paths (copies share one image), sorted; empty when it is not indexed."""
        return self.catalog.paths_of([sha256])[sha256]

    def recent_folders(self, limit: int = 10) -> list[str]:
        """Folders indexed into this database, most recent first."""
        return self.catalog.recent_folders(limit)

    def relative_path(self, path: str) -> str:
        """An indexed path relative to the innermost indexed folder it lies under (else in full)."""
        return relative_path(path, self.catalog.recent_folders())

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _is_set(event: threading.Event | None) -> bool:
    return event is not None and event.is_set()
