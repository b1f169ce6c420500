"""Evaluate: ranking metrics, loaders for real benchmarks, the settings modes they are compared in, and the
failure report (`python -m irs eval`, the annotate page; the synthetic spatial benchmark is irs.benchmark,
queries generated from COCO-format boxes are irs.positional).

Metrics (binary relevance). An evaluation file names each relevant image by a path relative to the indexed
folder ("val2017/0001.jpg": it matches an indexed path that ends with it) or by its bare file name (matched
only when one indexed image has that name; see `drop_ambiguous`). A query may also name images to ignore
(`EvalQuery.ignored`: whether they answer it cannot be told): they are taken out of its ranking before scoring.
- R@K: the share of queries with at least one relevant image in the top K.
- mAP: mean over queries of average precision over the top `depth` results (100 by default),
  AP = sum over relevant hits of precision at that rank / min(relevant count, depth).
- nDCG@10: DCG of the top 10 over the ideal DCG.
- loc_acc: over queries whose top result is relevant and has known regions, the share whose matched
  segment (for the query's first object) has box IoU >= 0.5 with one of those regions.

Failure report: `WorstQueries` keeps the worst queries of a run (the best-ranked relevant image ranked lowest,
or not at all; ties by AP), `find_failures` turns them into `Failure` rows (the parse, the top results with the
segment matched for each phrase, and the best-ranked relevant image with what was matched in it, its best
segments for each phrase and the ground-truth regions), `format_failures` prints them.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irs.geometry import Box, box_iou
from irs.query import ParsedQuery, Phrase, QueryError, check_searchable, parse_query
from irs.records import Match, SearchResult
from irs.search import WHOLE_IMAGE, QueryVectors, embed_query, score_image
from irs.spatial import position_fit

if TYPE_CHECKING:
    from irs.embed import Embedder
    from irs.settings import Settings
    from irs.store import Store

MODES: dict[str, dict[str, float]] = {
    # whole-image CLIP: the query against whole images, nothing else
    "whole_image": {"weight_image": 1.0, "weight_segment": 0.0},
    # segments matched by similarity, positions and relations ignored
    "segments": {"weight_position": 0.0, "weight_relation": 0.0},
    # the full system
    "segments_positions": {},
}
METRIC_KEYS = ("r1", "r5", "r10", "map", "ndcg10", "loc_acc")


@dataclass
class EvalQuery:
    text: str
    relevant: set[str]  # relative paths or file names, "/"-separated
    regions: dict[str, list[Box]] = field(default_factory=dict)  # relative path or file name -> ground-truth boxes
    family: str = "all"
    ignored: set[str] = field(default_factory=set)  # neither relevant nor not: left out of the ranking


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


@dataclass
class QueryOutcome:
    """One query as scored: its metrics, its results (ignored images left out) and the rank of its
    best-ranked relevant image (None: not in the top `depth`)."""

    query: EvalQuery
    metrics: dict[str, float | None]
    results: list[SearchResult]
    first_relevant: int | None
    order: int  # its place in the query list, so ties are reported in file order


def score_queries(
    search: Callable[[str, int], list[SearchResult]],
    queries: list[EvalQuery],
    depth: int = 100,
    progress: Callable[[int, int], Any] | None = None,
    on_query: Callable[[QueryOutcome], Any] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Run every query and average the metrics per family (and over all, as "all"); `on_query` sees each
    query's outcome (a `WorstQueries` keeps the worst for the failure report)."""
    rows: dict[str, list[dict[str, float | None]]] = {}
    for n, q in enumerate(queries, 1):
        # ignored images are taken out, so ask for more to still score `depth` results (up to twice as many)
        asked = depth + min(len(q.ignored), depth)
        try:
            results = search(q.text, asked)
        except ValueError:  # a caption with nothing to search for (empty, punctuation) counts as a miss
            results = []
        relevant = _Names(q.relevant)
        if q.ignored:
            ignored = _Names(q.ignored)
            results = [r for r in results if relevant.find(r) or not ignored.find(r)]
        results = results[:depth]
        ranked = [relevant.find(r) or r.path for r in results]
        loc = None
        regions = q.regions.get(_Names(q.regions).find(results[0]) or "") if results else None
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
        if on_query:
            first = next((i for i, key in enumerate(ranked, 1) if key in q.relevant), None)
            on_query(QueryOutcome(q, row, results, first, n - 1))
        if progress:
            progress(n, len(queries))
    # families in the order they first come, "all" last
    return {family: _mean_rows(rows[family]) for family in sorted(rows, key=lambda f: f == "all")}


