"""Store: one irs database, the catalog (SQLite, irs/catalog.py) and the vectors (Chroma, irs/vectors.py),
and the one order in which writes that span both are made.

The write order (every step is safe to kill, and a rerun finishes the work):
1. images: catalog row and its copy of the vector (not embedded) -> Chroma upsert -> catalog mark embedded;
2. files: a path is linked to an image only once that image is embedded (the catalog refuses otherwise);
3. segments: old vectors deleted -> catalog rows replaced -> Chroma upsert -> catalog mark segmented;
4. removal: the path's row goes first; `collect_garbage` then deletes vectors before rows.
So the catalog never claims a vector Chroma may lack, except after a lost `chroma/`: `quick_check` (every
open) and `check` find that, `repair` marks such images as not done, and the indexer redoes them.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irs.catalog import Catalog, DatabaseMissing, ManifestMismatch, StoreError
from irs.locks import open_lock
from irs.pipeline import chunks
from irs.positions import Positions, PositionTable, SegmentPool, has_deletion_counter, install_deletion_counter
from irs.records import EmbeddedImage, FileEntry, Segment, SegmentedImage
from irs.settings import Settings
from irs.vectors import Vectors, segment_id
from irs.version import __version__

log = logging.getLogger(__name__)

LOCKED_WAIT = 10.0  # seconds a locked local vector store is waited for when a database is opened

__all__ = ["Consistency", "DatabaseMissing", "ManifestMismatch", "Stats", "Store", "StoreError"]


@dataclass
class Consistency:
    """How the catalog and the vectors disagree; empty lists mean they agree."""

    missing_images: list[str] = field(default_factory=list)  # embedded per the catalog, no vector in Chroma
    extra_images: list[str] = field(default_factory=list)  # vectors of images the catalog does not know
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
        # several processes may create the same new database at once: one at a time builds the tables
        with open_lock(self.root):
            self.catalog = Catalog(self.root / "irs.sqlite")
            self.manifest = self._check_manifest(settings)
            self._install_deletion_counter()
            self.positions = PositionTable(self.root / "irs.sqlite")
            self._seen_deletions: int | None = None
            self._counts: tuple[int, tuple[int, int]] | None = None  # (catalog data_version, vector counts)
            self.vectors = self._open_vectors(settings)

    def _open_vectors(self, settings: Settings) -> Vectors:
        """Chroma's collections. A local store that another connection holds locked (SQLite's "database is
        locked", seen when a process opened it under load beside another) is waited for up to LOCKED_WAIT
        seconds and then reported as busy; any other failure to open it is damage, with the way to rebuild."""
        deadline = time.monotonic() + LOCKED_WAIT
        while True:
            try:
                return Vectors(settings, self.root, self.manifest["db_id"])
            except (StoreError, ManifestMismatch):
                raise
            except Exception as err:
                if settings.chroma_host:
                    raise
                if "database is locked" not in str(err):
                    raise StoreError(
                        f"{self.root / 'chroma'}: the vector store cannot be opened ({type(err).__name__}: {err}). "
                        f"Move it aside (mv {self.root / 'chroma'} {self.root / 'chroma.damaged'}), then run "
                        f"python -m irs check --repair --db {self.root} to rebuild the vectors from the images"
                    ) from None
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"{self.root / 'chroma'}: the vector store stayed locked for {LOCKED_WAIT:g} s (another "
                        f"process is writing to it); try again"
                    ) from None
                time.sleep(0.25)

    def _install_deletion_counter(self) -> None:
        """The trigger that tells the position table of deleted segments (once per database; a database
        this process may not write to goes without, and its position table rereads on every change)."""
        if has_deletion_counter(self.catalog.sql):
            return
        try:
            with self.catalog.transaction() as sql:
                install_deletion_counter(sql)
        except sqlite3.OperationalError as err:
            log.warning("%s: segment positions are read again on every change (%s)", self.root, err)

    def _check_manifest(self, settings: Settings) -> dict[str, Any]:
        """The manifest, written on first open; ManifestMismatch when the index settings differ."""
        manifest = self.catalog.manifest()
        wanted = settings.index_fingerprint()
        if not manifest:
            manifest = {"db_id": uuid.uuid4().hex, "irs_version": __version__, "settings": wanted}
            self.catalog.set_manifest(manifest)
            return manifest
        stored = manifest["settings"]
        diffs = [
            f"{name}: database has {stored.get(name)!r}, asked for {wanted[name]!r}"
            for name in wanted
            if stored.get(name) != wanted[name]
        ]
        if diffs:
            changed = stored.get("components_revision") != wanted.get("components_revision")
            raise ManifestMismatch(
                f"{self.root} was built with other index settings, and irs never mixes them:\n  "
                + "\n  ".join(diffs)
                + (
                    "\nThe weight-free segmenter's regions changed since (it drops background regions, regrows "
                    "edges the median filter took, joins fragments to their object, cuts finer colour clusters that "
                    "find small objects): index the folders again into a new --db (this one still opens with the irs "
                    "that built it)."
                    if changed and settings.segmenter == "components"
                    else "\nUse the database's settings (see irs.toml in it) or choose a new --db."
                )
            )
        return manifest

    def check_dimension(self, dim: int) -> None:
        """Record the embedding size on first use; refuse a model that gives another."""
        stored = self.manifest.get("dim")
        if stored is None:
            self.catalog.set_manifest({"dim": dim})
            self.manifest["dim"] = dim
        elif stored != dim:
            raise ManifestMismatch(f"{self.root}: vectors are {stored}-d, this model gives {dim}-d")

    # writes, in the order of the module doc ------------------------------------------------------
    def add_images(self, images: list[EmbeddedImage]) -> None:
        """Store new images and their whole-image vectors (step 1)."""
        if not images:
            return
        self.catalog.add_images(images)
        self.vectors.upsert_images(images)
        self.catalog.mark("embedded", [image.sha256 for image in images], True)

    def link_files(self, links: Iterable[tuple[FileEntry, str]]) -> None:
        """Point file paths at their images (step 2); every image must already be embedded."""
        links = list(links)
        linked = self.catalog.link_files(links)
        if linked != len(links):
            raise RuntimeError(f"{len(links) - linked} of {len(links)} files point at images not yet embedded")

    def add_segments(self, images: list[SegmentedImage]) -> None:
        """Replace the segments of several images (step 3). One call per batch of images, not per image:
        Chroma's cost is mostly per call."""
        shas = [image.sha256 for image in images]
        self._delete_segment_vectors(shas)
        self.catalog.replace_segments(images)
        self.vectors.upsert_segments(images)
        self.catalog.mark("segmented", shas, True)

    def copy_image_vectors(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Copy into the catalog the whole-image vectors only Chroma holds (a database indexed before the
        catalog kept them; once). `progress(done, total)` after each batch. Returns how many were copied."""
        missing = self.catalog.embedded_without_vectors()
        for done, chunk in enumerate(chunks(missing, self.vectors.batch_limit), 1):
            self.catalog.put_image_vectors(self.vectors.image_vectors(chunk))
            if progress:
                progress(min(done * self.vectors.batch_limit, len(missing)), len(missing))
        return len(missing)

    def _delete_segment_vectors(self, shas: list[str]) -> None:
        counts = self.catalog.segment_count(shas)
        self.vectors.delete_segments([segment_id(sha, i) for sha in shas for i in range(counts[sha])])

    def forget_paths(self, paths: Iterable[str]) -> None:
        """Drop file rows (step 4); `collect_garbage` removes images nothing refers to any more."""
        self.catalog.forget_paths(paths)

    def collect_garbage(self) -> int:
        """Delete images (vectors, then segments and rows) that no file refers to. Returns how many."""
        orphans = self.catalog.orphan_images()
        if orphans:
            self._delete_segment_vectors(orphans)
            self.vectors.delete_images(orphans)
            self.catalog.delete_images(orphans)
        return len(orphans)

    # reads that need both -------------------------------------------------------------------------
    def vector_counts(self) -> tuple[int, int]:
        """How many image and segment vectors Chroma holds. Counting costs a search several milliseconds,
        so the counts are read again only after the catalog changed: every write that adds vectors is
        followed by one to the catalog (see the write order above)."""
        version = self.positions.data_version()
        known = self._counts
        if known is None or known[0] != version:
            known = self._counts = (version, (self.vectors.image_count(), self.vectors.segment_count()))
        return known[1]

    def image_vectors(self, shas: list[str]) -> dict[str, np.ndarray]:
        """sha256 -> whole-image vector, for the images that have one: from the catalog's copy, else (a
        database not yet copied, see `copy_image_vectors`) from Chroma."""
        found = self.catalog.image_vectors(shas)
        missing = [sha for sha in shas if sha not in found]
        return found | self.vectors.image_vectors(missing) if missing else found

    def current_positions(self) -> Positions:
        """Every segment's position as the catalog has it now. When segments were deleted meanwhile (by this
        or another process) the in-memory segment vectors are dropped too: they may be of replaced segments."""
        positions = self.positions.current()
        if positions.deletions != self._seen_deletions:
            if self._seen_deletions is not None:
                self.vectors.clear_cache()
            self._seen_deletions = positions.deletions
        return positions

    def query_segments(self, vector: np.ndarray, n: int) -> SegmentPool:
        """The n segments nearest to `vector`, best first, with positions from memory (no masks). A segment
        the catalog does not list (its rows not yet written, or a stray vector) is left out of the hits, and
        counted in `returned`."""
        ids, sims = self.vectors.segment_neighbours(vector, n)
        positions = self.current_positions()
        rows = positions.rows(ids)
        if (rows < 0).any():  # written after this snapshot was taken? read the catalog once more
            positions = self.current_positions()
            rows = positions.rows(ids)
        known = rows >= 0
        return SegmentPool(positions, rows[known], sims[known], sims)

    def segment_vectors(self, shas: list[str]) -> Iterator[tuple[str, Segment, np.ndarray]]:
        """Every stored segment of the given images with its vector (for rescoring a few candidates)."""
        positions = self.current_positions()
        segments = {sha: {seg.index: seg for seg in positions.segments(positions.image_rows(sha))} for sha in shas}
        for sha, idx, vector in self.vectors.segment_vectors({sha: list(segs) for sha, segs in segments.items()}):
            yield sha, segments[sha][idx], vector

    # consistency between the catalog and the vectors ---------------------------------------------
    def quick_check(self) -> str | None:
        """A cheap comparison of counts (done on every open): a message when Chroma holds fewer vectors
        than the catalog says are stored (a lost or replaced vector store), else None."""
        embedded, segments = self.catalog.counts().embedded, self.catalog.done_segment_count()
        have_images, have_segments = self.vectors.image_count(), self.vectors.segment_count()
        if have_images >= embedded and have_segments >= segments:
            return None
        return (
            f"{self.root}: the vector store holds {have_images:,} image and {have_segments:,} segment vectors, "
            f"the catalog lists {embedded:,} and {segments:,}. Run python -m irs check "
            f"--repair --db {self.root} (index does it too) to re-embed what is missing"
        )

    def check(self) -> Consistency:
        """Compare every id both ways (reads every id in Chroma: seconds per million vectors)."""
        embedded = self.catalog.image_ids(embedded_only=True)
        known = self.catalog.image_ids(embedded_only=False)
        rows = self.catalog.segment_rows()
        orphans = self.catalog.orphan_images()
        have_images = set(self.vectors.all_ids(self.vectors.images))
        have_segments = set(self.vectors.all_ids(self.vectors.segments))
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
        """Make the two agree: delete what nothing refers to, and mark images whose vectors are missing as
        not done, so that the next indexing pass (Index.repair, or add_folder) redoes them."""
        self.vectors.delete_images(found.extra_images)
        self.vectors.delete_segments(found.extra_segments)
        self.catalog.mark("embedded", found.missing_images, False)
        self.catalog.mark("segmented", found.missing_segments, False)
        self.catalog.delete_unknown_segments()
        self.vectors.clear_cache()
        self.collect_garbage()

    def stats(self) -> Stats:
        size = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        index_settings = self.manifest["settings"]
        return Stats(
            **asdict(self.catalog.counts()),
            image_vectors=self.vectors.image_count(),
            segment_vectors=self.vectors.segment_count(),
            disk_bytes=size,
            model=f"{index_settings['clip_model']} / {index_settings['clip_pretrained'] or 'random'}",
            segmenter=index_settings["segmenter"],
        )

    def close(self) -> None:
        self.positions.close()
        self.catalog.close()
