"""Index on a Ray cluster: the same stages as `Index.add_folder`, with the models in a Ray Data actor pool.

The driver (the process that runs `irs index --ray`) decides what to do from the catalog, exactly as a
single-process run does, and is the only writer: results stream back to it and it stores them in the
order of irs.store (image row -> vector -> embedded; file links; segments), so a driver killed at any
moment leaves a database the next run, with or without Ray, completes.

    work items --> read, hash, decode (CPU tasks) --> CLIP + SAM + crops + CLIP (actor pool) --> driver writes

Ray Data streams the items through both stages with bounded queues, so memory stays flat however many
files there are. Workers need irs's dependencies installed and the image paths readable under the same
names (a shared filesystem); the irs code itself is shipped to them by the job (`py_modules`).
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irs.load import LoadError, load_any, load_image, within_limit
from irs.pipeline import batch_or_each, chunks
from irs.records import (
    BadFile,
    EmbeddedImage,
    FileEntry,
    IndexReport,
    LoadedImage,
    Progress,
    ProgressFn,
    Segment,
    SegmentedImage,
)
from irs.settings import Settings

if TYPE_CHECKING:
    from irs.store import Store

READ_CPUS = 0.25  # a read task mostly waits on the disk and the decoder: four share a core
WORKER_CPUS = 0.5  # fractional, so that model actors never hold every core the read tasks need
MAX_THREADS = 8  # torch threads per CPU worker


@dataclass
class Work:
    """One unit of work: a new or changed file (`entry`), or an embedded image awaiting its segments
    (`sha256`, readable from any of `paths`)."""

    paths: list[str]
    entry: FileEntry | None = None
    sha256: str = ""


@dataclass
class Done:
    """What the workers made of one `Work`. The decoded pixels (`image.pixels`) travel from the read task
    to the models only: the models drop them, so the driver receives vectors and segments, not images."""

    work: Work
    image: LoadedImage | None = None
    problems: list[BadFile] = field(default_factory=list)  # paths that could not be read on the way
    error: str = ""  # the file cannot be used at all (read, decode or whole-image embedding failed)
    vector: np.ndarray | None = None
    segments: list[Segment] | None = None  # None: not segmented
    segment_vectors: np.ndarray | None = None
    segment_error: str = ""  # segmenting failed: the image stays pending, and the next run tries again


@dataclass
class Cluster:
    """Where the work runs: the workers, each one's resources, and the settings they load models with."""

    workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    threads: int
    settings: Settings


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address` ("auto": the one `ray start` runs here), or start a local one
    (None or "local"). Returns True when this call started Ray (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address in (None, "", "local"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # workers import irs from this checkout; on a cluster they get it through py_modules
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(_code_root()), os.environ.get("PYTHONPATH")]))}
        ray.init(num_cpus=cpus, include_dashboard=False, runtime_env={"env_vars": env}, **quiet)
    else:
        ray.init(address=address, runtime_env={"py_modules": [str(_code_root() / "irs")]}, **quiet)
    return True


def _code_root() -> Path:
    return Path(__file__).resolve().parents[1]


def plan_cluster(settings: Settings, workers: int = 0) -> Cluster:
    """How many model workers, and with what: one per GPU where the cluster has GPUs (unless the settings
    say cpu), else `workers` CPU workers (default 2: on 2 cores two one-thread workers ran at twice the
    rate of one two-thread worker, bench/ray_scaling.py) sharing the cluster's cores as torch threads."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus and (settings.device == "auto" or settings.device.startswith("cuda")):
        # Ray gives each actor its own GPU as device 0 (CUDA_VISIBLE_DEVICES), so never "cuda:N" there
        return Cluster(workers or gpus, 1.0, 1.0, 4, settings.replace(device="cuda"))
    count = workers or min(2, cpus)
    threads = max(1, min(MAX_THREADS, cpus // count))
    return Cluster(count, 0.0, WORKER_CPUS, threads, settings.replace(device="cpu"))


def read(work: Work, settings: Settings) -> Done:
    """Read, hash and decode one item at working resolution (a CPU task). A new file is always decoded
    (the driver alone knows whether its bytes are indexed already); a pending image only from a path
    that still holds its bytes."""
    done = Done(work)
    try:
        if work.entry is not None:
            done.image = within_limit(
                lambda path: load_image(path, settings.max_pixels, settings.work_max_side),
                work.entry.path,
                settings.decode_timeout,
            )
        else:
            done.image, done.problems = within_limit(
                lambda paths: load_any(paths, work.sha256, settings.max_pixels, settings.work_max_side),
                work.paths,
                settings.decode_timeout,
            )
    except LoadError as err:
        if work.entry is not None:
            done.error = str(err)
        else:
            done.problems = [BadFile(path, str(err)) for path in work.paths]
    return done


class Models:
    """A model worker (one Ray actor): CLIP and the segmenter, loaded once, run over batches of images.
    Failures are per image, as in a single-process run: a batch that fails is run image by image."""

    def __init__(self, cluster: Cluster, segment: bool) -> None:
        import torch

        from irs.embed import Embedder
        from irs.models import load_clip
        from irs.segment import make_segmenter

        torch.set_num_threads(cluster.threads)
        s = self.settings = cluster.settings
        clip = load_clip(s.clip_model, s.clip_pretrained, s.device)
        self.embedder = Embedder(clip, s.batch_size, s.segment_background, s.crop_padding)
        self.segmenter = make_segmenter(s) if segment else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        done = [pickle.loads(item) for item in batch["item"]]
        self.run(done)
        return {"item": [pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL) for d in done]}

    def run(self, done: list[Done]) -> None:
        """Fill in vectors and segments of every readable image in `done`, in place."""
        import torch
        from PIL import Image

        embedder = self.embedder
        new = [d for d in done if d.image is not None and d.work.entry is not None and not d.error]

        def whole(batch: list[Done]) -> np.ndarray:
            pixels = [embedder.clip.preprocess(Image.fromarray(d.image.pixels)) for d in batch]
            return embedder.encode_pixels(torch.stack(pixels))

        for d, out in zip(new, batch_or_each(whole, new)):
            if isinstance(out, Exception):
                d.error = f"embedding failed: {type(out).__name__}: {out}"
            else:
                d.vector = out
        if self.segmenter is not None:
            images = [d for d in done if d.image is not None and not d.error]
            for group in chunks(images, max(1, self.settings.sam_batch)):
                self._segment(group)
        for d in done:
            if d.image is not None:
                d.image.pixels = None  # megabytes per image the driver never reads

    def _segment(self, group: list[Done]) -> None:
        """Segment a group of images in one model batch, cut their crops and embed them together."""
        from irs.segment import segment_images

        def cut(batch: list[Done]) -> list[tuple[list[Segment], Any]]:
            masks = segment_images(self.segmenter, [d.image.pixels for d in batch], self.settings)
            return [(segs, self.embedder.segment_pixels(d.image.pixels, segs)) for d, segs in zip(batch, masks)]

        cut_ok, cropped = [], {}  # cropped: id of a Done -> its model-ready crops
        for d, out in zip(group, batch_or_each(cut, group)):
            if isinstance(out, Exception):
                d.segment_error = f"segmentation failed: {type(out).__name__}: {out}"
            else:
                d.segments, cropped[id(d)] = out
                cut_ok.append(d)

        embedded = batch_or_each(lambda batch: self.embedder.encode_groups([cropped[id(d)] for d in batch]), cut_ok)
        for d, out in zip(cut_ok, embedded):
            if isinstance(out, Exception):
                d.segments = None
                d.segment_error = f"embedding segments failed: {type(out).__name__}: {out}"
            else:
                d.segment_vectors = out


def stream(work: list[Work], cluster: Cluster, segment: bool, batch_size: int) -> Iterator[list[Done]]:
    """Push `work` through the Ray Data pipeline; yield each finished batch as it arrives."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # irs reports its own progress
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notices would interleave with irs's progress
    settings = cluster.settings

    def read_row(row: dict[str, Any]) -> dict[str, Any]:
        return {"item": pickle.dumps(read(pickle.loads(row["item"]), settings), protocol=pickle.HIGHEST_PROTOCOL)}

    items = [{"item": pickle.dumps(w, protocol=pickle.HIGHEST_PROTOCOL)} for w in work]
    dataset = (
        ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 200)))
        .map(read_row, num_cpus=READ_CPUS)
        .map_batches(
            Models,
            fn_constructor_kwargs={"cluster": cluster, "segment": segment},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cluster.workers),
            num_cpus=cluster.cpus_per_worker,
            num_gpus=cluster.gpus_per_worker,
        )
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        yield [pickle.loads(item) for item in batch["item"]]


def index_on_ray(
    store: Store,
    settings: Settings,
    todo: list[FileEntry],
    report: IndexReport,
    progress: ProgressFn | None,
    stop: threading.Event | None,
    segment: bool,
    address: str | None,
    workers: int = 0,
) -> bool:
    """Embed `todo` and segment it (and every image still awaiting segments) on Ray; the driver writes.
    Returns True if stopped by `stop`."""
    segment = segment and settings.segmenter != "none"
    pending = store.catalog.pending_segmentation() if segment else []
    paths = store.catalog.paths_of(pending)
    work = [Work(paths[sha], sha256=sha) for sha in pending if paths.get(sha)]
    work += [Work([entry.path], entry) for entry in todo]
    if not work:
        return False
    started_ray = connect(address)
    stages = stream(work, plan_cluster(settings, workers), segment, _batch_size(settings, segment))
    try:
        started, count, stopped = time.monotonic(), 0, False
        for done in stages:
            write(store, done, report)
            count += len(done)
            if progress:
                progress(Progress("segment" if segment else "embed", count, len(work), started, _last_path(done)))
            if stop is not None and stop.is_set():
                stopped = True
                break
    finally:
        stages.close()  # stops the streaming executor: the cluster's work ends with the driver's
        if started_ray:
            import ray

            ray.shutdown()
    return stopped


def _batch_size(settings: Settings, segment: bool) -> int:
    # with segments a batch is a few images' SAM work: small, so results stream back steadily
    return max(settings.sam_batch, 4) if segment else settings.batch_size


def _last_path(done: list[Done]) -> str:
    return done[-1].work.paths[0] if done and done[-1].work.paths else ""


def write(store: Store, done: list[Done], report: IndexReport) -> None:
    """Store one batch of results in the crash-safe order of irs.store, recording failures as a
    single-process run does (a file that cannot be used loses its old record; a failed segmentation
    leaves the image pending)."""
    catalog = store.catalog
    images: list[EmbeddedImage] = []
    links: list[tuple[FileEntry, str]] = []
    segmented: list[SegmentedImage] = []
    cleared: list[str] = []
    added: set[str] = set()
    for d in done:
        report.failed += d.problems
        entry = d.work.entry
        if entry is not None and (d.error or d.image is None):
            bad = BadFile(entry.path, d.error or "could not be read")
            report.failed.append(bad)
            store.forget_paths([entry.path])
            catalog.record_errors([bad])
            continue
        if d.image is None:
            continue  # a pending image none of whose paths still holds its bytes: the next run re-embeds
        sha = d.image.sha256
        if entry is not None:
            links.append((entry, sha))
            if sha in added or catalog.is_embedded(sha):
                report.reused += 1
                continue  # these bytes are indexed already (a copy or a rename): reuse their vectors
            store.check_dimension(len(d.vector))
            images.append(EmbeddedImage(sha, d.image.width, d.image.height, d.vector))
            added.add(sha)
            report.added += 1
        if d.segments is not None:
            segmented.append(SegmentedImage(sha, d.segments, d.segment_vectors))
            cleared += d.work.paths
            report.segmented += 1
        elif d.segment_error:
            report.failed += [BadFile(path, d.segment_error) for path in d.work.paths]
    store.add_images(images)
    store.link_files(links)
    store.add_segments(segmented)
    catalog.clear_errors(cleared)
