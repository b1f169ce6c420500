"""How well a segment's place fits a word: smooth scores in 0..1 from centroids and boxes.

Thirds of the image are the reference: "left" is a centroid in the left third, "top right" one in the
top-right ninth. The scores are logistic ramps `SHARPNESS` wide around those edges, never hard filters,
so a car slightly past the third still counts a little.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from irs.geometry import Box, Point

SHARPNESS = 0.04  # width of the logistic ramps, in image fractions
# "A left of B" (right of, above, below): 0.5 with A's centre RELATION_MARGIN left of B's (level), 0.95 with it 3 x
# RELATION_SHARPNESS = 6% of the image further left. It was 0.5 at 5% apart with 0.04 ramps: relations true by 8-10%
# of the image then scored 0.7-0.8 and lost to images whose objects read worse (development galleries, seeds 999 and
# 31337: relation R@1 56 -> 57 of 60, 85 -> 94 of 100)
RELATION_MARGIN = 0.0
RELATION_SHARPNESS = 0.02

# Every function takes plain floats or numpy arrays (which broadcast): the ranker scores all segments,
# and all pairs of segments, of an image in one call.
Number = Any  # float or np.ndarray


def _ramp(x: Number, width: float = SHARPNESS) -> Number:
    """Logistic step: 0.5 at x=0, ~0.95 at x=3*width."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64) / width, -60.0, 60.0)))


def _band(v: Number) -> Number:
    """Fit of a coordinate to the middle third."""
    return _ramp(v - 1 / 3) * _ramp(2 / 3 - v)


def _left(x: Number) -> Number:
    return _ramp(1 / 3 - x)


def _right(x: Number) -> Number:
    return _ramp(x - 2 / 3)


POSITIONS = ("left", "right", "top", "bottom", "centre", "top left", "top right", "bottom left", "bottom right")


def position_fit(position: str | None, centroid: Point) -> Number:
    """0..1: how well a centroid fits an absolute position (1 when there is none)."""
    x, y = centroid
    if position is None:
        return np.ones_like(np.asarray(x, dtype=np.float64))
    fits = {
        "left": lambda: _left(x),
        "right": lambda: _right(x),
        "top": lambda: _left(y),
        "bottom": lambda: _right(y),
        "centre": lambda: _band(x) * _band(y),
        "top left": lambda: _left(x) * _left(y),
        "top right": lambda: _right(x) * _left(y),
        "bottom left": lambda: _left(x) * _right(y),
        "bottom right": lambda: _right(x) * _right(y),
    }
    if position not in fits:
        raise ValueError(f"unknown position {position!r}")
    return fits[position]()


def _overlap_1d(a0: Number, a1: Number, b0: Number, b1: Number) -> Number:
    return np.maximum(0.0, np.minimum(a1, b1) - np.maximum(a0, b0))


RELATIONS = ("left of", "right of", "above", "below", "next to", "near", "on top of", "inside")


def relation_fit(predicate: str, s_box: Box, s_centre: Point, o_box: Box, o_centre: Point) -> Number:
    """0..1: how well subject (s) and object (o) stand in `predicate`."""
    dx, dy = o_centre[0] - s_centre[0], o_centre[1] - s_centre[1]  # > 0: object right of / below subject
    if predicate == "left of":
        return _ramp(dx - RELATION_MARGIN, RELATION_SHARPNESS)
    if predicate == "right of":
        return _ramp(-dx - RELATION_MARGIN, RELATION_SHARPNESS)
    if predicate == "above":
        return _ramp(dy - RELATION_MARGIN, RELATION_SHARPNESS)
    if predicate == "below":
        return _ramp(-dy - RELATION_MARGIN, RELATION_SHARPNESS)
    if predicate == "near":
        return _ramp(0.4 - np.hypot(dx, dy), 0.07)
    if predicate == "next to":
        # side by side: about the same height in the image, and close horizontally
        return _ramp(0.15 - np.abs(dy)) * _ramp(0.45 - np.abs(dx), 0.07)
    if predicate == "on top of":
        # above, horizontally overlapping, and the subject's bottom near the object's top
        width = np.maximum(np.minimum(s_box[2] - s_box[0], o_box[2] - o_box[0]), 1e-6)
        overlap = _overlap_1d(s_box[0], s_box[2], o_box[0], o_box[2]) / width
        gap = o_box[1] - s_box[3]
        return _ramp(dy - 0.02, 0.03) * np.minimum(1.0, overlap) * _ramp(0.1 - np.abs(gap), 0.04)
    if predicate == "inside":
        area = np.maximum((s_box[2] - s_box[0]) * (s_box[3] - s_box[1]), 1e-9)
        inter = _overlap_1d(s_box[0], s_box[2], o_box[0], o_box[2]) * _overlap_1d(
            s_box[1], s_box[3], o_box[1], o_box[3]
        )
        return np.minimum(1.0, inter / area)
    raise ValueError(f"unknown relation {predicate!r}")
