"""Query and rank: a parsed query in, ranked images out, each with the segment matched for every phrase
and the parts of its score.

For one image with segments S (an image without segments lets its whole image stand in as one):

    phrase score   a(p, s) = sim(p, s) + weight_position * (position_fit(p, s) - 1)
    phrase unit    max over s of a(p, s)
    relation unit  max over s != t of (a(p1, s) + a(p2, t)) / 2 + weight_relation * (relation_fit(s, t) - 1)
    objects        the weighted mean of the units (a phrase in a relation counts in the relation only)
    fused          weight_image * image_sim + weight_segment * objects - weight_negative * sum(w * sim(neg, image))

image_sim compares the whole query (always embedded, so unparsed meaning still counts) with the whole
image. A plain query ("a red car") is one phrase without position: fused = weight_image * image_sim +
weight_segment * best-segment similarity.

Candidates come from vector queries only, never a scan of all segments: the nearest `image_pool`
images for the whole query and the nearest `segment_pool` segments for each phrase. Each candidate
gets an upper bound from those pools (a position or relation fit never adds); candidates whose bound
could reach the top k have all their segments fetched and scored exactly, until the top k are exact.
When an image outside every pool could still beat the k-th score (its bound is made of the pools'
lowest similarities), the pools grow and the ranking is redone. The top k are therefore the true top k.

Every search ends: k is capped at the number of images, pools never grow past the collection (once they
cover it nothing is unseen), each refinement round scores at least one more candidate, a bound that is not
finite counts as "cannot be decided" (the candidate is scored exactly; an unseen bound stops the growth),
and MAX_ROUNDS caps the growth besides. Weights are relative within a query (a unit weight of 0 counts
for nothing; if none is positive all count the same), so no 0/0 can make a score NaN.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

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
WEIGHT_SETTINGS = ("weight_image", "weight_segment", "weight_position", "weight_relation", "weight_negative")
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


def weighted_mean(weights: list[float], values: list[float]) -> float:
    """The mean of values under weights. Weights are relative: scaled by the largest (tiny ones do not
    underflow), and when none is positive and finite all count the same (instead of 0/0 = NaN)."""
    w = np.asarray(weights, np.float64)
    top = float(w.max()) if w.size else 0.0
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and top > 0):
        w, top = np.ones_like(w), 1.0
    w = w / top
    return float(np.dot(w, values) / w.sum())


def _descending(value: float, sha: str) -> tuple[float, str]:
    """Sort key: best first, NaN last, ties by sha256 so equal scores come in a stable order."""
    return (-value if value == value else math.inf, sha)


@dataclass
class QueryVectors:
    """Normalised text vectors: the whole query, one per phrase, one per negative term."""

    whole: np.ndarray
    phrases: list[np.ndarray]
    negatives: list[np.ndarray] = field(default_factory=list)


def embed_query(embedder: Embedder, parsed: ParsedQuery) -> QueryVectors:
    """Embed a parsed query: the whole of it, each phrase, each negative term (one batch)."""
    texts = [t.text for t in parsed.terms] or [parsed.text]
    texts += [p.text for p in parsed.phrases] + [n.text for n in parsed.negatives]
    vecs = embedder.texts(texts)
    n_terms = len(parsed.terms) or 1
    weights = np.array([t.weight for t in parsed.terms] or [1.0], np.float64)
    # only the ratios matter: scaling by the largest keeps 1e-320 weights from underflowing to a zero vector
    top = float(weights.max())
    weights = weights / top if np.isfinite(top) and top > 0 else np.ones_like(weights)
    whole = (vecs[:n_terms] * weights[:, None]).sum(axis=0)  # rclip-style weighted sum of the positive terms
    whole = whole / max(float(np.linalg.norm(whole)), 1e-12)
    n_phrases = len(parsed.phrases)
    return QueryVectors(whole, list(vecs[n_terms : n_terms + n_phrases]), list(vecs[n_terms + n_phrases :]))


@dataclass
class Scored:
    """An exactly scored image."""

    fused: float
    parts: dict[str, float]
    matches: list[Match]


@dataclass
class Candidate:
    sha256: str
    image_sim: float
    hits: list[list[tuple[Segment, float]]]  # per phrase: this image's segments in that phrase's pool
    scored: Scored | None = None


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
    w_pos, w_rel = settings.weight_position, settings.weight_relation
    xs = np.array([s.centroid[0] for s in segments])
    ys = np.array([s.centroid[1] for s in segments])
    boxes = np.array([s.bbox for s in segments]).T  # 4 x S
    fits = np.stack([position_fit(p.position, (xs, ys)) for p in parsed.phrases], axis=1)  # S x P
    scores = sims + w_pos * (fits - 1)

    chosen: dict[int, tuple[int, float]] = {}  # phrase -> (segment row, relation fit or NaN)
    unit_scores = []
    for kind, i in _units(parsed):
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
        value = (scores[:, rel.subject][:, None] + scores[:, rel.object][None, :]) / 2 + w_rel * (pair_fit - 1)
        if len(segments) > 1:
            np.fill_diagonal(value, -np.inf)  # a segment cannot stand in a relation with itself
        s_row, t_row = np.unravel_index(int(np.argmax(value)), value.shape)
        best = (float(value[s_row, t_row]), int(s_row), int(t_row), float(pair_fit[s_row, t_row]))
        chosen[rel.subject], chosen[rel.object] = (best[1], best[3]), (best[2], best[3])
        unit_scores.append(float(best[0]))

    objects = weighted_mean([_unit_weight(parsed, u) for u in _units(parsed)], unit_scores)
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
    return Scored(fused, parts, matches)


def _upper_bound(parsed: ParsedQuery, unit_bounds: dict[int, float], image_sim: float, settings: Settings) -> float:
    """A score no image can beat given per-phrase similarity bounds (fits only ever subtract)."""
    values, weights = [], []
    for unit in _units(parsed):
        kind, i = unit
        if kind == "phrase":
            values.append(unit_bounds[i])
        else:
            rel = parsed.relations[i]
            values.append((unit_bounds[rel.subject] + unit_bounds[rel.object]) / 2)
        weights.append(_unit_weight(parsed, unit))
    objects = weighted_mean(weights, values) if values else image_sim
    negative_room = settings.weight_negative * sum(n.weight for n in parsed.negatives)  # sim >= -1
    return settings.weight_image * image_sim + settings.weight_segment * objects + negative_room


def rank(store: Store, parsed: ParsedQuery, vectors: QueryVectors, k: int, settings: Settings) -> list[SearchResult]:
    """The k best images for a parsed query (see the module doc); fewer when fewer are indexed."""
    _check_weights(settings)
    total_images, total_segments = store.vectors.image_count(), store.vectors.segment_count()
    k = min(k, total_images)  # a huge k allocates nothing and never asks Chroma for more than there is
    if k <= 0:
        return []
    if not parsed.phrases:  # nothing to look for in segments: the whole query against whole images
        parsed = ParsedQuery(parsed.text, (Phrase(parsed.text),), (), parsed.negatives, parsed.weighted, parsed.terms)
        vectors = QueryVectors(vectors.whole, [vectors.whole], vectors.negatives)
    pools = Pools(
        min(max(settings.image_pool, k), total_images),
        min(max(settings.segment_pool, k), total_segments),
        total_images,
        total_segments,
    )
    for _ in range(MAX_ROUNDS):
        top, unseen_bound = _rank_pools(store, parsed, vectors, k, settings, pools)
        if _decided(top, unseen_bound, k) or pools.complete:
            break
        pools = pools.grown()
    return _results(store, parsed, top)


def _decided(top: list[Candidate], unseen_bound: float | None, k: int) -> bool:
    """Whether no image outside the pools can reach the top k. An unseen bound that is not finite
    decides nothing, and larger pools would not change that: stop with the exact scores fetched."""
    if unseen_bound is None or not math.isfinite(unseen_bound):
        return True
    return len(top) == k and top[-1].scored.fused >= unseen_bound


def _rank_pools(
    store: Store,
    parsed: ParsedQuery,
    vectors: QueryVectors,
    k: int,
    settings: Settings,
    pools: Pools,
) -> tuple[list[Candidate], float | None]:
    """The top k candidates of these pools, scored exactly, and a bound on any image outside them (None
    when every image is in them)."""
    image_sims = store.vectors.query_images(vectors.whole, pools.images)
    # an image outside the pool is no more similar than the pool's last one (an empty pool tells nothing)
    image_floor = min(image_sims.values(), default=1.0) if len(image_sims) < pools.total_images else None
    use_segments = settings.weight_segment > 0
    w_pos = settings.weight_position
    phrase_hits: list[dict[str, list[tuple[Segment, float]]]] = []
    floors: list[float | None] = []
    for vec in vectors.phrases:
        hits = store.vectors.query_segments(vec, pools.segments) if use_segments else []
        by_image: dict[str, list[tuple[Segment, float]]] = {}
        for hit in hits:
            by_image.setdefault(hit.sha256, []).append((hit.segment, hit.similarity))
        phrase_hits.append(by_image)
        # an image's segment outside the pool is no more similar than the pool's last one
        floors.append(hits[-1].similarity if hits and len(hits) < pools.total_segments else None)

    shas = list(dict.fromkeys([*image_sims, *(sha for hits in phrase_hits for sha in hits)]))
    for sha, vec in store.vectors.image_vectors([s for s in shas if s not in image_sims]).items():
        image_sims[sha] = float(vec @ vectors.whole)
    candidates = {
        sha: Candidate(sha, image_sims[sha], [hits.get(sha, []) for hits in phrase_hits])
        for sha in shas
        if sha in image_sims
    }

    def best_known(phrase: Phrase, hits: list[tuple[Segment, float]]) -> float | None:
        """The best phrase score among an image's pool hits (their positions are known)."""
        if not hits:
            return None
        sims = np.array([sim for _, sim in hits])
        xs = np.array([seg.centroid[0] for seg, _ in hits])
        ys = np.array([seg.centroid[1] for seg, _ in hits])
        return float(np.max(sims + w_pos * (position_fit(phrase.position, (xs, ys)) - 1)))

    in_relation = {i for r in parsed.relations for i in (r.subject, r.object)}
    bounds: dict[str, float] = {}
    for cand in candidates.values():
        known = [best_known(p, h) for p, h in zip(parsed.phrases, cand.hits)]
        unit = {}
        for i, value in enumerate(known):
            options = [v for v in (value, floors[i]) if v is not None]
            unit[i] = max(options) if options else 1.0  # unknown: this image's segments were never seen
        if not use_segments:
            unit = dict.fromkeys(unit, cand.image_sim)
        value = _upper_bound(parsed, unit, cand.image_sim, settings)
        bounds[cand.sha256] = value if math.isfinite(value) else math.inf  # undecidable: score it exactly
        if vectors.negatives:
            continue
        if not use_segments:
            cand.scored = _whole_image_only(cand.image_sim, 0.0, settings)
        elif not in_relation and all(v is not None and (f is None or v >= f) for v, f in zip(known, floors)):
            # every phrase's best segment is among the pool hits: score from them, nothing to fetch
            segments = list({id(seg): seg for hits in cand.hits for seg, _ in hits}.values())
            row = {id(seg): r for r, seg in enumerate(segments)}
            sims = np.full((len(segments), len(parsed.phrases)), -np.inf)
            for i, hits in enumerate(cand.hits):
                for seg, sim in hits:
                    sims[row[id(seg)], i] = sim
            cand.scored = score_image(parsed, segments, sims, cand.image_sim, 0.0, settings)

    def bound(c: Candidate) -> float:
        return c.scored.fused if c.scored is not None else bounds[c.sha256]

    # each round scores at least one more candidate, so this ends within len(candidates) rounds
    while True:
        ordered = sorted(candidates.values(), key=lambda c: _descending(bound(c), c.sha256))
        waiting = [c for c in ordered[:k] if c.scored is None]
        if not waiting:
            break
        exact = sorted((c.scored.fused for c in candidates.values() if c.scored is not None), reverse=True)
        kth = exact[k - 1] if len(exact) >= k else -np.inf
        # everything that could still reach the top k, in one fetch
        todo = [c for c in ordered if c.scored is None and bounds[c.sha256] >= kth][: max(4 * k, 32)]
        _score_fetched(store, parsed, vectors, settings, todo or waiting)

    unseen = None
    if image_floor is not None:
        unit = {i: (f if f is not None else 1.0) for i, f in enumerate(floors)}
        if not use_segments:
            unit = dict.fromkeys(unit, image_floor)
        unseen = _upper_bound(parsed, unit, image_floor, settings)
    return ordered[:k], unseen


