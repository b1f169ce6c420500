"""The command line: `python -m irs index|search|errors|stats|sample`. A thin layer over irs.Index."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from irs.evaluate import MODES, format_table, load_coco_captions, load_jsonl, load_karpathy, score_queries
from irs.index import Index, Progress
from irs.models import WeightsError
from irs.settings import SettingsError
from irs.store import ManifestMismatch


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irs", description="Image retrieval with SAM segments and CLIP.")
    parser.add_argument("--db", help="database folder (IRS_DB)")
    parser.add_argument("--profile", help="settings profile: default or test (IRS_PROFILE)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index a folder of images (resumable)")
    p.add_argument("folder")
    p.add_argument("--no-segments", action="store_true", help="whole-image vectors only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("search", help="search the index with a text query")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10, help="how many images (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("errors", help="files that could not be indexed, with reasons")
    sub.add_parser("stats", help="what the index holds")

    p = sub.add_parser("eval", help="score text->image retrieval on labelled queries (COCO, Flickr30k, JSONL)")
    p.add_argument("queries", help="captions_val2017.json, dataset_coco.json / dataset_flickr30k.json, or .jsonl")
    p.add_argument("--format", choices=["jsonl", "coco", "karpathy"], help="default: from the file name")
    p.add_argument("--split", default="test", help="Karpathy split (default test)")
    p.add_argument("--folder", help="index this image folder first (resumable)")
    p.add_argument("--modes", default="whole_image,segments_positions", help="comma-separated: " + ",".join(MODES))
    p.add_argument("--depth", type=int, default=100, help="results per query for mAP (default 100)")
    p.add_argument("--json", dest="json_out", help="also write the metrics to this file")

    p = sub.add_parser("sample", help="write a folder of synthetic scenes")
    p.add_argument("folder")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    return parser


class _Bars:
    """tqdm bars, one per pipeline stage, fed by Index progress reports."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        bar = self.bars.get(p.stage)
        if bar is None:
            bar = self.bars[p.stage] = tqdm(total=p.total, desc=p.stage, unit="img", file=sys.stderr)
        bar.update(p.done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _index(index: Index, args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_interrupt(*_: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping after this batch (Ctrl-C again to abort); rerun to resume", file=sys.stderr)
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    bars = _Bars(args.quiet)
    try:
        report = index.add_folder(args.folder, progress=bars, stop=stop, segment=not args.no_segments)
    finally:
        bars.close()
        signal.signal(signal.SIGINT, previous)
    print(
        f"{report.found} files: {report.added} embedded, {report.reused} reused, {report.unchanged} unchanged, "
        f"{report.removed} removed, {report.segmented} segmented, {len(report.failed)} failed"
        + (" (stopped: rerun to resume)" if report.stopped else "")
    )
    for bad in report.failed:
        print(f"  failed: {bad.path}: {bad.reason}", file=sys.stderr)
    return 0


def _search(index: Index, args: argparse.Namespace) -> int:
    results = index.search(args.query, k=args.k)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
        return 0
    if not results:
        print("no results: the index is empty" if index.stats()["images"] == 0 else "no results")
    for rank, r in enumerate(results, 1):
        parts = " ".join(f"{k}={v:.3f}" for k, v in r.parts.items())
        where = ""
        if r.segment is not None:
            where = " segment box=" + ",".join(f"{v:.2f}" for v in r.segment.bbox)
        print(f"{rank:3d}. {r.score:.4f}  {r.path}  [{parts}]{where}")
    return 0


def _eval(index: Index, args: argparse.Namespace) -> int:
    fmt = args.format or (
        "jsonl" if args.queries.endswith(".jsonl") else "karpathy" if "dataset_" in args.queries else "coco"
    )
    loader = {
        "jsonl": load_jsonl,
        "coco": load_coco_captions,
        "karpathy": lambda path: load_karpathy(path, args.split),
    }[fmt]
    queries = loader(args.queries)
    if args.folder:
        _index(index, argparse.Namespace(folder=args.folder, no_segments=False, quiet=False))
    out = {}
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise SystemExit(f"irs: unknown mode {mode!r}; one of {', '.join(MODES)}")
        settings = index.settings.replace(**MODES[mode])
        metrics = score_queries(lambda text, k, s=settings: index.search(text, k, settings=s), queries, args.depth)
        out[mode] = metrics
        print(
            format_table(
                f"{len(queries)} queries, mode {mode}", metrics, ("r1", "r5", "r10", "map", "ndcg10", "loc_acc")
            )
        )
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(out, handle, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="irs: %(message)s")
    if args.command == "sample":
        from irs.synthetic import write_folder

        scenes = write_folder(args.folder, args.count, args.seed)
        print(f"wrote {len(scenes)} scenes to {args.folder}")
        return 0
    try:
        with Index.open(args.db, profile=args.profile) as index:
            if args.command == "index":
                return _index(index, args)
            if args.command == "search":
                return _search(index, args)
            if args.command == "errors":
                for bad in index.errors():
                    print(f"{bad.path}\t{bad.reason}")
                return 0
            if args.command == "eval":
                return _eval(index, args)
            if args.command == "stats":
                print(json.dumps(index.stats(), indent=2))
                return 0
    except (SettingsError, ManifestMismatch, WeightsError, FileNotFoundError, ValueError) as err:
        print(f"irs: {err}", file=sys.stderr)
        return 2
    return 1