# ---- which indexed image an entry names ------------------------------------------------------------


def matches(path: str, entry: str) -> bool:
    """Whether an indexed path is the image an evaluation entry names (a relative path or a file name)."""
    path = path.replace(os.sep, "/")
    return path == entry or path.endswith("/" + entry)


def _entry(result: SearchResult, entries: Iterable[str]) -> str | None:
    """The evaluation entry a result is (any of its paths may match), or None."""
    paths = result.paths or [result.path]
    return next((e for e in entries if any(matches(p, e) for p in paths)), None)


class _Names:
    """Evaluation entries by file name, so that finding the entry a result is never tries every entry (an
    ignored set can hold most of a collection)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.by_name: dict[str, list[str]] = {}
        for entry in sorted(entries):
            self.by_name.setdefault(entry.rsplit("/", 1)[-1], []).append(entry)

    def find(self, result: SearchResult) -> str | None:
        """The entry a result is (any of its paths may match), or None."""
        for path in result.paths or [result.path]:
            for entry in self.by_name.get(os.path.basename(path), []):
                if matches(path, entry):
                    return entry
        return None


def _by_name(indexed: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """Indexed (path, sha256) pairs by file name: an entry is looked up among its name's paths only."""
    by_name: dict[str, list[tuple[str, str]]] = {}
    for path, sha in indexed.items():
        by_name.setdefault(Path(path).name, []).append((path, sha))
    return by_name


def _shas_named(entry: str, by_name: dict[str, list[tuple[str, str]]]) -> set[str]:
    """The indexed images (sha256) an entry names; copies of the same bytes are one image."""
    return {sha for path, sha in by_name.get(Path(entry).name, []) if matches(path, entry)}


def _anchored(entry: str, root: str, indexed: dict[str, str]) -> str:
    """The indexed path of `entry` under `root` when there is one, else the entry as it is."""
    path = os.path.join(root, *entry.split("/"))
    return path if path in indexed else entry


def _root(folder: str) -> str:
    return os.path.realpath(os.path.expanduser(folder))  # as add_folder resolves it


def anchor(queries: list[EvalQuery], folder: str, indexed: dict[str, str]) -> list[EvalQuery]:
    """Queries whose entries that name a file indexed under `folder` (`--folder`) name that file's path."""
    root = _root(folder)

    def fix(entry: str) -> str:
        return _anchored(entry, root, indexed)

    return [
        EvalQuery(
            q.text,
            {fix(e) for e in q.relevant},
            {fix(k): v for k, v in q.regions.items()},
            q.family,
            {fix(e) for e in q.ignored},
        )
        for q in queries
    ]


def drop_ambiguous(queries: list[EvalQuery], indexed: dict[str, str]) -> tuple[list[EvalQuery], list[str]]:
    """Queries without the entries that name more than one indexed image (`indexed`: path -> sha256), and
    those entries, sorted. Copies of the same bytes are one image. A query left with nothing relevant is
    dropped: it cannot be scored."""
    by_name = _by_name(indexed)
    entries = {e for q in queries for e in q.relevant | q.ignored}
    ambiguous = {e for e in entries if len(_shas_named(e, by_name)) > 1}
    kept = []
    for q in queries:
        relevant = q.relevant - ambiguous
        if relevant:
            regions = {k: v for k, v in q.regions.items() if k not in ambiguous}
            kept.append(EvalQuery(q.text, relevant, regions, q.family, q.ignored - ambiguous))
    return kept, sorted(ambiguous & {e for q in queries for e in q.relevant})


