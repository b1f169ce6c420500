"""Indexing on Ray against the single-process indexer, the driver's write rate into a Chroma server, and
a model on paper of COCO and 1M images on 1, 8 and 32 GPUs.

Throughput: the same generated folder indexed by `Index.add_folder` in this process, then on a local Ray
with 1 and 2 model workers, test profile (tiny random models, tiny SAM) and demo profile (the small CLIP
trained here, weight-free segments). Single-process models are loaded before the clock starts; a Ray
run is reported both whole (Ray's workers start and load their models inside the run) and in steady
state (from its first results to its last), the rate a long job runs at.

Sink: the driver's own write path (irs.distributed.write: SQLite rows and masks, Chroma upserts) into a
`chroma run` server on this machine, images with 32 segments each.

Paper model: images/s = min(GPUs x per-GPU rate, driver write rate), with the per-GPU rate measured on an
H100 (bench/results/gpu.json) and the write rate from this run, capped by Chroma's insert rate measured at
1M vectors (bench/results/search_latency.json).

    python bench/ray_scaling.py --quick
    python bench/ray_scaling.py --json bench/results/ray_scaling.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import print_table, row, write_json  # noqa: E402

from irs.distributed import Done, Work, connect, write  # noqa: E402
from irs.index import Index  # noqa: E402
from irs.records import FileEntry, IndexReport, LoadedImage, Progress  # noqa: E402
from irs.segment import MaskProposal, postprocess  # noqa: E402
from irs.settings import Settings, load_settings  # noqa: E402
from irs.synthetic import write_folder  # noqa: E402

COCO_IMAGES = 118_287  # train2017
ARCHIVE_IMAGES = 1_000_000
SEGMENTS_PER_IMAGE = 32


def settings_for(profile: str, db: Path, **kw: Any) -> Settings:
    return load_settings({"profile": profile, "db": str(db), **kw}, environ={})


def single_process(settings: Settings, folder: Path) -> float:
    """images/s of the in-process indexer, models loaded beforehand."""
    with Index(settings) as index:
        _ = index.embedder, index.segmenter
        started = time.monotonic()
        report = index.add_folder(folder)
        elapsed = time.monotonic() - started
    return (report.added + report.reused) / elapsed


def on_ray(settings: Settings, folder: Path, workers: int) -> tuple[float, float, float]:
    """(images/s whole run, images/s steady state, seconds to the first results) on the local Ray."""
    marks: list[tuple[float, int]] = []

    def note(p: Progress) -> None:
        marks.append((time.monotonic(), p.done))

    with Index(settings) as index:
        started = time.monotonic()
        report = index.add_folder(folder, progress=note, ray="local", ray_workers=workers)
        elapsed = time.monotonic() - started
    count = report.added + report.reused
    (t_first, n_first), (t_last, n_last) = marks[0], marks[-1]
    steady = (n_last - n_first) / (t_last - t_first) if t_last > t_first else float("nan")
    return count / elapsed, steady, t_first - started


def throughput(work: Path, quick: bool) -> list[dict[str, Any]]:
    rows = []
    for profile, count, side in [("test", 16 if quick else 64, 256), ("demo", 12 if quick else 48, 512)]:
        folder = work / f"{profile}-images"
        write_folder(folder, count, seed=11, side=side)
        single = single_process(settings_for(profile, work / f"{profile}-single"), folder)
        rows.append(row(f"{profile} profile, {count} images: single process", single, "images/s"))
        for workers in (1, 2):
            whole, steady, first = on_ray(settings_for(profile, work / f"{profile}-ray{workers}"), folder, workers)
            ratio = steady / single
            target = ">= 0.8" if workers == 2 else None
            rows += [
                row(f"{profile}: Ray, {workers} worker(s), whole run", whole, "images/s"),
                row(f"{profile}: Ray, {workers} worker(s), start-up to first results", first, "s"),
                row(f"{profile}: Ray, {workers} worker(s), steady state", steady, "images/s"),
                row(f"{profile}: Ray {workers} worker(s) whole run / single process", whole / single, "x"),
                row(
                    f"{profile}: Ray {workers} worker(s) steady / single process",
                    ratio,
                    "x",
                    target,
                    ratio >= 0.8 if workers == 2 else None,
                ),
            ]
    return rows


def fake_results(count: int, dim: int, seed: int) -> list[Done]:
    """`count` results as the workers send them: a whole-image vector and 32 segments with masks."""
    rng = np.random.default_rng(seed)
    proposals = []
    for _ in range(SEGMENTS_PER_IMAGE):
        mask = np.zeros((256, 256), bool)
        y, x, h, w = rng.integers(0, 160, 2).tolist() + rng.integers(20, 96, 2).tolist()
        mask[y : y + h, x : x + w] = True
        proposals.append(MaskProposal(mask, float(rng.random()), 1.0))
    segments = postprocess(proposals, 0.0, 1.0, SEGMENTS_PER_IMAGE)

    def unit(*shape: int) -> np.ndarray:
        v = rng.normal(size=shape).astype(np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    done = []
    for i in range(count):
        sha = f"{seed:08x}{i:056x}"
        entry = FileEntry(f"/sink/{seed}/{i}.jpg", 1000 + i, i)
        image = LoadedImage(entry.path, sha, 1024, 768, None)
        done.append(Done(Work([entry.path], entry), image, vector=unit(dim), segments=segments))
        done[-1].segment_vectors = unit(len(segments), dim)
    return done


def sink(work: Path, quick: bool) -> tuple[list[dict[str, Any]], float]:
    """The driver's write rate into a local `chroma run` server; returns rows and images/s."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    server = subprocess.Popen(
        [exe, "run", "--path", str(work / "chroma-server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        settings = settings_for("test", work / "sink-db", chroma_host="127.0.0.1", chroma_port=port)
        deadline = time.monotonic() + 60
        while True:
            try:
                index = Index(settings)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        batches, per_batch = (5, 8) if quick else (25, 8)
        results = fake_results(batches * per_batch, 512, seed=1)
        report = IndexReport()
        started = time.monotonic()
        for start in range(0, len(results), per_batch):
            write(index.store, results[start : start + per_batch], report)
        elapsed = time.monotonic() - started
        index.close()
    finally:
        server.terminate()
        server.wait(30)
    rate = len(results) / elapsed
    vectors = rate * (SEGMENTS_PER_IMAGE + 1)
    return [
        row(f"driver writes into a Chroma server, {len(results)} images x 32 segments", rate, "images/s"),
        row("  the same in vectors", vectors, "vectors/s"),
    ], rate


def paper_model(write_rate: float) -> tuple[list[dict[str, Any]], list[str]]:
    """images/s and hours for COCO and 1M images on 1, 8 and 32 GPUs, and what limits each."""
    gpu = json.loads((ROOT / "bench/results/gpu.json").read_text())
    per_gpu = next(r["value"] for r in gpu if r["name"].endswith("images/s") and "vit_h" in r["name"])
    latency = json.loads((ROOT / "bench/results/search_latency.json").read_text())
    insert_1m = next(r["value"] for r in latency if r["name"].startswith("100k images") and "insert" in r["name"])
    sink_at_scale = min(write_rate, insert_1m / (SEGMENTS_PER_IMAGE + 1))
    rows = [
        row("per-GPU rate, SAM vit_h + CLIP on every segment (H100, gpu.json)", per_gpu, "images/s"),
        row("Chroma insert at 1M vectors (search_latency.json)", insert_1m, "vectors/s"),
        row("sink at scale: min(driver writes, 1M insert / 33)", sink_at_scale, "images/s"),
    ]
    lines = []
    for gpus in (1, 8, 32):
        compute = gpus * per_gpu
        rate = min(compute, sink_at_scale)
        limit = "GPUs (SAM)" if compute <= sink_at_scale else "driver writes / Chroma insert"
        coco, archive = COCO_IMAGES / rate / 3600, ARCHIVE_IMAGES / rate / 3600
        rows.append(row(f"{gpus} GPU(s): images/s (limited by {limit})", rate, "images/s"))
        lines.append(f"| {gpus} | {rate:.1f} | {coco:.1f} | {archive:.0f} | {limit} |")
    return rows, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--work", default=str(ROOT / "bench/out/ray_scaling"))
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    connect("local")  # one local Ray for every run below; its start-up is not counted
    rows = throughput(work, args.quick)
    sink_rows, write_rate = sink(work, args.quick)
    rows += sink_rows
    model_rows, lines = paper_model(write_rate)
    rows += model_rows
    print_table("Indexing on Ray vs one process (this machine), the write sink, and the paper model", rows)
    print("\n| GPUs | images/s | COCO (118k), hours | 1M images, hours | limited by |\n|---:|---:|---:|---:|---|")
    print("\n".join(lines))
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
