"""Search latency: end-to-end p50/p95 (query text in, ranked images with segments and masks out) against the
bare cost underneath it (the text encoder and the Chroma queries irs makes), at 10k images + 100k segments
and at 100k images + 1M segments. Vectors are inserted directly, drawn from a clustered distribution
(CLIP vectors cluster; uniform random vectors are HNSW's worst case). Also measures Chroma's insert rate,
one call per image against irs's batched writes, how many pool rounds searches take (the slow tail), and
the throughput of 4 searching threads against 1 (threads in one process, as the app's browser tabs are), and
at 10k how close the top k come to scoring every image by brute force (Chroma's HNSW is approximate), and
what searching Chroma's graph wider (the chroma_ef_search setting) buys in exactness and costs in time. Each
size is searched three times: with the query's text tower in int8 (what the default picks on a CPU), float32
and bfloat16 (the text_dtype setting); and beside another busy process, with torch's waiting threads sleeping
(irs's default) and spinning.

    python bench/search_latency.py --quick          # 10k images only, about 4 minutes
    python bench/search_latency.py --json bench/results/search_latency.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import print_table, row, write_json  # noqa: E402

from irs.geometry import rle_encode  # noqa: E402
from irs.index import Index  # noqa: E402
from irs.query import parse_query  # noqa: E402
from irs.records import EmbeddedImage, FileEntry, Segment, SegmentedImage  # noqa: E402
from irs.search import embed_query, rank, scan  # noqa: E402
from irs.settings import Settings, load_settings  # noqa: E402

SEGMENTS_PER_IMAGE = 10
# the text_dtype setting's choices, what its default ("auto") picks on a CPU first
TEXT_DTYPES = ("int8", "float32", "bfloat16")
EF_SEARCH_SWEEP = (100, 400, 1000)  # chroma_ef_search values measured at 10k (Chroma's default first)
MASK = rle_encode(np.pad(np.ones((8, 8), bool), 4))  # masks are stored, but their size does not matter here


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float) -> np.ndarray:
    v = centres[rng.integers(len(centres), size=n)] + spread * rng.normal(size=(n, centres.shape[1]))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def fill(index: Index, n_images: int, rng: np.random.Generator, centres: np.ndarray, chunk: int = 2000) -> float:
    """Insert n_images images with SEGMENTS_PER_IMAGE segments each; returns segment vectors per second."""
    store, seg_time = index.store, 0.0
    for start in range(0, n_images, chunk):
        count = min(chunk, n_images - start)
        shas = [f"{i:064x}" for i in range(start, start + count)]
        images = clustered(rng, centres, count, 0.35)
        store.add_images([EmbeddedImage(sha, 1024, 768, vec) for sha, vec in zip(shas, images)])
        store.link_files(
            [(FileEntry(f"/photos/{i:07d}.jpg", 1, 1), sha) for i, sha in zip(range(start, start + count), shas)]
        )
        items = []
        for sha, img in zip(shas, images):
            seg_vecs = img + 0.6 * rng.normal(size=(SEGMENTS_PER_IMAGE, img.shape[0])) / np.sqrt(img.shape[0])
            seg_vecs = (seg_vecs / np.linalg.norm(seg_vecs, axis=1, keepdims=True)).astype(np.float32)
            xy = rng.uniform(0, 0.8, size=(SEGMENTS_PER_IMAGE, 2))
            segments = [
                Segment((x, y, x + 0.2, y + 0.2), (x + 0.1, y + 0.1), 0.04, MASK, (16, 16), 0.9, 0.9, j)
                for j, (x, y) in enumerate(xy)
            ]
            items.append(SegmentedImage(sha, segments, seg_vecs))
        t0 = time.perf_counter()
        store.add_segments(items)
        seg_time += time.perf_counter() - t0
    return n_images * SEGMENTS_PER_IMAGE / seg_time


def per_image_insert_rate(index: Index, rng: np.random.Generator, centres: np.ndarray, n_images: int) -> float:
    """Segment vectors per second when every image is written by its own call (the naive writer)."""
    dim = centres.shape[1]
    t0 = time.perf_counter()
    for i in range(n_images):
        sha = f"{10**9 + i:064x}"
        vecs = clustered(rng, centres, SEGMENTS_PER_IMAGE, 0.4)
        segments = [
            Segment((0, 0, 0.5, 0.5), (0.25, 0.25), 0.25, MASK, (16, 16), 0.9, 0.9, j)
            for j in range(SEGMENTS_PER_IMAGE)
        ]
        index.store.add_segments([SegmentedImage(sha, segments, vecs.reshape(-1, dim))])
    return n_images * SEGMENTS_PER_IMAGE / (time.perf_counter() - t0)


def queries(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    things = ["car", "dog", "bicycle", "tree", "person", "boat", "cat", "house", "bird", "lamp", "cup", "chair"]
    colours = ["red", "blue", "green", "white", "black", "yellow", "brown", "grey"]
    places = ["", " on the left", " on the right", " at the top", " in the bottom left", " in the centre"]
    out = set()
    while len(out) < n:
        out.add(f"a {rng.choice(colours)} {rng.choice(things)}{rng.choice(places)} {int(rng.integers(1000))}")
    return sorted(out)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure(index: Index, texts: list[str], k: int) -> dict[str, float]:
    """Median and 95th percentile of end-to-end search, text encoding, and the bare Chroma queries; how many
    pool rounds the searches took (a search whose top k its first pools cannot decide queries again with
    4x larger pools: the cause of the slow tail), and the latency of one-round and grown searches apart."""
    s = index.settings
    emb = index.embedder
    emb.texts(["warm up the model"])
    total, text_t, bare_t, rounds = [], [], [], []
    for text in texts:
        t0 = time.perf_counter()
        results = index.search(text, k)
        total.append(time.perf_counter() - t0)
        assert results and results[0].segment is not None
    for text in texts:  # the same searches again (texts cached) for their pool rounds
        parsed, trace = parse_query(text), {}
        rank(index.store, parsed, embed_query(emb, parsed), k, s, trace)
        rounds.append(trace["rounds"])
    emb._text_cache.clear()  # time the text encoder on uncached strings
    for text in texts:
        t0 = time.perf_counter()
        emb.texts([text + " again"])
        text_t.append(time.perf_counter() - t0)
    for text in texts:
        parsed = parse_query(text)
        vectors = embed_query(index.embedder, parsed)
        t0 = time.perf_counter()
        index.store.vectors.query_images(vectors.whole, max(s.image_pool, k))
        for vec in vectors.phrases:
            index.store.vectors.segment_neighbours(vec, max(s.segment_pool, k))  # ids and distances, as irs asks
        bare_t.append(time.perf_counter() - t0)
    ms = 1000.0
    one = [t for t, r in zip(total, rounds) if r == 1]
    grown = [t for t, r in zip(total, rounds) if r > 1]
    return {
        "p50": statistics.median(total) * ms,
        "p95": percentile(total, 95) * ms,
        "text_p50": statistics.median(text_t) * ms,
        "chroma_p50": statistics.median(bare_t) * ms,
        "grown_share": len(grown) / len(total),
        "max_rounds": max(rounds),
        "one_round_p50": statistics.median(one) * ms if one else float("nan"),
        "grown_p50": statistics.median(grown) * ms if grown else float("nan"),
    }


def exactness(index: Index, texts: list[str], k: int) -> tuple[float, float]:
    """How close the top k are to scoring every image (brute force, irs.search.scan): the share of the true
    top k found, and the share of queries whose top k is exactly the true one. The ranking is exact given
    what Chroma's HNSW returns; HNSW is approximate, so a segment it misses can be better than a pool's floor.
    Reads every vector once (10k images: a few seconds), then scores every image for every query."""
    shas = list(index.store.current_positions().shas)
    parsed = [parse_query(text) for text in texts]
    truths = scan(index.store, [(p, embed_query(index.embedder, p)) for p in parsed], index.settings, shas)
    found = exact = 0
    for text, scored in zip(texts, truths):
        truth = [sha for sha, _ in scored[:k]]
        got = [r.sha256 for r in index.search(text, k)]
        found += len(set(got) & set(truth))
        exact += got == truth
    return found / (k * len(texts)), exact / len(texts)


def ranking_p50(index: Index, texts: list[str], k: int) -> float:
    """p50 of search with the texts already encoded (the whole queries and their phrases): the ranking's own
    cost (ms)."""
    for text in texts:
        embed_query(index.embedder, parse_query(text))
    index.search(texts[0], k)
    times = []
    for text in texts:
        t0 = time.perf_counter()
        index.search(text, k)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def ef_search_point(settings: Settings, texts: list[str], k: int) -> tuple[float, float, float]:
    """Top-k recall, exact share and ranking p50 of a database opened with settings.chroma_ef_search."""
    index = Index(settings)
    try:
        return (*exactness(index, texts, k), ranking_p50(index, texts, k))
    finally:
        index.close()


def ef_search_sweep(settings: Settings, texts: list[str], k: int, label: str) -> list[dict]:
    """Exactness against cost as Chroma's HNSW searches wider (the chroma_ef_search setting). Each width in a
    fresh process: Chroma keeps a loaded graph's width for the life of the process that loaded it."""
    rows = []
    for ef in EF_SEARCH_SWEEP:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            recall, exact_share, p50 = pool.submit(
                ef_search_point, settings.replace(chroma_ef_search=ef), texts, k
            ).result()
        name = f"{label}: chroma_ef_search {ef}"
        rows += [
            row(f"{name}: top-{k} recall", recall, "share"),
            row(f"{name}: exact top {k}", 100 * exact_share, "%"),
            row(f"{name}: search p50, texts encoded", p50, "ms"),
        ]
    return rows


