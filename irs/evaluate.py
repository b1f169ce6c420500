"""Evaluate: ranking metrics, loaders for real benchmarks, and the settings modes they are compared in
(`python -m irs eval`, the annotate page; the synthetic spatial benchmark is irs.benchmark).

Metrics (binary relevance). An evaluation file names each relevant image by a path relative to the indexed
folder ("val2017/0001.jpg": it matches an indexed path that ends with it) or by its bare file name (matched
only when one indexed image has that name; see `drop_ambiguous`).
- R@K: the share of queries with at least one relevant image in the top K.
- mAP: mean over queries of average precision over the top `depth` results (100 by default),
  AP = sum over relevant hits of precision at that rank / min(relevant count, depth).
- nDCG@10: DCG of the top 10 over the ideal DCG.
- loc_acc: over queries whose top result is relevant and has known regions, the share whose matched
  segment (for the query's first object) has box IoU >= 0.5 with one of those regions.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irs.geometry import Box, box_iou
from irs.records import SearchResult

MODES: dict[str, dict[str, float]] = {
    # whole-image CLIP: the query against whole images, nothing else
    "whole_image": {"weight_image": 1.0, "weight_segment": 0.0},
    # segments matched by similarity, positions and relations ignored
    "segments": {"weight_position": 0.0, "weight_relation": 0.0},
    # the full system
    "segments_positions": {},
}


@dataclass
class EvalQuery:
    text: str
    relevant: set[str]  # relative paths or file names, "/"-separated
    regions: dict[str, list[Box]] = field(default_factory=dict)  # relative path or file name -> ground-truth boxes
    family: str = "all"


def recall_at(ranked: list[str], relevant: set[str], k: int) -> float:
    return float(any(r in relevant for r in ranked[:k]))


def average_precision(ranked: list[str], relevant: set[str], depth: int = 100) -> float:
    hits, total = 0, 0.0
    for i, key in enumerate(ranked[:depth], 1):
        if key in relevant:
            hits += 1
            total += hits / i
    denom = min(len(relevant), depth)
    return total / denom if denom else 0.0


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, key in enumerate(ranked[:k]) if key in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def localized(result: SearchResult, regions: list[Box], threshold: float = 0.5) -> bool:
    """Does the segment matched for the first phrase overlap a ground-truth region enough?"""
    segment = result.matches[0].segment if result.matches else result.segment
    return segment is not None and any(box_iou(segment.bbox, r) >= threshold for r in regions)


def score_queries(
    search: Callable[[str, int], list[SearchResult]],
    queries: list[EvalQuery],
    depth: int = 100,
    progress: Callable[[int, int], Any] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Run every query and average the metrics per family (and over all, as "all")."""
    rows: dict[str, list[dict[str, float | None]]] = {}
    for n, q in enumerate(queries, 1):
        try:
            results = search(q.text, depth)
        except ValueError:  # a caption with nothing to search for (empty, punctuation) counts as a miss
            results = []
        ranked = [_entry(r, q.relevant) or r.path for r in results]
        loc = None
        regions = q.regions.get(_entry(results[0], q.regions) or "") if results else None
        if ranked and ranked[0] in q.relevant and regions and results[0].matches:
            loc = float(localized(results[0], regions))
        row = {
            "r1": recall_at(ranked, q.relevant, 1),
            "r5": recall_at(ranked, q.relevant, 5),
            "r10": recall_at(ranked, q.relevant, 10),
            "map": average_precision(ranked, q.relevant, depth),
            "ndcg10": ndcg_at(ranked, q.relevant, 10),
            "loc_acc": loc,
        }
        for family in {q.family, "all"}:
            rows.setdefault(family, []).append(row)
        if progress:
            progress(n, len(queries))
    return {family: _mean_rows(family_rows) for family, family_rows in rows.items()}


def matches(path: str, entry: str) -> bool:
    """Whether an indexed path is the image an evaluation entry names (a relative path or a file name)."""
    path = path.replace(os.sep, "/")
    return path == entry or path.endswith("/" + entry)


def _entry(result: SearchResult, entries: Iterable[str]) -> str | None:
    """The evaluation entry a result is (any of its paths may match), or None."""
    paths = result.paths or [result.path]
    return next((e for e in entries if any(matches(p, e) for p in paths)), None)


