"""A calibrated confidence for every phrase match and every result: 0..1, with 0.5 the line between a good
match and a weak one.

A phrase match's similarity is read against what the phrase finds everywhere in this index: the median
similarity of the phrase's segment pool (the nearest `segment_pool` segments, already fetched by the search,
so no extra vector query) stands for "typical segments the phrase half-fits". The confidence is a logistic
(Platt scaling) of two numbers, the similarity and its excess over that typical level:

    confidence = 1 / (1 + exp(-(w_sim * sim + w_excess * (sim - typical) + bias)))

with the constants fitted once per CLIP model on the synthetic benchmark (bench/confidence.py fits them on one
gallery and reports the rates on another). A match of a phrase with a position or a relation also has to
meet it: position and relation fits (irs.spatial) are already 0..1 with 0.5 at the edge, so a match's
confidence is the smallest of its similarity confidence, its position fit and its relation fit (a fuzzy AND),
and a result's is the smallest over its phrases (every phrase must be found, not only the easy one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GOOD = 0.5  # the confidence at and above which a match is good, below which it is weak


@dataclass(frozen=True)
class Calibration:
    """Logistic constants for one CLIP model: the log-odds of a good match are
    w_sim * sim + w_excess * (sim - typical) + bias. Both weights are >= 0, so the confidence never falls
    as the similarity rises."""

    w_sim: float
    w_excess: float
    bias: float

    def __post_init__(self) -> None:
        if not (self.w_sim >= 0 and self.w_excess >= 0 and self.w_sim + self.w_excess > 0):
            raise ValueError(f"calibration weights must be >= 0 and not both 0, got {self}")

    def line(self, typical: float) -> float:
        """The similarity at which the confidence is exactly 0.5, given the phrase's typical similarity."""
        return (self.w_excess * typical - self.bias) / (self.w_sim + self.w_excess)


# Fitted by `python bench/confidence.py --gallery 100 --per-family 10` on seed 31 (demo profile, the CLIP trained
# for variety), reported on seed 41. Both the raw cosine and its excess over the phrase's typical segments count.
CALIBRATIONS: dict[str, Calibration] = {
    "irs-small": Calibration(w_sim=25.38, w_excess=21.62, bias=-33.35),
}
# A model never fitted: only the excess over typical segments counts (the raw level of cosines differs from
# model to model), 0.5 at 0.15 above the pool's median, as a plain z of ~3 for CLIP ViT-B-32's spread.
UNFITTED = Calibration(w_sim=0.0, w_excess=20.0, bias=-3.0)


def calibration_for(clip_model: str) -> Calibration:
    """The constants fitted for a CLIP model, or the uncalibrated relative ones."""
    return CALIBRATIONS.get(clip_model, UNFITTED)


def logistic(x: float) -> float:
    """1 / (1 + e^-x), without overflow; NaN stays NaN."""
    if x != x:
        return math.nan
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def similarity_confidence(sim: float, typical: float, calibration: Calibration) -> float:
    """0..1: how sure a similarity is a good match, given the phrase's typical similarity in this index
    (NaN typical, e.g. no pool: the similarity alone, as if it were typical's own level)."""
    if typical != typical:
        typical = sim  # no excess known: read the similarity alone
    c = calibration
    return logistic(c.w_sim * sim + c.w_excess * (sim - typical) + c.bias)


def match_confidence(parts: dict[str, float], typical: float, calibration: Calibration) -> float:
    """A phrase match's confidence: its similarity's, capped by its position fit and its relation fit (each
    0..1 with 0.5 at the edge) when it has them."""
    value = similarity_confidence(parts["similarity"], typical, calibration)
    for name in ("position", "relation"):
        fit = parts.get(name)
        if fit is not None and fit == fit:
            value = min(value, float(fit))
    return float(np.clip(value, 0.0, 1.0)) if value == value else math.nan


def result_confidence(match_confidences: list[float], weights: list[float]) -> float:
    """A result's confidence: the weakest of its phrases that count (weight > 0; all of them when none
    does), NaN when there are none."""
    counted = [c for c, w in zip(match_confidences, weights) if w > 0] or list(match_confidences)
    counted = [c for c in counted if c == c]
    return min(counted) if counted else math.nan