@dataclass
class Located:
    """Which indexed image each evaluation entry names (`locate`)."""

    found: dict[str, str]  # entry -> sha256
    missing: list[str]  # entries no indexed image answers to
    ambiguous: list[str]  # entries several indexed images answer to


def locate(entries: Iterable[str], indexed: dict[str, str], folder: str | None = None) -> Located:
    """Look entries up by the rules of `anchor` then `drop_ambiguous`: the file with that path under `folder`
    when one is indexed, else the indexed images whose path ends with the entry (one: found; several:
    ambiguous)."""
    by_name, root = _by_name(indexed), _root(folder) if folder else None
    located = Located({}, [], [])
    for entry in sorted(set(entries)):
        path = _anchored(entry, root, indexed) if root else entry
        shas = {indexed[path]} if path in indexed else _shas_named(entry, by_name)
        if len(shas) == 1:
            located.found[entry] = next(iter(shas))
        else:
            (located.ambiguous if shas else located.missing).append(entry)
    return located


def entry_name(text: str) -> str:
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
    [[x0,y0,x1,y1]]}?, "family": str?, "ignored": [paths or file names]?}. Boxes are normalised to 0..1."""
    queries = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            queries.append(
                EvalQuery(
                    text=str(obj["query"]),
                    relevant={entry_name(str(r)) for r in obj["relevant"]},
                    regions={entry_name(k): [tuple(b) for b in v] for k, v in (obj.get("regions") or {}).items()},
                    family=str(obj.get("family", "all")),
                    ignored={entry_name(str(r)) for r in obj.get("ignored") or []},
                )
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{n}: not a query line ({err})") from None
    return queries


def query_json(query: EvalQuery) -> dict[str, Any]:
    """A query as one line of the JSONL format `load_jsonl` reads."""
    out: dict[str, Any] = {"query": query.text, "relevant": sorted(query.relevant), "family": query.family}
    if query.regions:
        out["regions"] = {
            k: [[round(v, 6) for v in box] for box in boxes] for k, boxes in sorted(query.regions.items())
        }
    if query.ignored:
        out["ignored"] = sorted(query.ignored)
    return out


def load_coco_captions(path: str | Path) -> list[EvalQuery]:
    """COCO `captions_val2017.json`: every caption is a query; its image is the one relevant answer."""
    data = json.loads(Path(path).read_text())
    names = {img["id"]: entry_name(img["file_name"]) for img in data["images"]}
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


# ---- the failure report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchedSegment:
    """The segment chosen for one query phrase in one image, with the parts of its score."""

    phrase: str
    segment: int | None  # its index in the image; None: no segment (the whole image stood in)
    box: Box | None
    parts: dict[str, float]  # similarity, position, score, relation
    confidence: float | None  # None where not computed (images the search did not return)


@dataclass(frozen=True)
class SegmentFit:
    """One of an image's segments as one phrase sees it."""

    segment: int  # -1: the whole image (the image has no segments)
    box: Box
    similarity: float
    position: float  # how well its centre fits the phrase's position (1 when the phrase has none)


@dataclass(frozen=True)
class PhraseFits:
    """An image's most similar segments for one phrase, best first."""

    phrase: str
    position: str | None
    best: tuple[SegmentFit, ...]


@dataclass(frozen=True)
class Explanation:
    """How one image scores for a query: its score and parts, the segment matched for each phrase, and
    its most similar segments for each phrase."""

    sha256: str
    score: float
    parts: dict[str, float]
    matches: tuple[MatchedSegment, ...]
    phrases: tuple[PhraseFits, ...]


@dataclass(frozen=True)
class ShownResult:
    """One of a failed query's top results."""

    rank: int
    path: str  # relative to the folder it was indexed from
    score: float
    parts: dict[str, float]
    relevant: bool
    matches: tuple[MatchedSegment, ...]