def beside_busy_point(settings: Settings, texts: list[str], k: int) -> float:
    """Search p50 (ms, texts not cached), run while `beside_busy` keeps one core busy."""
    index = Index(settings)
    try:
        index.search("warm up the model", k)
        times = []
        for text in texts:
            t0 = time.perf_counter()
            index.search(f"{text} beside", k)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000.0
    finally:
        index.close()


def beside_busy(settings: Settings, texts: list[str], k: int, label: str) -> list[dict]:
    """Search p50 beside a busy process, with torch's OpenMP threads sleeping while they wait (what importing
    irs sets) and spinning (OpenMP's default). Each in a fresh process: the policy is read when torch loads."""
    rows, ours = [], os.environ["OMP_WAIT_POLICY"]
    for policy in ("PASSIVE", "ACTIVE"):
        os.environ["OMP_WAIT_POLICY"] = policy  # the spawned process inherits it before it imports irs
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                p50 = pool.submit(beside_busy_point, settings, texts, k).result()
        finally:
            busy.kill()  # here, so that it stops even when the measuring process dies
            os.environ["OMP_WAIT_POLICY"] = ours
        rows.append(row(f"{label}: search p50 beside one busy process, OMP_WAIT_POLICY={policy}", p50, "ms"))
    return rows


def throughput(index: Index, texts: list[str], k: int, clients: int) -> float:
    """Searches per second with `clients` threads in this process searching at once (like browser tabs on
    one app), each its own uncached texts."""
    index.embedder._text_cache.clear()
    work = [[f"{text} c{c}" for text in texts] for c in range(clients)]

    def client(mine: list[str]) -> None:
        for text in mine:
            index.search(text, k)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, work))
    return clients * len(texts) / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k images + 100k segments only")
    parser.add_argument("--json")
    parser.add_argument("--work", default=str(ROOT / "bench/out/search"))
    parser.add_argument("--queries", type=int, default=None, help="default 200 (--quick: 50)")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    sizes = [10_000] if args.quick else [10_000, 100_000]
    rows = []
    for n_images in sizes:
        overrides = {
            "db": str(work / f"db-{n_images}"),
            "clip_model": "ViT-B-32",
            "clip_pretrained": "",
            "device": "cpu",
        }
        settings = load_settings({**overrides, "text_dtype": TEXT_DTYPES[0]}, environ={})
        index = Index(settings)
        centres = rng.normal(size=(max(50, n_images // 100), index.embedder.dim))
        t0 = time.perf_counter()
        rate = fill(index, n_images, rng, centres)
        label = f"{n_images // 1000}k images + {n_images * SEGMENTS_PER_IMAGE // 1000}k segments"
        print(f"{label}: filled in {time.perf_counter() - t0:.0f}s", flush=True)
        rows.append(row(f"{label}: Chroma insert, batched writes", rate, "vectors/s"))
        if n_images == sizes[0]:
            rows.append(
                row(
                    "Chroma insert, one call per image (10 vectors)",
                    per_image_insert_rate(index, rng, centres, 300),
                    "vectors/s",
                )
            )
        texts = queries(args.queries or (50 if args.quick else 200), n_images)
        index.close()
        big = n_images >= 100_000
        measured, speedups = {}, {}
        for dtype in TEXT_DTYPES:  # the same database searched with each query text tower
            searcher = Index(settings.replace(text_dtype=dtype))
            measured[dtype] = measure(searcher, texts, args.k)
            if dtype != "bfloat16":
                speedups[dtype] = throughput(searcher, texts[:20], args.k, 4) / throughput(
                    searcher, texts[:20], args.k, 1
                )
            searcher.close()
        m = measured[TEXT_DTYPES[0]]
        for dtype, got in measured.items():
            name = f"{label}: text {dtype}"
            overhead = got["p50"] / (got["text_p50"] + got["chroma_p50"])
            p50_target, p95_target = (50, 100) if big else (25, 2 * got["p50"])
            p95_label = "<= 100" if big else "<= 2x p50"
            rows += [
                row(f"{name}: search p50", got["p50"], "ms", f"<= {p50_target}", got["p50"] <= p50_target),
                row(f"{name}: search p95", got["p95"], "ms", p95_label, got["p95"] <= p95_target),
                row(f"{name}: text encoding p50", got["text_p50"], "ms"),
                row(f"{name}: overhead over text + Chroma", overhead, "x", "<= 1.3", overhead <= 1.3),
            ]
        rows += [
            row(f"{label}: bare Chroma queries p50", m["chroma_p50"], "ms"),
            row(f"{label}: searches whose pools grew", 100 * m["grown_share"], "%"),
            row(f"{label}: most pool rounds of a search", m["max_rounds"], "rounds"),
            row(f"{label}: p50 of one-round searches", m["one_round_p50"], "ms"),
            row(f"{label}: p50 of searches whose pools grew", m["grown_p50"], "ms"),
        ]
        rows += [
            row(f"{label}: text {dtype}: 4 concurrent clients vs 1 (threads)", x, "x throughput", ">= 3", x >= 3)
            for dtype, x in speedups.items()
        ]
        rows += beside_busy(settings, texts[:60], args.k, label)
        if not big:  # brute force needs every vector in memory and a Python score per image
            rows += ef_search_sweep(settings, queries(60, 7), args.k, label)
    print_table(f"Search latency (ViT-B-32 text tower, random weights; k={args.k})", rows)
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
