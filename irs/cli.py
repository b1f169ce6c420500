"""The command line: `python -m irs index|search|errors|stats|sample`. A thin layer over irs.Index."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from irs.catalog import damaged_message
from irs.evaluate import (
    METRIC_KEYS,
    MODES,
    EvalQuery,
    Failure,
    WorstQueries,
    anchor,
    drop_ambiguous,
    find_failures,
    format_failures,
    format_table,
    load_coco_captions,
    load_jsonl,
    load_karpathy,
    locate,
    query_json,
    score_queries,
)
from irs.export import export_format, write_export
from irs.index import Index, IndexReport, Progress
from irs.load import LoadError
from irs.locks import DatabaseBusy
from irs.models import WeightsError
from irs.positional import InstanceFile, PositionalOptions, load_instances, positional_queries
from irs.query import parse_query
from irs.settings import PROFILES, SettingsError, load_settings
from irs.store import ManifestMismatch, StoreError

T = TypeVar("T")

# commands that may create a database; the others refuse to run on one that does not exist
CREATING = ("index", "eval")


def _parser() -> argparse.ArgumentParser:
    # --db and --profile are accepted before or after the command (SUPPRESS: a later parser's
    # default never overwrites a value given earlier)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help="database folder (IRS_DB)")
    common.add_argument(
        "--profile", default=argparse.SUPPRESS, help=f"settings profile: {', '.join(PROFILES)} (IRS_PROFILE)"
    )
    parser = argparse.ArgumentParser(
        prog="irs", description="Image retrieval with SAM segments and CLIP.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    p = command("index", "index a folder of images (resumable)")
    p.add_argument("folder")
    p.add_argument("--no-segments", action="store_true", help="whole-image vectors only")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the models on Ray: a local Ray without ADDRESS, else the cluster there (e.g. auto)",
    )
    p.add_argument("--ray-workers", type=int, default=0, metavar="N", help="model workers (default: 1 per GPU, else 2)")

    p = command("search", "search the index with a text query, a query image, or both")
    p.add_argument("query", nargs="?", help="what to look for (optional with --image)")
    p.add_argument("-k", type=int, default=10, help="how many images (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--image", metavar="FILE", help="find images like this one (mixed with the query when given)")
    p.add_argument("--image-weight", type=float, default=1.0, help="the query image's weight in the mix (default 1)")
    p.add_argument("--text-weight", type=float, default=1.0, help="the query text's weight in the mix (default 1)")
    p.add_argument(
        "--export", metavar="FILE", help="also write the results to FILE: .csv, .json, or .coco.json (masks)"
    )

    p = command("errors", "files that could not be indexed, with reasons")
    p.add_argument("--json", action="store_true", help="print JSON: [{path, reason}]")
    command("stats", "what the index holds")
    p = command("check", "compare the catalog (SQLite) with the vectors (Chroma), id by id")
    p.add_argument("--repair", action="store_true", help="delete stray vectors, re-embed missing ones")

    p = command("eval", "score text->image retrieval on labelled queries (COCO, Flickr30k, JSONL, boxes)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "queries", nargs="?", help="captions_val2017.json, dataset_coco.json / dataset_flickr30k.json, or .jsonl"
    )
    source.add_argument(
        "--positional",
        metavar="INSTANCES",
        help="generate positional queries from a COCO-format instance file (COCO, LVIS, Objects365, CVAT)",
    )
    p.add_argument("--format", choices=["jsonl", "coco", "karpathy"], help="default: from the file name")
    p.add_argument("--split", default="test", help="Karpathy split (default test)")
    p.add_argument("--folder", help="index this image folder first (resumable)")
    p.add_argument("--modes", default="whole_image,segments_positions", help="comma-separated: " + ",".join(MODES))
    p.add_argument("--depth", type=int, default=100, help="results per query for mAP (default 100)")
    p.add_argument("--json", dest="json_out", help="also write the metrics to this file")
    p.add_argument("--failures", type=int, default=0, metavar="N", help="print the N worst queries of each mode")
    p.add_argument("--failures-json", metavar="FILE", help="also write them to FILE (N: 10 unless --failures)")
    defaults = PositionalOptions()
    p.add_argument(
        "--per-family",
        type=int,
        default=defaults.per_family,
        metavar="N",
        help=f"--positional: queries per family (default {defaults.per_family})",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="--positional: which queries are drawn (default 0)")
    p.add_argument(
        "--max-share",
        type=float,
        default=defaults.max_share,
        metavar="SHARE",
        help=f"--positional: drop queries relevant to more than this share of images (default {defaults.max_share})",
    )
    p.add_argument("--save-queries", metavar="FILE", help="--positional: also write the queries as JSONL")

    p = command("sample", "write a folder of synthetic scenes")
    p.add_argument("folder")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    return parser


class _Bars:
    """Progress on stderr, fed by Index progress reports: tqdm bars on a terminal; elsewhere (a log
    file, a pipe) a plain line every `every` seconds and at the end of each stage, without the
    cursor-control codes that bars write."""

    def __init__(self, quiet: bool, every: float = 10.0) -> None:
        self.quiet = quiet
        self.terminal = sys.stderr.isatty()
        self.every = every
        self.bars: dict[str, Any] = {}
        self.last_line = 0.0

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        if not self.terminal:
            now = time.monotonic()
            if p.done == p.total or now - self.last_line >= self.every:
                self.last_line = now
                print(str(p), file=sys.stderr, flush=True)
            return
        from tqdm import tqdm

        bar = self.bars.get(p.stage)
        if bar is None:
            bar = self.bars[p.stage] = tqdm(total=p.total, desc=p.stage, unit="img", file=sys.stderr)
        bar.update(p.done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _summary(report: IndexReport) -> None:
    """The closing lines of an indexing run: counts, then the failures grouped by reason."""
    print(
        f"{report.found} files: {report.added} embedded, {report.reused} reused, {report.unchanged} unchanged, "
        f"{report.removed} removed, {report.segmented} segmented, {len(report.failed)} failed"
        + (" (stopped: rerun to resume)" if report.stopped else "")
    )
    if not report.failed:
        return
    reasons = Counter(bad.reason.split(":")[0] for bad in report.failed)
    print("failed: " + ", ".join(f"{n} {why}" for why, n in reasons.most_common()), file=sys.stderr)
    shown = 20
    for bad in report.failed[:shown]:
        print(f"  {_shown(bad.path)}: {bad.reason}", file=sys.stderr)
    if len(report.failed) > shown:
        print(f"  … and {len(report.failed) - shown} more (python -m irs errors lists them all)", file=sys.stderr)


def _interruptible(run: Callable[[_Bars, threading.Event], T], quiet: bool) -> T:
    """Run a long job with progress; the first Ctrl-C stops it after the current batch, a second aborts."""
    stop = threading.Event()

    def on_interrupt(*_: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping after this batch (Ctrl-C again to abort); rerun to resume", file=sys.stderr)
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    bars = _Bars(quiet)
    try:
        return run(bars, stop)
    finally:
        bars.close()
        signal.signal(signal.SIGINT, previous)


def _index(index: Index, args: argparse.Namespace) -> int:
    report = _interruptible(
        lambda bars, stop: index.add_folder(
            args.folder,
            progress=bars,
            stop=stop,
            segment=not args.no_segments,
            ray=getattr(args, "ray", None),
            ray_workers=getattr(args, "ray_workers", 0),
        ),
        args.quiet,
    )
    _summary(report)
    return 0


def _check(index: Index, args: argparse.Namespace) -> int:
    """`check`: report disagreements (exit 1 if any); with --repair, fix them (exit 0 once they agree)."""
    if not args.repair:
        found = index.check()
        print(found)
        if found.ok:
            return 0
        print(f"repair: python -m irs check --repair --db {index.settings.db}", file=sys.stderr)
        return 1
    found, report = _interruptible(lambda bars, stop: index.repair(progress=bars, stop=stop), False)
    print(f"found: {found}")
    if not found.ok or report.added or report.segmented or report.failed:
        print(
            f"repaired: {report.added} images re-embedded, {report.segmented} re-segmented, "
            f"{len(report.failed)} failed" + (" (stopped: rerun to finish)" if report.stopped else "")
        )
    for bad in report.failed:
        print(f"  {bad.path}: {bad.reason}", file=sys.stderr)
    return 0


def _search(index: Index, args: argparse.Namespace) -> int:
    if args.export:
        export_format(args.export)  # a name irs cannot write is refused before the search, not after
    if args.image is None:
        results = index.search(args.query, k=args.k)
    else:
        results = index.search_image(args.image, args.query, args.k, args.image_weight, args.text_weight)
    shown = index.relative_path
    if args.export:
        write_export(args.export, results, index.image_size, shown)
        print(f"exported {len(results)} results to {args.export}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
        return 0
    parsed = results[0].parsed if results else parse_query(args.query) if args.image is None else None
    if parsed is not None:
        print(f"parsed: {parsed.describe()}")
    if not results:
        print("no results: the index is empty" if index.stats().images == 0 else "no results")
    for rank, r in enumerate(results, 1):
        parts = " ".join(f"{k}={v:.3f}" for k, v in r.parts.items())
        where = ""
        if r.segment is not None:
            where = " segment box=" + ",".join(f"{v:.2f}" for v in r.segment.bbox)
        print(f"{rank:3d}. {r.score:.4f}  {_shown(shown(r.path))}  [{parts}]{where}")
    return 0


def _eval(index: Index, args: argparse.Namespace) -> int:
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    # a file irs cannot read is refused before any indexing
    instances = load_instances(args.positional) if args.positional else None
    queries = [] if instances else _query_file(args)
    if args.folder:
        _index(index, argparse.Namespace(folder=args.folder, no_segments=False, quiet=False))
    indexed = index.indexed_paths()
    if instances:
        queries = _positional(instances, indexed, args)
    loaded = len(queries)
    if args.folder:  # the file's names are relative to the folder it names
        queries = anchor(queries, args.folder, indexed)
    queries, ambiguous = drop_ambiguous(queries, indexed)
    if ambiguous:
        shown = ", ".join(_shown(name) for name in ambiguous[:10]) + (" …" if len(ambiguous) > 10 else "")
        print(
            f"irs: {len(ambiguous)} relevant names match several indexed images and were not counted "
            f"(give paths relative to the indexed folder): {shown}; {loaded - len(queries)} queries left "
            "with nothing relevant were skipped",
            file=sys.stderr,
        )
    count = args.failures or (10 if args.failures_json else 0)
    out: dict[str, dict] = {}
    failures: list[tuple[str, list[Failure]]] = []
    for mode in modes:
        settings = index.settings.replace(**MODES[mode])
        worst = WorstQueries(count, args.depth)
        metrics = score_queries(
            lambda text, k, s=settings: index.search(text, k, settings=s), queries, args.depth, on_query=worst
        )
        out[mode] = metrics
        print(format_table(f"{len(queries)} queries, mode {mode}", metrics, METRIC_KEYS))
        if count:
            explain = index.explainer(settings)
            failures.append(
                (mode, find_failures(worst.worst(), mode, explain, indexed, index.relative_path, args.depth))
            )
    for mode, found in failures:  # after every table
        text = format_failures(found, len(queries)) or f"mode {mode}: no failures, every query's AP is 1"
        print("\n" + _shown_lines(text))
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(out, handle, indent=2)
    if args.failures_json:
        with open(args.failures_json, "w") as handle:
            json.dump([f.to_json() for _, found in failures for f in found], handle, indent=2)
    return 0


def _query_file(args: argparse.Namespace) -> list[EvalQuery]:
    fmt = args.format or (
        "jsonl" if args.queries.endswith(".jsonl") else "karpathy" if "dataset_" in args.queries else "coco"
    )
    loader = {
        "jsonl": load_jsonl,
        "coco": load_coco_captions,
        "karpathy": lambda path: load_karpathy(path, args.split),
    }[fmt]
    return loader(args.queries)


def _positional(instances: InstanceFile, indexed: dict[str, str], args: argparse.Namespace) -> list[EvalQuery]:
    """Queries generated from an instance file over its images that are indexed (looked up as `irs eval` looks
    up relevant names), with what was generated and set aside printed first."""
    located = locate((image.file_name for image in instances.images), indexed, args.folder)
    if not located.found:
        raise ValueError(
            f"none of the {len(instances.images)} images of {args.positional} is indexed"
            + ("" if args.folder else " (give --folder IMAGES to index them)")
        )
    if located.missing or located.ambiguous:
        print(
            f"irs: {len(located.missing)} images of {args.positional} are not indexed and "
            f"{len(located.ambiguous)} name several indexed images; both are left out",
            file=sys.stderr,
        )
    options = PositionalOptions(per_family=args.per_family, seed=args.seed, max_share=args.max_share)
    queries, report = positional_queries(instances, options, located.found)
    print(report.describe(options))
    if args.save_queries:
        with open(args.save_queries, "w") as handle:
            handle.writelines(json.dumps(query_json(q)) + "\n" for q in queries)
    return queries


def _shown_lines(text: str) -> str:
    """Text whose lines may hold file names, each line printable (see _shown)."""
    return "\n".join(_shown(line) for line in text.split("\n"))


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit 0 when it ran (files that failed are listed, not fatal), 1 when `check`
    finds disagreements, 2 when irs could not run (bad settings, no database, a busy or damaged one)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "search" and args.query is None and args.image is None:
        parser.error("search needs a query, --image FILE, or both")
    logging.basicConfig(level=logging.WARNING, format="irs: %(message)s")
    # PIL logs what it meets inside broken files without naming them; irs lists each file with its reason
    logging.getLogger("PIL").setLevel(logging.CRITICAL)
    if args.command == "sample":
        from irs.synthetic import write_folder

        scenes = write_folder(args.folder, args.count, args.seed)
        print(f"wrote {len(scenes)} scenes to {args.folder}")
        return 0
    db = "irs.sqlite"
    try:
        settings = load_settings({"db": getattr(args, "db", None), "profile": getattr(args, "profile", None)})
        db = Path(settings.db) / "irs.sqlite"
        with Index(settings, create=args.command in CREATING) as index:
            return _run(index, args)
    except (
        SettingsError,
        ManifestMismatch,
        WeightsError,
        FileNotFoundError,
        ValueError,
        StoreError,
        DatabaseBusy,
        LoadError,
    ) as err:
        return _fail(err)
    except sqlite3.DatabaseError as err:  # damaged after it was opened
        return _fail(damaged_message(Path(db), err))
    except BrokenPipeError:  # the reader of the output went away: no error of irs's (irs/__main__.py)
        raise
    except Exception as err:  # a bug in irs or a library: one line, the traceback on request
        if os.environ.get("IRS_DEBUG"):
            raise
        return _fail(f"unexpected error: {type(err).__name__}: {err} (set IRS_DEBUG=1 for the traceback)")


def _run(index: Index, args: argparse.Namespace) -> int:
    if args.command == "index":
        return _index(index, args)
    if args.command == "search":
        return _search(index, args)
    if args.command == "check":
        return _check(index, args)
    if args.command == "errors":
        errors = index.errors()
        if args.json:
            print(json.dumps([{"path": bad.path, "reason": bad.reason} for bad in errors], indent=2))
        for bad in [] if args.json else errors:
            print(f"{_shown(bad.path)}\t{bad.reason}")
        if not errors and not args.json:
            print("no files failed")
        return 0
    if args.command == "eval":
        return _eval(index, args)
    if args.command == "stats":
        print(json.dumps(index.stats().to_json(), indent=2))
        return 0
    return 2


def _shown(path: str) -> str:
    """A path on one line: a tab or newline in a file name is shown escaped (--json has it as it is)."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in path)


def _fail(err: object) -> int:
    print(f"irs: {err}", file=sys.stderr)
    return 2
