"""Query and rank: text in, ranked images out, each with its best segment and its score parts.

fused = weight_image * image_sim + weight_segment * segment_sim

image_sim is the cosine similarity of the query to the whole image; segment_sim that of the query to
the image's best segment. An image without segments (not segmented yet, or none found) lets its whole
image stand in: segment_sim = image_sim.

Candidates are the union of the nearest `image_pool` images and the images of the nearest
`segment_pool` segments. An image that has segments but none among the pool gets the pool's lowest
similarity as a provisional segment_sim (no segment of it can score higher); before a provisional
image is returned its own segments are fetched and scored exactly, and the ranking is redone, so the
top k are always exact.
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
    segment_sim: float | None
    exact: bool

    def fused(self, settings: Settings) -> float:
        seg = self.image_sim if self.segment_sim is None else self.segment_sim
        return settings.weight_image * self.image_sim + settings.weight_segment * seg

    def parts(self) -> dict[str, float]:
        seg = self.image_sim if self.segment_sim is None else self.segment_sim
        return {"image": self.image_sim, "segment": seg}


def rank(store: Store, query: np.ndarray, k: int, settings: Settings) -> list[SearchResult]:
    """The k best images for a query vector (see the module doc for the score)."""
    if k <= 0:
        return []
    image_sims = store.query_images(query, max(settings.image_pool, k))
    seg_pool = max(settings.segment_pool, k)
    hits = store.query_segments(query, seg_pool)
    best: dict[str, tuple[Segment, float]] = {}
    for hit in hits:  # best first, so the first hit of an image is its best segment
        best.setdefault(hit.sha256, (hit.segment, hit.similarity))
    # When the pool came back full, an unseen segment can score at most the pool's lowest similarity.
    floor = hits[-1].similarity if len(hits) == seg_pool else None

    shas = list(dict.fromkeys([*image_sims, *best]))
    missing = [s for s in shas if s not in image_sims]
    for sha, vec in store.image_vectors(missing).items():
        image_sims[sha] = float(vec @ query)
    counts = store.segment_count(shas)

    candidates: dict[str, Candidate] = {}
    for sha in shas:
        if sha not in image_sims:
            continue  # an image removed while we were looking
        if sha in best:
            seg, sim = best[sha]
            candidates[sha] = Candidate(sha, image_sims[sha], seg, sim, True)
        elif counts.get(sha, 0) == 0 or floor is None:
            candidates[sha] = Candidate(sha, image_sims[sha], None, None, counts.get(sha, 0) == 0)
        else:
            candidates[sha] = Candidate(sha, image_sims[sha], None, floor, False)

    while True:
        ordered = sorted(candidates.values(), key=lambda c: c.fused(settings), reverse=True)[:k]
        provisional = [c.sha256 for c in ordered if not c.exact]
        if not provisional:
            break
        for sha, seg, vec in store.segment_vectors(provisional):
            sim = float(vec @ query)
            cand = candidates[sha]
            if not cand.exact or sim > (cand.segment_sim or -2.0):
                cand.segment, cand.segment_sim, cand.exact = seg, sim, True
        for sha in provisional:
            candidates[sha].exact = True  # an image whose segments vanished keeps image_sim only
            if candidates[sha].segment is None:
                candidates[sha].segment_sim = None

    paths = store.paths_of([c.sha256 for c in ordered])
    results = []
    for cand in ordered:
        if not paths.get(cand.sha256):
            continue
        segment = _with_mask(store, cand.sha256, cand.segment)
        results.append(
            SearchResult(
                path=paths[cand.sha256][0],
                paths=paths[cand.sha256],
                sha256=cand.sha256,
                score=cand.fused(settings),
                parts={**cand.parts(), "fused": cand.fused(settings)},
                segment=segment,
            )
        )
    return results


def _with_mask(store: Store, sha: str, segment: Segment | None) -> Segment | None:
    """The stored segment (with its mask and scores) for a segment known by position only."""
    if segment is None:
        return None
    for stored in store.segments_of(sha):
        if stored.index == segment.index:
            return stored
    return segment