def _score_fetched(
    store: Store, parsed: ParsedQuery, vectors: QueryVectors, settings: Settings, todo: list[Candidate]
) -> None:
    """Fetch the candidates' own segments (and image vectors where needed) and score them exactly."""
    use_segments = settings.weight_segment > 0
    fetched: dict[str, list[tuple[Segment, np.ndarray]]] = {c.sha256: [] for c in todo}
    if use_segments:
        for sha, seg, vec in store.segment_vectors(list(fetched)):
            fetched[sha].append((seg, vec))
    image_vecs = store.vectors.image_vectors([sha for sha in fetched if not fetched[sha] or vectors.negatives])
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


def _results(store: Store, parsed: ParsedQuery, top: list[Candidate]) -> list[SearchResult]:
    paths = store.catalog.paths_of([c.sha256 for c in top])
    results = []
    for cand in top:
        if not paths.get(cand.sha256) or cand.scored is UNREADABLE:
            continue
        matches = [Match(m.phrase, _stored(store, cand.sha256, m.segment), m.parts) for m in cand.scored.matches]
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
            )
        )
    return results


def _stored(store: Store, sha: str, segment: Segment | None) -> Segment | None:
    """The stored segment with its mask; None for the whole-image stand-in."""
    if segment is None or segment.index < 0:
        return None
    return store.catalog.segment(sha, segment.index)