@dataclass(frozen=True)
class RelevantImage:
    """A failed query's best-ranked relevant image (or, when none is in the top `depth`, its best-scoring
    one), with what the ranking matched in it and what it could have matched."""

    path: str
    rank: int | None  # None: not in the top `depth`
    score: float
    parts: dict[str, float]
    matches: tuple[MatchedSegment, ...]
    phrases: tuple[PhraseFits, ...]  # its most similar segments for each phrase
    regions: tuple[Box, ...]  # the ground truth, where the query file gives it
    region_iou: float | None  # IoU of the first phrase's matched segment with the nearest region


@dataclass(frozen=True)
class Failure:
    """One of the worst queries of a mode: enough to tell a parse gone wrong from a shape confused, a
    background region matched or a wrong position."""

    mode: str
    query: str
    family: str
    parse: str  # ParsedQuery.describe()
    ap: float
    rank: int | None  # of the best-ranked relevant image; None: not in the top `depth`
    depth: int
    relevant_count: int
    top: tuple[ShownResult, ...]
    relevant: RelevantImage | None  # None: no relevant image is indexed

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (NaN, which JSON lacks, as null)."""
        return _finite(asdict(self))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class WorstQueries:
    """The `count` worst outcomes of a run, kept as they come (an `on_query` for `score_queries`): worst is
    the best-ranked relevant image ranked lowest (absent from the top `depth` is worst of all), ties by AP,
    then file order. A perfect query (AP 1: every relevant image ranked first) is no failure and never kept."""

    def __init__(self, count: int, depth: int = 100, shown: int = 3) -> None:
        self.count, self.depth, self.shown = count, depth, shown
        self._heap: list[tuple[tuple[int, float, int], QueryOutcome]] = []

    def badness(self, outcome: QueryOutcome) -> tuple[int, float, int]:
        rank = outcome.first_relevant or self.depth + 1
        return (rank, -(outcome.metrics["map"] or 0.0), -outcome.order)

    def __call__(self, outcome: QueryOutcome) -> None:
        if self.count <= 0 or (outcome.metrics["map"] or 0.0) >= 1.0:
            return
        # only what the report shows is kept: the top results down to the first relevant one
        keep = max(self.shown, outcome.first_relevant or 0)
        trimmed = QueryOutcome(
            outcome.query, outcome.metrics, outcome.results[:keep], outcome.first_relevant, outcome.order
        )
        heapq.heappush(self._heap, (self.badness(outcome), trimmed))  # orders are unique: no tie reaches it
        if len(self._heap) > self.count:
            heapq.heappop(self._heap)

    def worst(self) -> list[QueryOutcome]:
        """Worst first."""
        return [outcome for _, outcome in sorted(self._heap, key=lambda item: item[0], reverse=True)]


class Explainer:
    """How an indexed image scores for a query under `settings`, read from the store: for the relevant images
    a search ranked low or not at all. It scores as irs.search.rank does (`score_image` over every segment)."""

    def __init__(self, store: Store, embedder: Embedder, settings: Settings, best: int = 3) -> None:
        self.store, self.embedder, self.settings, self.best = store, embedder, settings, best
        self._queries: dict[str, tuple[ParsedQuery, QueryVectors]] = {}

    def _query(self, text: str) -> tuple[ParsedQuery, QueryVectors] | None:
        if text not in self._queries:
            parsed = parse_query(text)
            try:
                check_searchable(parsed)
            except QueryError:
                return None
            vectors = embed_query(self.embedder, parsed)
            if not parsed.phrases:  # as rank does: the whole query is its one phrase
                parsed = ParsedQuery(parsed.text, (Phrase(parsed.text),), (), parsed.negatives, parsed.weighted)
                vectors = QueryVectors(vectors.whole, [vectors.whole], vectors.negatives)
            self._queries[text] = (parsed, vectors)
        return self._queries[text]

    def __call__(self, text: str, sha256: str) -> Explanation | None:
        """None when the query has nothing to search for or the image's vector cannot be read."""
        query = self._query(text)
        image = self.store.image_vectors([sha256]).get(sha256)
        if query is None or image is None:
            return None
        parsed, vectors = query
        s = self.settings
        image_sim = float(image @ vectors.whole)
        negative = sum(n.weight * float(v @ image) for n, v in zip(parsed.negatives, vectors.negatives))
        pairs = [(seg, vec) for _, seg, vec in self.store.segment_vectors([sha256])] or [(WHOLE_IMAGE, image)]
        segments = [seg for seg, _ in pairs]
        sims = np.stack([vec for _, vec in pairs]) @ np.stack(vectors.phrases).T  # segments x phrases
        if s.weight_segment > 0:
            scored = score_image(parsed, segments, sims, image_sim, negative, s)
            score, parts, matches = scored.fused, scored.parts, tuple(_matched(m) for m in scored.matches)
        else:  # whole image only, as rank scores it
            score = s.weight_image * image_sim - s.weight_negative * negative
            parts, matches = {"image": image_sim, "fused": score}, ()
        xs = np.array([seg.centroid[0] for seg in segments])
        ys = np.array([seg.centroid[1] for seg in segments])
        phrases = []
        for i, phrase in enumerate(parsed.phrases):
            fits = np.broadcast_to(position_fit(phrase.position, (xs, ys)), xs.shape)
            order = np.argsort(-sims[:, i], kind="stable")[: self.best]
            best = tuple(
                SegmentFit(segments[r].index, segments[r].bbox, float(sims[r, i]), float(fits[r])) for r in order
            )
            phrases.append(PhraseFits(phrase.text, phrase.position, best))
        return Explanation(sha256, float(score), dict(parts), matches, tuple(phrases))