def anchor(queries: list[EvalQuery], folder: str, indexed: dict[str, str]) -> list[EvalQuery]:
    """Queries whose entries that name a file indexed under `folder` (`--folder`) name that file's path."""
    root = os.path.realpath(os.path.expanduser(folder))  # as add_folder resolves it

    def fix(entry: str) -> str:
        path = os.path.join(root, *entry.split("/"))
        return path if path in indexed else entry

    return [
        EvalQuery(q.text, {fix(e) for e in q.relevant}, {fix(k): v for k, v in q.regions.items()}, q.family)
        for q in queries
    ]


def drop_ambiguous(queries: list[EvalQuery], indexed: dict[str, str]) -> tuple[list[EvalQuery], list[str]]:
    """Queries without the entries that name more than one indexed image (`indexed`: path -> sha256), and
    those entries, sorted. Copies of the same bytes are one image. A query left with nothing relevant is
    dropped: it cannot be scored."""
    by_name: dict[str, list[tuple[str, str]]] = {}
    for path, sha in indexed.items():
        by_name.setdefault(Path(path).name, []).append((path, sha))
    ambiguous: set[str] = set()
    for entry in {e for q in queries for e in q.relevant}:
        if len({sha for path, sha in by_name.get(Path(entry).name, []) if matches(path, entry)}) > 1:
            ambiguous.add(entry)
    kept = []
    for q in queries:
        relevant = q.relevant - ambiguous
        if relevant:
            regions = {k: v for k, v in q.regions.items() if k not in ambiguous}
            kept.append(EvalQuery(q.text, relevant, regions, q.family))
    return kept, sorted(ambiguous)


def _entry_name(text: str) -> str:
    """An evaluation file's image entry as matched: "/"-separated, without a leading "./"."""
    text = text.replace("\\", "/")
    return text[2:] if text.startswith("./") else text


def _mean_rows(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"n": float(len(rows))}
    for key in rows[0]:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = round(sum(values) / len(values), 4) if values else None
    return out


# ---- loaders for real data -------------------------------------------------------------------------


def load_jsonl(path: str | Path) -> list[EvalQuery]:
    """One object per line: {"query": str, "relevant": [paths or file names], "regions": {path or file:
    [[x0,y0,x1,y1]]}?, "family": str?}. Boxes are normalised to 0..1."""
    queries = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            queries.append(
                EvalQuery(
                    text=str(obj["query"]),
                    relevant={_entry_name(str(r)) for r in obj["relevant"]},
                    regions={_entry_name(k): [tuple(b) for b in v] for k, v in (obj.get("regions") or {}).items()},
                    family=str(obj.get("family", "all")),
                )
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{n}: not a query line ({err})") from None
    return queries


def load_coco_captions(path: str | Path) -> list[EvalQuery]:
    """COCO `captions_val2017.json`: every caption is a query; its image is the one relevant answer."""
    data = json.loads(Path(path).read_text())
    names = {img["id"]: _entry_name(img["file_name"]) for img in data["images"]}
    return [EvalQuery(a["caption"].strip(), {names[a["image_id"]]}) for a in data["annotations"]]


def load_karpathy(path: str | Path, split: str = "test") -> list[EvalQuery]:
    """Karpathy's `dataset_coco.json` (5k test) or `dataset_flickr30k.json` (1k test): each sentence of
    each image in `split` is a query for that image."""
    data = json.loads(Path(path).read_text())
    return [
        EvalQuery(sentence["raw"].strip(), {image["filename"]})
        for image in data["images"]
        if image.get("split") == split
        for sentence in image["sentences"]
    ]


# ---- tables ----------------------------------------------------------------------------------------


def format_table(title: str, metrics: dict[str, dict[str, float | None]], keys: Iterable[str]) -> str:
    keys = list(keys)
    lines = [title, "family".ljust(14) + "".join(k.rjust(9) for k in keys)]
    for family, row in metrics.items():
        cells = "".join(("-" if row.get(k) is None else f"{row[k]:.3f}").rjust(9) for k in keys)
        lines.append(family.ljust(14) + cells)
    return "\n".join(lines)
