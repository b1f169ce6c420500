"""Query and rank: text in, ranked images out, each with its best segment and its score parts.

    fused = weight_image * image_sim + weight_segment * segment_sim

image_sim is the cosine similarity of the query to the whole image; segment_sim that of the query to
the image's best segment. An image without segments (not segmented yet, or none found) lets its whole
image stand in: segment_sim = image_sim.

Candidates come from two vector queries: the nearest `image_pool` images and the nearest
`segment_pool` segments; nothing scans all segments. The answer is still exact (the threshold
algorithm): an image with segments but none in the pool gets the pool's lowest similarity as a
provisional segment_sim, and its own segments are fetched and scored before it is returned; an image
in neither pool can score at most the bound made of the two pools' lowest similarities, and when the
k-th result falls below that bound, both pools grow and the ranking is redone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irs.records import SearchResult, Segment
from irs.settings import Settings
from irs.store import Store


@dataclass
class Candidate:
    sha256: str
    image_sim: float
    segment: Segment | None
    segment_sim: float | None  # None: no segments, the whole image stands in
    exact: bool

    def parts(self, settings: Settings) -> dict[str, float]:
        seg = self.image_sim if self.segment_sim is None else self.segment_sim
        fused = settings.weight_image * self.image_sim + settings.weight_segment * seg
        return {"image": self.image_sim, "segment": seg, "fused": fused}

    def fused(self, settings: Settings) -> float:
        return self.parts(settings)["fused"]


@dataclass
class Pool:
    candidates: dict[str, Candidate]
    unseen_bound: float | None  # best score an image outside the pools could have; None: none is outside


def gather(store: Store, query: np.ndarray, n_images: int, n_segments: int, settings: Settings) -> Pool:
    """Candidates from the nearest images and the nearest segments, with exact image similarities."""
    image_sims = store.query_images(query, n_images)
    hits = store.query_segments(query, n_segments)
    best: dict[str, tuple[Segment, float]] = {}
    for hit in hits:  # best first, so the first hit of an image is its best segment
        best.setdefault(hit.sha256, (hit.segment, hit.similarity))
    image_floor = min(image_sims.values()) if len(image_sims) == n_images else None
    segment_floor = hits[-1].similarity if len(hits) == n_segments else None

    shas = list(dict.fromkeys([*image_sims, *best]))
    for sha, vec in store.image_vectors([s for s in shas if s not in image_sims]).items():
        image_sims[sha] = float(vec @ query)
    counts = store.segment_count(shas)

    candidates: dict[str, Candidate] = {}
    for sha in shas:
        if sha not in image_sims:
            continue  # removed while we were looking
        if sha in best:
            seg, sim = best[sha]
            candidates[sha] = Candidate(sha, image_sims[sha], seg, sim, True)
        elif counts.get(sha, 0) == 0 or segment_floor is None:
            candidates[sha] = Candidate(sha, image_sims[sha], None, None, True)
        else:
            candidates[sha] = Candidate(sha, image_sims[sha], None, segment_floor, False)

    bound = None
    if image_floor is not None:
        w_i, w_s = settings.weight_image, settings.weight_segment
        bound = (w_i + w_s) * image_floor  # an unseen image without segments
        if segment_floor is not None:
            bound = max(bound, w_i * image_floor + w_s * segment_floor)
    return Pool(candidates, bound)


def exact_top(store: Store, query: np.ndarray, pool: Pool, k: int, settings: Settings) -> list[Candidate]:
    """The k best candidates, resolving provisional segment scores until the top k are all exact."""
    candidates = pool.candidates
    while True:
        ordered = sorted(candidates.values(), key=lambda c: c.fused(settings), reverse=True)[:k]
        provisional = [c.sha256 for c in ordered if not c.exact]
        if not provisional:
            return ordered
        for sha in provisional:
            candidates[sha].segment, candidates[sha].segment_sim = None, None
        for sha, seg, vec in store.segment_vectors(provisional):
            sim = float(vec @ query)
            cand = candidates[sha]
            if cand.segment_sim is None or sim > cand.segment_sim:
                cand.segment, cand.segment_sim = seg, sim
        for sha in provisional:
            candidates[sha].exact = True


def rank(store: Store, query: np.ndarray, k: int, settings: Settings) -> list[SearchResult]:
    """The k best images for a query vector (see the module doc for the score)."""
    if k <= 0:
        return []
    if settings.weight_image < 0 or settings.weight_segment < 0:
        raise ValueError("settings 'weight_image' and 'weight_segment' must not be negative")
    n_images, n_segments = max(settings.image_pool, k), max(settings.segment_pool, k)
    while True:
        pool = gather(store, query, n_images, n_segments, settings)
        top = exact_top(store, query, pool, k, settings)
        if pool.unseen_bound is None or (len(top) == k and top[-1].fused(settings) >= pool.unseen_bound):
            break
        n_images, n_segments = n_images * 4, n_segments * 4

    paths = store.paths_of([c.sha256 for c in top])
    return [
        SearchResult(
            path=paths[c.sha256][0],
            paths=paths[c.sha256],
            sha256=c.sha256,
            score=c.fused(settings),
            parts=c.parts(settings),
            segment=store.segment(c.sha256, c.segment.index) if c.segment else None,
        )
        for c in top
        if paths.get(c.sha256)
    ]