def _matched(match: Match) -> MatchedSegment:
    seg = match.segment
    whole = seg is None or seg.index < 0
    return MatchedSegment(
        match.phrase,
        None if whole else seg.index,
        None if whole else seg.bbox,
        dict(match.parts),
        match.confidence if math.isfinite(match.confidence) else None,
    )


def find_failures(
    worst: list[QueryOutcome],
    mode: str,
    explain: Callable[[str, str], Explanation | None],
    indexed: dict[str, str],
    shown: Callable[[str], str] = str,
    depth: int = 100,
    top: int = 3,
) -> list[Failure]:
    """The report's rows for the worst outcomes (`WorstQueries.worst()`). `explain(text, sha256)` says how an
    image scores (an `Explainer`), `indexed` maps indexed paths to sha256, `shown` writes a path for people."""
    by_name = _by_name(indexed)
    paths_of: dict[str, list[str]] = {}
    for path, sha in sorted(indexed.items()):
        paths_of.setdefault(sha, []).append(path)
    failures = []
    for outcome in worst:
        q = outcome.query
        shown_results = tuple(
            ShownResult(
                rank,
                shown(r.path),
                r.score,
                dict(r.parts),
                _entry(r, q.relevant) is not None,
                tuple(_matched(m) for m in r.matches),
            )
            for rank, r in enumerate(outcome.results[:top], 1)
        )
        failures.append(
            Failure(
                mode,
                q.text,
                q.family,
                parse_query(q.text).describe(),
                float(outcome.metrics["map"] or 0.0),
                outcome.first_relevant,
                depth,
                len(q.relevant),
                shown_results,
                _relevant_image(outcome, explain, by_name, paths_of, shown),
            )
        )
    return failures


