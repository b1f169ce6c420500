"""Query and rank: a parsed query in, ranked images out, each with the segment matched for every phrase
and the parts of its score.

For one image with segments S (an image without segments lets its whole image stand in as one):

    phrase score   a(p, s) = sim(p, s) + weight_position * (position_fit(p, s) - 1)
    phrase unit    max over s of a(p, s); phrases outside relations on separate objects (_separate_rows)
    relation unit  max over s != t of both(a(p1, s), a(p2, t)) + weight_relation * (relation_fit(s, t) - 1)
    objects        both(the units) (a phrase in a relation counts in the relation only)
    both(v)        (1 - weight_all) * weighted mean(v) + weight_all * min(v): a soft AND, so that one strong
                   phrase cannot carry an image where another is missing
    fused          weight_image * image_sim + weight_segment * objects - weight_negative * sum(w * sim(neg, image))

image_sim compares the whole query (always embedded, so unparsed meaning still counts) with the whole
image. A plain query ("a red car") is one phrase without position: fused = weight_image * image_sim +
weight_segment * best-segment similarity.

`rank` is a loop of named stages. Gather: candidates come from vector queries only, never a scan of
all segments: the nearest `image_pool` images for the whole query and the nearest `segment_pool`
segments for each phrase (and, while some image has no segments, the nearest `image_pool` whole images
for each phrase: such an image is scored with its whole image as its one segment, which only those pools
bound). Bound: each candidate gets an upper bound from those pools (a position or
relation fit never adds; a positional phrase's floor is lowered by the best fit among the image's own
segments). Refine: candidates are taken best bound first and scored exactly, from their pool hits where
those decide them, else with all their segments fetched, until no bound left can beat the k-th exact
score. Decided?: when an image outside every pool could still beat the k-th score (its bound is made of
the pools' lowest similarities), grow: the pools grow fourfold and the ranking is redone (a pool that
already held the whole collection is not asked again). The top k are therefore the true top k of what
the vector queries can see: Chroma's HNSW is approximate, and on a large collection a segment it misses
can beat a pool's floor (bench/search_latency.py measures how often).

`search` is what Index.search runs: `embed_query`, then `rank`, with each of the first round's vector queries
started on a worker thread as soon as its text is encoded (the phrases first, the whole query last), so that
Chroma, which frees the GIL, answers while the next text is still in the text tower. Each round also starts
all its queries before it reads the first answer.

Every result and every phrase match then gets a confidence (irs.confidence): its similarity read against the
median of the phrase's final pool (what the phrase finds in typical segments here), capped by its position
and relation fits. It is computed from what the ranking already fetched and never changes the ranking.

Every search ends: k is capped at the number of images, pools never grow past the collection (once they
cover it nothing is unseen), each refinement round scores at least one more candidate, a bound that is not
finite counts as "cannot be decided" (the candidate is scored exactly; an unseen bound stops the growth),
and MAX_ROUNDS caps the growth besides. Weights are relative within a query (a unit weight of 0 counts
for nothing; if none is positive all count the same), so no 0/0 can make a score NaN.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from irs.confidence import calibration_for, match_confidence, result_confidence, similarity_confidence
from irs.geometry import pairwise_box_iou
from irs.positions import Positions, SegmentPool
from irs.query import ParsedQuery, Phrase
from irs.records import Match, SearchResult, Segment
from irs.settings import Settings
from irs.spatial import position_fit, relation_fit
from irs.store import Store

if TYPE_CHECKING:
    from irs.embed import Embedder

WHOLE_IMAGE = Segment(
    bbox=(0.0, 0.0, 1.0, 1.0), centroid=(0.5, 0.5), area=1.0, mask_rle=b"", mask_shape=(0, 0), index=-1
)
WEIGHT_SETTINGS = (
    "weight_image",
    "weight_segment",
    "weight_position",
    "weight_relation",
    "weight_negative",
    "weight_all",
)
# a number, or an array of one number per image (the bounds of many images at once)
Value = TypeVar("Value", float, np.ndarray)
MAX_ROUNDS = 64  # pools grow 4x a round up to the collection's size, so ~log4(size) rounds; this is a guard


def check_k(k: int) -> int:
    """k as a whole number of at least 1; ValueError with a message otherwise."""
    try:
        value = operator.index(k)
    except TypeError:
        value = int(k) if isinstance(k, float) and k.is_integer() else None  # 1e9 from a config is fine
    if value is None:
        raise ValueError(f"k must be a whole number, got {k!r}")
    if value < 1:
        raise ValueError(f"k must be at least 1, got {value}")
    return value


def _check_weights(settings: Settings) -> None:
    for name in WEIGHT_SETTINGS:
        value = getattr(settings, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"setting {name!r} must be a finite number >= 0, got {value!r}")


def relative_weights(weights: list[float]) -> np.ndarray:
    """Weights scaled by the largest (tiny ones do not underflow), summing to 1; when none is positive and
    finite all count the same (instead of 0/0 = NaN)."""
    return np.array(_relative(tuple(float(w) for w in weights)))


@functools.lru_cache(maxsize=256)
def _relative(weights: tuple[float, ...]) -> tuple[float, ...]:
    # a search scores thousands of candidates with the same few weights: computed once, in plain floats
    top = max(weights, default=0.0)
    if not (top > 0 and all(math.isfinite(w) and w >= 0 for w in weights)):
        weights, top = (1.0,) * len(weights), 1.0
    scaled = [w / top for w in weights]
    total = sum(scaled)
    return tuple(w / total for w in scaled)


def weighted_mean(weights: list[float], values: list[Value]) -> Value:
    """The mean of values under relative weights (see relative_weights). Values are numbers, or arrays of
    one value per image (bounds of many images at once) with the same arithmetic."""
    total = sum(w * v for w, v in zip(_relative(tuple(float(w) for w in weights)), values))
    return total if isinstance(total, np.ndarray) else float(total)


def soft_and(weights: list[float], values: list[Value], weight_all: float) -> Value:
    """(1 - weight_all) * weighted mean + weight_all * min of the values: every value must be high for the
    result to be. Never falls as any value rises, so bounds made of value bounds stay bounds."""
    mean = weighted_mean(weights, values)
    if weight_all <= 0 or len(values) < 2:
        return mean
    share = min(weight_all, 1.0)
    both = (1 - share) * mean + share * functools.reduce(np.minimum, values)
    return both if isinstance(both, np.ndarray) else float(both)


def _descending(value: float, sha: str) -> tuple[float, str]:
    """Sort key: best first, NaN last, ties by sha256 so equal scores come in a stable order."""
    return (-value if value == value else math.inf, sha)


@dataclass
class QueryVectors:
    """Normalised text vectors: the whole query, one per phrase, one per negative term."""

    whole: np.ndarray
    phrases: list[np.ndarray]
    negatives: list[np.ndarray] = field(default_factory=list)


def embed_query(
    embedder: Embedder, parsed: ParsedQuery, ready: Callable[[np.ndarray, int | None], None] | None = None
) -> QueryVectors:
    """Embed a parsed query: the whole of it, each phrase, each negative term. `ready(vector, phrase)`, when
    given, is called as soon as each phrase's vector (phrase = its number) and the whole query's (None) is
    known: `search` starts their vector queries there, while the later texts are still being encoded."""
    phrases = [p.text for p in parsed.phrases]
    terms = [t.text for t in parsed.terms] or [parsed.text]
    negatives = [n.text for n in parsed.negatives]
    # phrases first: their segment queries take Chroma longest, so they are the ones worth starting early
    encoded = embedder.text_stream(phrases + terms + negatives)
    phrase_vecs = []
    for i, vec in enumerate(itertools.islice(encoded, len(phrases))):
        phrase_vecs.append(vec)
        if ready is not None:
            ready(vec, i)
    term_vecs = np.stack(list(itertools.islice(encoded, len(terms))))
    weights = np.array([t.weight for t in parsed.terms] or [1.0], np.float64)
    # only the ratios matter: scaling by the largest keeps 1e-320 weights from underflowing to a zero vector
    top = float(weights.max())
    weights = weights / top if np.isfinite(top) and top > 0 else np.ones_like(weights)
    whole = (term_vecs * weights[:, None]).sum(axis=0)  # rclip-style weighted sum of the positive terms
    whole = whole / max(float(np.linalg.norm(whole)), 1e-12)
    if ready is not None:
        ready(whole, None)
    return QueryVectors(whole, phrase_vecs, list(encoded))


@dataclass
class Scored:
    """An exactly scored image."""

    fused: float
    parts: dict[str, float]
    matches: list[Match]
    separated: bool = False  # free phrases first picked one object and were then kept apart


@dataclass(frozen=True)
class Pools:
    """How many nearest images and segments to draw, out of how many there are."""

    images: int
    segments: int
    total_images: int
    total_segments: int

    @property
    def complete(self) -> bool:
        """The pools hold the whole collection: no image is unseen."""
        return self.images >= self.total_images and self.segments >= self.total_segments

    def grown(self) -> Pools:
        """Four times larger, never past the collection."""
        return Pools(
            min(4 * self.images, self.total_images),
            min(4 * self.segments, self.total_segments),
            self.total_images,
            self.total_segments,
        )


def first_pools(store: Store, k: int, settings: Settings) -> Pools:
    """The pools of a search's first round: the settings' sizes, at least k, never past the collection."""
    total_images, total_segments = store.vector_counts()
    return Pools(
        min(max(settings.image_pool, k), total_images),
        min(max(settings.segment_pool, k), total_segments),
        total_images,
        total_segments,
    )


class VectorQueries:
    """The vector queries (Chroma) of one search, each asked once: a later round whose pool did not grow
    reads the answer it had. A query may be started early on a worker thread (`search` starts the first
    round's while the later texts are still encoded: Chroma frees the GIL); asking for its answer then waits
    for it. A query nobody started is asked on the spot."""

    def __init__(self, store: Store, worker: Executor | None = None) -> None:
        self.store = store
        self._worker = worker
        self._asked: dict[tuple[str, int, bytes], Future] = {}

    def start(self, kind: str, vector: np.ndarray, n: int) -> None:
        """Start a query ("images" or "segments", the n nearest to vector) on the worker, if there is one."""
        key = (kind, n, vector.tobytes())
        if self._worker is not None and n > 0 and key not in self._asked:
            self._asked[key] = self._worker.submit(self._ask, kind, vector, n)

    def images(self, vector: np.ndarray, n: int) -> dict[str, float]:
        """The n nearest whole images: sha256 -> similarity (Vectors.query_images)."""
        return dict(self._answer("images", vector, n))  # a copy: the caller adds to it

    def segments(self, vector: np.ndarray, n: int) -> SegmentPool:
        """The n nearest segments (Store.query_segments)."""
        return self._answer("segments", vector, n)

    def _answer(self, kind: str, vector: np.ndarray, n: int) -> Any:
        key = (kind, n, vector.tobytes())
        if key not in self._asked:
            answered: Future = Future()
            answered.set_result(self._ask(kind, vector, n))
            self._asked[key] = answered
        return self._asked[key].result()

    def _ask(self, kind: str, vector: np.ndarray, n: int) -> Any:
        if kind == "images":
            return self.store.vectors.query_images(vector, n)
        return self.store.query_segments(vector, n)


def search(
    store: Store,
    embedder: Embedder,
    parsed: ParsedQuery,
    k: int,
    settings: Settings,
    trace: dict[str, int] | None = None,
) -> list[SearchResult]:
    """Embed a parsed query and rank it (`embed_query`, then `rank`), with the first round's vector queries
    started on a worker thread as soon as their texts are encoded. Chroma answers while the next text goes
    through the text tower (with int8 queries, each on one core): the same results, sooner."""
    with ThreadPoolExecutor(1, thread_name_prefix="irs-query") as worker:  # waits for what it started
        queries = VectorQueries(store, worker)
        pools = first_pools(store, k, settings)
        use_segments = settings.weight_segment > 0

        def ready(vector: np.ndarray, phrase: int | None) -> None:
            # a query without phrases is ranked with its whole text as its one phrase (see rank)
            if use_segments and (phrase is not None or not parsed.phrases):
                queries.start("segments", vector, pools.segments)
            if phrase is None:
                queries.start("images", vector, pools.images)

        vectors = embed_query(embedder, parsed, ready)
        return rank(store, parsed, vectors, k, settings, trace, queries)


def _units(parsed: ParsedQuery) -> list[tuple[str, int]]:
    """("relation", r) for each relation, ("phrase", p) for each phrase in none."""
    in_relation = {i for r in parsed.relations for i in (r.subject, r.object)}
    return [("relation", i) for i in range(len(parsed.relations))] + [
        ("phrase", i) for i in range(len(parsed.phrases)) if i not in in_relation
    ]


def _unit_weight(parsed: ParsedQuery, unit: tuple[str, int]) -> float:
    kind, i = unit
    if kind == "phrase":
        return parsed.phrases[i].weight
    rel = parsed.relations[i]
    return (parsed.phrases[rel.subject].weight + parsed.phrases[rel.object].weight) / 2


def score_image(
    parsed: ParsedQuery,
    segments: list[Segment],
    sims: np.ndarray,
    image_sim: float,
    negative: float,
    settings: Settings,
) -> Scored:
    """The exact score of one image (see the module doc).

    `sims[s, p]` is the similarity of segment s to phrase p (-inf where it is known not to matter);
    `negative` is the weighted sum of the negative terms' similarities to the whole image.
    """
    w_pos, w_rel, w_all = settings.weight_position, settings.weight_relation, min(settings.weight_all, 1.0)
    xs = np.array([s.centroid[0] for s in segments])
    ys = np.array([s.centroid[1] for s in segments])
    boxes = np.array([s.bbox for s in segments]).T  # 4 x S
    fits = np.stack([position_fit(p.position, (xs, ys)) for p in parsed.phrases], axis=1)  # S x P
    scores = sims + w_pos * (fits - 1)

    chosen: dict[int, tuple[int, float]] = {}  # phrase -> (segment row, relation fit or NaN)
    unit_scores = []
    units = _units(parsed)
    for kind, i in units:
        if kind == "phrase":
            row = int(np.argmax(scores[:, i]))
            chosen[i] = (row, float("nan"))
            unit_scores.append(float(scores[row, i]))
            continue
        rel = parsed.relations[i]
        # every (subject, object) pair of segments at once: S x S
        pair_fit = relation_fit(
            rel.predicate,
            tuple(boxes[:, :, None]),
            (xs[:, None], ys[:, None]),
            tuple(boxes[:, None, :]),
            (xs[None, :], ys[None, :]),
        )
        subject, obj = scores[:, rel.subject][:, None], scores[:, rel.object][None, :]
        both = (1 - w_all) * (subject + obj) / 2 + w_all * np.minimum(subject, obj)  # soft_and of the pair
        value = both + w_rel * (pair_fit - 1)
        if len(segments) > 1:
            np.fill_diagonal(value, -np.inf)  # a segment cannot stand in a relation with itself
        s_row, t_row = np.unravel_index(int(np.argmax(value)), value.shape)
        best = (float(value[s_row, t_row]), int(s_row), int(t_row), float(pair_fit[s_row, t_row]))
        chosen[rel.subject], chosen[rel.object] = (best[1], best[3]), (best[2], best[3])
        unit_scores.append(float(best[0]))

    weights = [_unit_weight(parsed, u) for u in units]
    free = [n for n, (kind, _) in enumerate(units) if kind == "phrase"]
    separated = _clash([chosen[units[n][1]][0] for n in free], boxes)
    if separated:
        rows = _separate_rows(scores, [units[n][1] for n in free], boxes, free, weights, unit_scores, w_all)
        for n, row in zip(free, rows):
            chosen[units[n][1]] = (row, float("nan"))
            unit_scores[n] = float(scores[row, units[n][1]])
    objects = soft_and(weights, unit_scores, settings.weight_all)
    fused = settings.weight_image * image_sim + settings.weight_segment * objects - settings.weight_negative * negative

    matches = []
    for i, phrase in enumerate(parsed.phrases):
        row, fit = chosen[i]
        parts = {"similarity": float(sims[row, i]), "position": float(fits[row, i]), "score": float(scores[row, i])}
        if fit == fit:  # not NaN: this phrase is part of a relation
            parts["relation"] = fit
        matches.append(Match(phrase.text, segments[row], parts))
    parts = {"image": image_sim, "segment": objects, "fused": fused}
    positioned = [m.parts["position"] for m, p in zip(matches, parsed.phrases) if p.position]
    if positioned:
        parts["position"] = float(np.mean(positioned))
    if parsed.relations:
        parts["relation"] = float(np.mean([m.parts["relation"] for m in matches if "relation" in m.parts]))
    if parsed.negatives:
        parts["negative"] = negative
    return Scored(fused, parts, matches, separated)


SAME_OBJECT_IOU = 0.5  # two segments whose boxes overlap this much are one object seen twice (SAM's nested masks)
MAX_COMBINATIONS = 4096  # segment choices tried when phrases compete for one object


def _clash(rows: list[int], boxes: np.ndarray) -> bool:
    """Whether two of the phrases picked the same object."""
    if len(rows) < 2:
        return False
    picked = np.array(rows)
    over = (picked[:, None] == picked[None, :]) | (pairwise_box_iou(boxes[:, picked]) > SAME_OBJECT_IOU)
    np.fill_diagonal(over, False)
    return bool(over.any())


def _separate_rows(
    scores: np.ndarray,
    phrases: list[int],
    boxes: np.ndarray,
    slots: list[int],
    weights: list[float],
    unit_scores: list[float],
    w_all: float,
) -> list[int]:
    """A segment row for each free phrase, no two on one object, that maximises the query's soft AND
    ("a red circle with a blue square" asks for two objects: one segment must not stand for both). Each
    phrase chooses among its best few segments; when no choice keeps them apart (an image with one segment,
    or none found), the phrases keep their own best segments."""
    per = int(MAX_COMBINATIONS ** (1 / len(phrases)) + 1e-9)
    if per < 2:  # more than 12 phrases: too many to combine, so each in turn takes its best free object
        return _greedy_rows(scores, phrases, boxes)
    options = [np.argsort(-scores[:, p], kind="stable")[:per] for p in phrases]
    combos = np.stack(np.meshgrid(*options, indexing="ij"), axis=-1).reshape(-1, len(phrases))  # C x P
    over = (combos[:, :, None] == combos[:, None, :]) | (pairwise_box_iou(boxes[:, combos]) > SAME_OBJECT_IOU)
    over[:, np.arange(len(phrases)), np.arange(len(phrases))] = False
    values = np.tile(np.asarray(unit_scores, np.float64), (len(combos), 1))  # C x units
    values[:, slots] = scores[combos, phrases]
    with np.errstate(invalid="ignore"):  # NaN where a unit weighted 0 scored -inf
        objective = (1 - w_all) * (values @ relative_weights(weights)) + w_all * values.min(axis=1)  # soft_and
    objective[over.any(axis=(1, 2)) | ~np.isfinite(objective)] = -np.inf
    if not np.isfinite(objective).any():  # nothing keeps them apart: each keeps its own best
        return [int(o[0]) for o in options]
    return [int(r) for r in combos[int(np.argmax(objective))]]


def _greedy_rows(scores: np.ndarray, phrases: list[int], boxes: np.ndarray) -> list[int]:
    """Phrases in turn (strongest best match first) take their best segment not yet on a taken object; a phrase
    with none left keeps its own best."""
    rows: dict[int, int] = {}
    for p in sorted(phrases, key=lambda p: -float(np.max(scores[:, p]))):
        ranked = np.argsort(-scores[:, p], kind="stable")
        free = [int(r) for r in ranked if not _clash([*rows.values(), int(r)], boxes)]
        rows[p] = free[0] if free else int(ranked[0])
    return [rows[p] for p in phrases]


def _upper_bound(
    parsed: ParsedQuery, unit_bounds: dict[int, np.ndarray], image_sims: np.ndarray, settings: Settings
) -> np.ndarray:
    """Per image, a score it cannot beat given per-phrase similarity bounds (fits only ever subtract)."""
    values, weights = [], []
    for unit in _units(parsed):
        kind, i = unit
        if kind == "phrase":
            values.append(unit_bounds[i])
        else:
            rel = parsed.relations[i]
            pair = [unit_bounds[rel.subject], unit_bounds[rel.object]]
            values.append(soft_and([1.0, 1.0], pair, settings.weight_all))
        weights.append(_unit_weight(parsed, unit))
    objects = soft_and(weights, values, settings.weight_all) if values else image_sims
    negative_room = settings.weight_negative * sum(n.weight for n in parsed.negatives)  # sim >= -1
    return settings.weight_image * image_sims + settings.weight_segment * objects + negative_room


def rank(
    store: Store,
    parsed: ParsedQuery,
    vectors: QueryVectors,
    k: int,
    settings: Settings,
    trace: dict[str, int] | None = None,
    queries: VectorQueries | None = None,
) -> list[SearchResult]:
    """The k best images for a parsed query (see the module doc); fewer when fewer are indexed. `trace`, when
    given, receives how many rounds the pools took and their final sizes (for benchmarks); `queries`, the
    vector queries `search` started early."""
    _check_weights(settings)
    queries = queries or VectorQueries(store)
    pools = first_pools(store, k, settings)
    k = min(k, pools.total_images)  # a huge k allocates nothing and never asks Chroma for more than there is
    if k <= 0:
        return []
    if not parsed.phrases:  # nothing to look for in segments: the whole query against whole images
        parsed, vectors = _whole_query_as_phrase(parsed, vectors)
    rounds = 0
    for _ in range(MAX_ROUNDS):
        rounds += 1
        gathered = _gather(queries, parsed, vectors, pools, settings)
        top = _refine(store, parsed, vectors, settings, _bound(parsed, gathered, settings), k)
        if _decided(top, _unseen_bound(parsed, gathered, settings), k) or pools.complete:
            break
        pools = pools.grown()
    if trace is not None:
        trace.update(rounds=rounds, image_pool=pools.images, segment_pool=pools.segments)
    return _results(store, parsed, top, gathered, settings)


def scan(
    store: Store,
    queries: list[tuple[ParsedQuery, QueryVectors]],
    settings: Settings,
    shas: list[str],
    chunk: int = 500,
) -> list[list[tuple[str, float]]]:
    """Per query, every given image scored exactly from all its segments, best first (ties by sha256): no
    pools and no bounds, so its cost grows with the collection. It is what `rank` is measured against (the
    tests, bench/search_latency.py); the vectors are read once for all the queries. An image without segments
    is scored as one whole-image segment; one without a readable image vector is left out, as `rank` does."""
    queries = [(p, v) if p.phrases else _whole_query_as_phrase(p, v) for p, v in queries]
    phrase_matrices = [np.stack(vectors.phrases).T for _, vectors in queries]
    scored: list[list[tuple[str, float]]] = [[] for _ in queries]
    for start in range(0, len(shas), chunk):  # reads of a bounded size, however large the collection
        part = shas[start : start + chunk]
        image_vecs = store.image_vectors(part)
        segments: dict[str, list[tuple[Segment, np.ndarray]]] = {sha: [] for sha in part}
        for sha, seg, vec in store.segment_vectors(part):
            segments[sha].append((seg, vec))
        for sha in part:
            if sha not in image_vecs:
                continue
            pairs = segments[sha] or [(WHOLE_IMAGE, image_vecs[sha])]
            image_segments, stacked, image_vec = [s for s, _ in pairs], np.stack([v for _, v in pairs]), image_vecs[sha]
            for (parsed, vectors), phrases, out in zip(queries, phrase_matrices, scored):
                negative = sum(n.weight * float(v @ image_vec) for n, v in zip(parsed.negatives, vectors.negatives))
                image_sim = float(image_vec @ vectors.whole)
                exact = score_image(parsed, image_segments, stacked @ phrases, image_sim, negative, settings)
                out.append((sha, exact.fused))
    return [sorted(out, key=lambda item: _descending(item[1], item[0])) for out in scored]


def _whole_query_as_phrase(parsed: ParsedQuery, vectors: QueryVectors) -> tuple[ParsedQuery, QueryVectors]:
    """The query with its whole text as its one phrase."""
    parsed = ParsedQuery(parsed.text, (Phrase(parsed.text),), (), parsed.negatives, parsed.weighted, parsed.terms)
    return parsed, QueryVectors(vectors.whole, [vectors.whole], vectors.negatives)


NO_HITS = np.zeros(0, np.int64)


@dataclass
class Gathered:
    """What one round's vector queries found, and how far their pools reach."""

    image_sims: dict[str, float]  # every image found in any pool whose vector is readable -> sim to the query
    pools: list[SegmentPool | None]  # per phrase: the segments its vector query found (None: segments unused)
    hits: list[dict[str, np.ndarray]]  # per phrase: image -> its hits in that phrase's pool (numbers into it)
    best: list[dict[str, float]]  # per phrase: image -> the best phrase score among its hits (positions known)
    # No image outside the image pool is more similar to the whole query than this; None: the pool holds all.
    image_floor: float | None
    # Per phrase, no segment outside its pool is more similar to the phrase than this; None: the pool holds all.
    floors: list[float | None]
    # Per phrase, the median similarity of its pool (NaN when empty): the level of typical segments, for confidence.
    typical: list[float] = field(default_factory=list)
    image_typical: float = math.nan  # the same for the image pool
    # Per phrase with a position: image -> the best position fit among all its segments (see _fit_caps).
    fit_caps: list[dict[str, float]] = field(default_factory=list)
    # Images found without segments (pending or none found): each is scored with its whole image as its one
    # segment, which the segment pools do not bound; see _whole_image_pools.
    unsegmented: set[str] = field(default_factory=set)
    whole_known: list[dict[str, float]] = field(default_factory=list)  # per phrase: such image -> its phrase score
    whole_floors: list[float | None] = field(default_factory=list)  # per phrase: none outside the pool scores more


@dataclass
class ImageCandidate:
    """An image under consideration: its pool hits, an upper bound on its score, its exact score once known."""

    sha256: str
    image_sim: float
    hits: list[np.ndarray]  # per phrase: this image's hits in that phrase's pool (numbers into Gathered.pools)
    known: list[float | None]  # per phrase: the best phrase score among its hits (None: no hit)
    floors: list[float | None]  # per phrase: no segment of it outside the pool scores higher (None: none is)
    bound: float  # no exact score of this image is higher (inf: cannot be decided, so it is scored exactly)
    scored: Scored | None = None
    hits_tried: bool = False  # whether its pool hits were tried for its exact score (they may not decide it)

    @property
    def ceiling(self) -> float:
        """The best this image can score: its exact score once known, else its bound."""
        return self.scored.fused if self.scored is not None else self.bound


def _gather(
    queries: VectorQueries, parsed: ParsedQuery, vectors: QueryVectors, pools: Pools, settings: Settings
) -> Gathered:
    """Stage 1: the nearest images to the whole query and the nearest segments to each phrase."""
    store = queries.store
    use_segments = settings.weight_segment > 0
    for vec in vectors.phrases if use_segments else []:  # Chroma answers one while this thread reads another
        queries.start("segments", vec, pools.segments)
    queries.start("images", vectors.whole, pools.images)
    found: list[SegmentPool | None] = []
    hits: list[dict[str, np.ndarray]] = []
    best: list[dict[str, float]] = []
    floors: list[float | None] = []
    typical: list[float] = []
    for phrase, vec in zip(parsed.phrases, vectors.phrases):
        pool = queries.segments(vec, pools.segments) if use_segments else None
        returned = pool.returned if pool is not None else np.zeros(0)
        # an image's segment outside the pool is no more similar than the pool's last one
        floors.append(float(returned[-1]) if len(returned) and len(returned) < pools.total_segments else None)
        typical.append(float(np.median(returned)) if len(returned) else math.nan)
        shas_hit, groups = pool.by_image() if pool is not None else ([], [])
        hits.append(dict(zip(shas_hit, groups)))
        best.append(_best_by_image(phrase, pool, shas_hit, groups, settings.weight_position))
        found.append(pool)
    # asked after the phrases' pools: `search` starts it last (its text is encoded last)
    image_sims = queries.images(vectors.whole, pools.images)
    # an image outside the pool is no more similar than the pool's last one (an empty pool tells nothing)
    image_floor = min(image_sims.values(), default=1.0) if len(image_sims) < pools.total_images else None
    image_typical = float(np.median(list(image_sims.values()))) if image_sims else math.nan
    positions = store.current_positions()  # one snapshot for the whole round
    whole = _whole_image_pools(queries, positions, parsed, vectors, pools, settings)
    # images without segments, among those the image pools found (any image a segment pool found has some)
    found_whole = (
        list(dict.fromkeys([*image_sims, *(sha for by_image in whole[0] for sha in by_image)])) if whole else []
    )
    unsegmented = _without_segments(positions, found_whole)
    shas = list(dict.fromkeys([*image_sims, *(sha for by_image in hits for sha in by_image), *unsegmented]))
    # images found only through their segments: their similarity to the whole query from their vectors
    for sha, vec in store.image_vectors([s for s in shas if s not in image_sims]).items():
        image_sims[sha] = float(vec @ vectors.whole)
    kept = {sha: image_sims[sha] for sha in shas if sha in image_sims}
    caps = _fit_caps(positions, parsed, list(kept), settings)
    gathered = Gathered(kept, found, hits, best, image_floor, floors, typical, image_typical, caps)
    if whole:
        gathered.unsegmented, gathered.whole_known, gathered.whole_floors = set(unsegmented), *whole
    return gathered


def _whole_image_pools(
    queries: VectorQueries,
    positions: Positions,
    parsed: ParsedQuery,
    vectors: QueryVectors,
    pools: Pools,
    settings: Settings,
) -> tuple[list[dict[str, float]], list[float | None]] | None:
    """While some image has no segments (its segmentation pending, or nothing found), per phrase the nearest
    whole images to the phrase: image -> its phrase score with its whole image as its one segment (centred),
    and the pool's floor with the same position fit (None: the pool holds all). None when every image has
    segments. An image without segments is scored that way, so only these pools bound it."""
    if settings.weight_segment <= 0 or len(positions.shas) >= pools.total_images:
        return None
    known, floors = [], []
    for phrase, vec in zip(parsed.phrases, vectors.phrases):
        fit_cost = settings.weight_position * (float(position_fit(phrase.position, WHOLE_IMAGE.centroid)) - 1)
        sims = queries.images(vec, pools.images)
        known.append({sha: sim + fit_cost for sha, sim in sims.items()})
        floors.append(min(sims.values(), default=1.0) + fit_cost if len(sims) < pools.total_images else None)
    return known, floors


def _without_segments(positions: Positions, shas: list[str]) -> list[str]:
    """The images among shas that have no segment in the catalog, in order."""
    starts, ends = positions.image_spans(shas)
    return [sha for sha, none in zip(shas, (ends == starts).tolist()) if none]


def _fit_caps(positions: Positions, parsed: ParsedQuery, shas: list[str], settings: Settings) -> list[dict[str, float]]:
    """Per phrase with a position, per image with segments: the best position fit among all its segments,
    from the positions in memory. An image's segments outside a phrase's pool are no more similar than the
    pool's floor, so none of them scores above floor + weight_position * (cap - 1): for a positional phrase
    a much tighter bound than the floor alone, and often enough for the pool hits to decide the image."""
    caps: list[dict[str, float]] = [{} for _ in parsed.phrases]
    positioned = [i for i, p in enumerate(parsed.phrases) if p.position is not None]
    if not positioned or not shas or settings.weight_position <= 0 or settings.weight_segment <= 0:
        return caps
    starts, ends = positions.image_spans(shas)
    has = ends > starts  # an image without segments keeps the floor
    if not has.any():
        return caps
    starts, lengths = starts[has], (ends - starts)[has]
    # every row of those images, image after image, and where each image's rows begin in that list
    firsts = np.cumsum(lengths) - lengths
    rows = np.repeat(starts - firsts, lengths) + np.arange(lengths.sum())
    centroids = (positions.columns[rows, 4], positions.columns[rows, 5])
    with_segments = [sha for sha, h in zip(shas, has.tolist()) if h]
    for i in positioned:
        best = np.maximum.reduceat(position_fit(parsed.phrases[i].position, centroids), firsts)
        caps[i] = dict(zip(with_segments, best.tolist()))
    return caps


@dataclass
class Bounded:
    """Stage 2's answer: every image found, as columns (one row per image), best bound first."""

    shas: list[str]
    image_sims: np.ndarray
    known: np.ndarray  # images x phrases: the best phrase score among its hits (NaN: no hit)
    floors: np.ndarray  # images x phrases: no segment of it outside the pool scores higher (NaN: none is)
    bounds: np.ndarray  # no exact score of the image is higher (inf: cannot be decided, so it is scored exactly)
    gathered: Gathered

    def key(self, row: int) -> tuple[float, str]:
        """The sort key of a row's bound (see _descending)."""
        return _descending(float(self.bounds[row]), self.shas[row])

    def candidate(self, row: int) -> ImageCandidate:
        """One image as a candidate object: made only for the few the ranking looks at."""
        sha = self.shas[row]
        return ImageCandidate(
            sha,
            float(self.image_sims[row]),
            [by_image.get(sha, NO_HITS) for by_image in self.gathered.hits],
            [None if v != v else v for v in self.known[row].tolist()],  # NaN: no hit, no floor
            [None if v != v else v for v in self.floors[row].tolist()],
            float(self.bounds[row]),
        )


def _bound(parsed: ParsedQuery, gathered: Gathered, settings: Settings) -> Bounded:
    """Stage 2: every image found, with an upper bound from its pool hits and the pools' floors (for a
    positional phrase, lowered by the best fit among the image's segments: `_fit_caps`). The bounds of all
    images at once, as arrays: per search there are hundreds of candidates, and the ranking looks at few."""
    shas = list(gathered.image_sims)
    image_sims = np.array([gathered.image_sims[sha] for sha in shas], np.float64)
    known = [np.array([best.get(sha, np.nan) for sha in shas], np.float64) for best in gathered.best]
    floors = [
        np.full(len(shas), np.nan)
        if floor is None
        else np.array([floor + settings.weight_position * (caps.get(sha, 1.0) - 1) for sha in shas], np.float64)
        for floor, caps in zip(gathered.floors, gathered.fit_caps)
    ]
    # images without segments: bounded by the whole-image pools instead
    rows = [n for n, sha in enumerate(shas) if sha in gathered.unsegmented]
    for i, (whole, floor) in enumerate(zip(gathered.whole_known, gathered.whole_floors)):
        known[i][rows] = [whole.get(shas[n], np.nan) for n in rows]
        floors[i][rows] = np.nan if floor is None else floor
    bounds = _bound_from(parsed, known, floors, image_sims, settings)
    # best bound first, ties by sha256 (_descending); NaN cannot occur: _bound_from makes it inf
    order = np.lexsort((np.array(shas), -bounds)) if shas else np.zeros(0, np.int64)
    columns = [np.stack(known, 1), np.stack(floors, 1)] if known else [np.zeros((len(shas), 0))] * 2
    return Bounded(
        [shas[n] for n in order.tolist()],
        image_sims[order],
        columns[0][order],
        columns[1][order],
        bounds[order],
        gathered,
    )


def _best_by_image(
    phrase: Phrase, pool: SegmentPool | None, shas: list[str], groups: list[np.ndarray], weight_position: float
) -> dict[str, float]:
    """Per image hit (`shas`, with its hits `groups`: SegmentPool.by_image), the best phrase score among its hits:
    the position fits of the whole pool in one vectorised step (per candidate, this was most of a search's time)."""
    if pool is None or not shas:
        return {}
    scores = pool.similarities + weight_position * (position_fit(phrase.position, pool.centroids()) - 1)
    starts = np.cumsum([0, *(len(g) for g in groups[:-1])])
    return dict(zip(shas, np.maximum.reduceat(scores[np.concatenate(groups)], starts).tolist()))


def _bound_from(
    parsed: ParsedQuery, known: list[np.ndarray], floors: list[np.ndarray], image_sims: np.ndarray, settings: Settings
) -> np.ndarray:
    """The upper bounds of images (one per entry of `image_sims`): per phrase its best known hit or the
    pool's floor, whichever is higher (NaN: none), 1.0 where neither is known (its segments were never
    seen). A bound that is not finite is inf: that image cannot be decided, so it is scored exactly."""
    unit = {
        i: np.where(np.isnan(best) & np.isnan(floor), 1.0, np.fmax(best, floor))
        for i, (best, floor) in enumerate(zip(known, floors))
    }
    if settings.weight_segment <= 0:
        unit = dict.fromkeys(unit, image_sims)
    bounds = _upper_bound(parsed, unit, image_sims, settings)
    return np.where(np.isfinite(bounds), bounds, np.inf)


def _score_from_hits(
    parsed: ParsedQuery, cand: ImageCandidate, pools: list[SegmentPool | None], settings: Settings
) -> Scored | None:
    """The exact score of an image without negative terms when its pool hits decide it, else None."""
    known, floors = cand.known, cand.floors
    if settings.weight_segment <= 0:
        return _whole_image_only(cand.image_sim, 0.0, settings)
    # a relation needs every pair of segments; a phrase whose best hit is below its pool's floor may have
    # a better segment outside the pool
    if parsed.relations or not all(v is not None and (f is None or v >= f) for v, f in zip(known, floors)):
        return None
    segments: dict[int, Segment] = {}  # by segment index: one segment may be hit by several phrases
    found: list[tuple[int, int, float]] = []  # (segment index, phrase, similarity)
    for i, (pool, hits) in enumerate(zip(pools, cand.hits)):
        if pool is None or not len(hits):
            continue
        for seg, sim in zip(pool.segments(hits), pool.similarities[hits].tolist()):
            segments.setdefault(seg.index, seg)
            found.append((seg.index, i, sim))
    if not segments:  # an image without segments: its known scores are its whole image's, scored on a fetch
        return None
    row = {index: r for r, index in enumerate(segments)}
    sims = np.full((len(segments), len(parsed.phrases)), -np.inf)
    for index, i, sim in found:
        sims[row[index], i] = sim
    scored = score_image(parsed, list(segments.values()), sims, cand.image_sim, 0.0, settings)
    # phrases that competed for one object chose among runner-ups, which may lie outside the pools
    return None if scored.separated else scored


def _refine(
    store: Store, parsed: ParsedQuery, vectors: QueryVectors, settings: Settings, found: Bounded, k: int
) -> list[ImageCandidate]:
    """Stage 3: the top k candidates, all scored exactly. The best ceilings are scored from their pool hits
    where those decide them (no fetch; without negative terms, whose similarities need each image's own
    vector); then candidates whose bound could still reach the top k are fetched and scored, until the k
    best ceilings are exact scores. Each round scores or tries at least one more candidate, so this ends.
    Only the candidates it looks at are made into objects (`_Taken`): most of those found never are."""
    batch = max(4 * k, 32)
    taken = _Taken(found)
    while True:
        top = taken.first(k)
        waiting = [c for c in top if c.scored is None]
        if not waiting:
            return top
        untried = [c for c in taken.first(batch) if c.scored is None and not c.hits_tried]
        if untried and not vectors.negatives:
            for cand in untried:
                cand.hits_tried = True
                cand.scored = _score_from_hits(parsed, cand, found.gathered.pools, settings)
            continue
        exact = sorted((c.scored.fused for c in taken.candidates if c.scored is not None), reverse=True)
        kth = exact[k - 1] if len(exact) >= k else -np.inf
        # everything that could still reach the top k, in one fetch
        todo = taken.unscored_from(kth, batch)
        _score_fetched(store, parsed, vectors, settings, todo or waiting)


class _Taken:
    """The candidates `_refine` has looked at, made from Bounded's rows in bound order as it needs them. A
    row not taken yet is unscored, so its ceiling is its bound, and rows come best bound first: those left
    sort after every row taken, unless their key is lower, which `first` checks."""

    def __init__(self, found: Bounded) -> None:
        self.found = found
        self.candidates: list[ImageCandidate] = []

    def _take(self) -> None:
        self.candidates.append(self.found.candidate(len(self.candidates)))

    def _left(self) -> bool:
        return len(self.candidates) < len(self.found.shas)

    def first(self, n: int) -> list[ImageCandidate]:
        """The n best ceilings among all candidates, taken or not."""
        while len(self.candidates) < n and self._left():
            self._take()
        self.candidates.sort(key=_by_ceiling)
        if self.candidates:
            last = _by_ceiling(self.candidates[min(n, len(self.candidates)) - 1])
            while self._left() and self.found.key(len(self.candidates)) < last:
                self._take()
            self.candidates.sort(key=_by_ceiling)
        return self.candidates[:n]

    def unscored_from(self, floor: float, n: int) -> list[ImageCandidate]:
        """The first n unscored candidates by bound whose bound is at least `floor`."""
        # rows come best bound first: once one is below floor, so are the rest
        while self._left() and self.found.bounds[len(self.candidates)] >= floor:
            if sum(c.scored is None for c in self.candidates) >= n:
                break
            self._take()
        unscored = sorted((c for c in self.candidates if c.scored is None), key=_by_ceiling)
        return [c for c in unscored if c.bound >= floor][:n]


def _by_ceiling(cand: ImageCandidate) -> tuple[float, str]:
    return _descending(cand.ceiling, cand.sha256)


def _unseen_bound(parsed: ParsedQuery, gathered: Gathered, settings: Settings) -> float | None:
    """Stage 4: a score no image outside the pools can beat (None when the image pool holds every image):
    one no more similar than the image pool's floor, with no known hit in any phrase's pool."""
    if gathered.image_floor is None:
        return None
    # an unseen image has segments (bounded by the segment pools) or none (bounded by the whole-image pools)
    whole_floors = gathered.whole_floors or [None] * len(gathered.floors)
    floors = [
        np.array([max((f for f in pair if f is not None), default=np.nan)])
        for pair in zip(gathered.floors, whole_floors)
    ]
    none = [np.array([np.nan])] * len(floors)
    return float(_bound_from(parsed, none, floors, np.array([gathered.image_floor]), settings)[0])


def _decided(top: list[ImageCandidate], unseen_bound: float | None, k: int) -> bool:
    """Whether no image outside the pools can reach the top k. An unseen bound that is not finite
    decides nothing, and larger pools would not change that: stop with the exact scores fetched."""
    if unseen_bound is None or not math.isfinite(unseen_bound):
        return True
    return len(top) == k and top[-1].scored.fused >= unseen_bound


def _score_fetched(
    store: Store, parsed: ParsedQuery, vectors: QueryVectors, settings: Settings, todo: list[ImageCandidate]
) -> None:
    """Fetch the candidates' own segments (and image vectors where needed) and score them exactly."""
    use_segments = settings.weight_segment > 0
    fetched: dict[str, list[tuple[Segment, np.ndarray]]] = {c.sha256: [] for c in todo}
    if use_segments:
        for sha, seg, vec in store.segment_vectors(list(fetched)):
            fetched[sha].append((seg, vec))
    image_vecs = store.image_vectors([sha for sha in fetched if not fetched[sha] or vectors.negatives])
    phrase_matrix = np.stack(vectors.phrases).T
    for cand in todo:
        sha = cand.sha256
        if sha not in image_vecs and (vectors.negatives or not fetched[sha]):
            cand.scored = UNREADABLE  # its vectors are not readable yet (another process is writing them)
            continue
        negative = 0.0
        if vectors.negatives:
            negative = sum(n.weight * float(v @ image_vecs[sha]) for n, v in zip(parsed.negatives, vectors.negatives))
        if not use_segments:
            cand.scored = _whole_image_only(cand.image_sim, negative, settings)
            continue
        pairs = fetched[sha] or [(WHOLE_IMAGE, image_vecs[sha])]
        sims = np.stack([v for _, v in pairs]) @ phrase_matrix
        cand.scored = score_image(parsed, [s for s, _ in pairs], sims, cand.image_sim, negative, settings)


# The score of a candidate whose vectors cannot be read: ranked last, never returned.
UNREADABLE = Scored(-np.inf, {}, [])


def _whole_image_only(image_sim: float, negative: float, settings: Settings) -> Scored:
    """The score when segments are switched off (weight_segment = 0): the whole image alone."""
    fused = settings.weight_image * image_sim - settings.weight_negative * negative
    return Scored(fused, {"image": image_sim, "fused": fused}, [])


def _results(
    store: Store, parsed: ParsedQuery, top: list[ImageCandidate], gathered: Gathered, settings: Settings
) -> list[SearchResult]:
    paths = store.catalog.paths_of([c.sha256 for c in top])
    calibration = calibration_for(settings.clip_model)
    weights = [p.weight for p in parsed.phrases]
    results = []
    for cand in top:
        if not paths.get(cand.sha256) or cand.scored is UNREADABLE:
            continue
        matches = [
            Match(
                m.phrase,
                _stored(store, cand.sha256, m.segment),
                m.parts,
                match_confidence(m.parts, typical, calibration),
            )
            for m, typical in zip(cand.scored.matches, gathered.typical)
        ]
        if matches:
            confidence = result_confidence([m.confidence for m in matches], weights)
        else:  # whole image only (weight_segment = 0): the image's similarity against the image pool's
            confidence = similarity_confidence(cand.image_sim, gathered.image_typical, calibration)
        results.append(
            SearchResult(
                path=paths[cand.sha256][0],
                paths=paths[cand.sha256],
                sha256=cand.sha256,
                score=cand.scored.fused,
                parts=cand.scored.parts,
                segment=matches[0].segment if matches else None,
                matches=matches,
                parsed=parsed,
                confidence=confidence,
            )
        )
    return results


def _stored(store: Store, sha: str, segment: Segment | None) -> Segment | None:
    """The stored segment with its mask; None for the whole-image stand-in."""
    if segment is None or segment.index < 0:
        return None
    return store.catalog.segment(sha, segment.index)