def _relevant_image(
    outcome: QueryOutcome,
    explain: Callable[[str, str], Explanation | None],
    by_name: dict[str, list[tuple[str, str]]],
    paths_of: dict[str, list[str]],
    shown: Callable[[str], str],
) -> RelevantImage | None:
    """The best-ranked relevant image; when none was ranked, the best-scoring of (up to 20 of) them."""
    q = outcome.query
    if outcome.first_relevant is not None:
        result = outcome.results[outcome.first_relevant - 1]
        explained = explain(q.text, result.sha256)
        path, paths, score, parts = result.path, result.paths or [result.path], result.score, dict(result.parts)
        matched = tuple(_matched(m) for m in result.matches)
    else:
        shas = sorted({sha for e in sorted(q.relevant)[:20] for sha in _shas_named(e, by_name)})
        scored = [explained for sha in shas if (explained := explain(q.text, sha)) is not None]
        if not scored:
            return None
        explained = max(scored, key=lambda ex: ex.score)
        paths = paths_of[explained.sha256]
        path, score, parts, matched = paths[0], explained.score, explained.parts, explained.matches
    key = next((k for k in q.regions if any(matches(p, k) for p in paths)), None)
    regions = tuple(tuple(box) for box in q.regions.get(key, [])) if key is not None else ()
    first_box = next((m.box for m in matched[:1] if m.box is not None), None)
    iou = max((box_iou(first_box, r) for r in regions), default=None) if first_box else None
    phrases = explained.phrases if explained else ()
    return RelevantImage(shown(path), outcome.first_relevant, score, parts, matched, phrases, regions, iou)


def format_failures(failures: list[Failure], total: int | None = None) -> str:
    """The failure report for people: one block per query, worst first."""
    if not failures:
        return ""
    head = f"worst {len(failures)}" + (f" of {total}" if total is not None else "") + " queries"
    lines = [f"{head}, mode {failures[0].mode} (the best-ranked relevant image ranked lowest first)"]
    for n, f in enumerate(failures, 1):
        where = f"rank {f.rank}" if f.rank is not None else f"not in the top {f.depth}"
        lines += [
            "",
            f"{n}. {f.query!r}  family {f.family} · AP {f.ap:.3f} · relevant image: {where} "
            f"({f.relevant_count} relevant)",
            f"   parsed: {f.parse}",
            f"   top {len(f.top)}:",
        ]
        for r in f.top:
            mark = "RELEVANT" if r.relevant else "not relevant"
            lines.append(f"     {r.rank}. {r.path}  {r.score:.4f}  {mark}  {_parts(r.parts)}")
            lines += [f"        {_match_line(m)}" for m in r.matches]
        rel = f.relevant
        if rel is None:
            lines.append("   relevant: none of its relevant images is indexed")
            continue
        lines.append(f"   relevant: {rel.path}  {where}  {rel.score:.4f}  {_parts(rel.parts)}")
        lines += [f"        matched {_match_line(m)}" for m in rel.matches]
        for p in rel.phrases:
            place = f" ({p.position})" if p.position else ""
            best = "; ".join(
                f"#{s.segment} box {_box(s.box)} sim {s.similarity:.3f}"
                + (f" pos {s.position:.2f}" if p.position else "")
                for s in p.best
            )
            lines.append(f"        best for {p.phrase!r}{place}: {best or 'no segments'}")
        if rel.regions:
            iou = f" (matched segment's IoU {rel.region_iou:.2f})" if rel.region_iou is not None else ""
            lines.append(f"        ground truth: {'; '.join(_box(b) for b in rel.regions)}{iou}")
    return "\n".join(lines)


def _parts(parts: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in parts.items())


def _box(box: Box | None) -> str:
    return ",".join(f"{v:.2f}" for v in box) if box is not None else "-"


def _match_line(m: MatchedSegment) -> str:
    where = f"segment #{m.segment} box {_box(m.box)}" if m.segment is not None else "the whole image"
    confidence = f" confidence {m.confidence:.2f}" if m.confidence is not None else ""
    return f"{m.phrase!r} -> {where}  {_parts(m.parts)}{confidence}"


# ---- tables ----------------------------------------------------------------------------------------


def format_table(title: str, metrics: dict[str, dict[str, float | None]], keys: Iterable[str]) -> str:
    keys = list(keys)
    lines = [title, "family".ljust(14) + "".join(k.rjust(9) for k in keys)]
    for family, row in metrics.items():
        cells = "".join(("-" if row.get(k) is None else f"{row[k]:.3f}").rjust(9) for k in keys)
        lines.append(family.ljust(14) + cells)
    return "\n".join(lines)
