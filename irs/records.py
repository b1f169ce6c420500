"""Typed rows that flow through the pipeline: load -> segment -> embed -> store -> search."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from irs.geometry import Box, Point, rle_decode

if TYPE_CHECKING:
    from irs.query import ParsedQuery


@dataclass(frozen=True)
class FileEntry:
    """A file found on disk, before it is read."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class LoadedImage:
    """A decoded image: RGB pixels at working resolution plus its identity."""

    path: str
    sha256: str
    width: int  # original size, after EXIF orientation
    height: int
    pixels: np.ndarray | None  # HxWx3 uint8 at working resolution; None when read and hashed but not decoded


@dataclass
class Segment:
    """One region of an image, with its position in normalised coordinates."""

    bbox: Box
    centroid: Point
    area: float  # fraction of the image
    mask_rle: bytes  # compressed run-length mask, see irs.geometry
    mask_shape: tuple[int, int]  # (height, width) of the mask
    predicted_iou: float = 0.0
    stability_score: float = 0.0
    index: int = 0  # position within its image, 0 = best

    def mask(self) -> np.ndarray:
        """Decode the mask to an HxW bool array."""
        return rle_decode(self.mask_rle, self.mask_shape)


@dataclass
class EmbeddedImage:
    """A new image as the store writes it: its identity, its original size, its whole-image vector."""

    sha256: str
    width: int
    height: int
    vector: np.ndarray


@dataclass
class SegmentedImage:
    """An image's segments with one vector per segment, as the store writes them."""

    sha256: str
    segments: list[Segment]
    vectors: np.ndarray  # len(segments) x dim


@dataclass(frozen=True)
class ImageRow:
    """An indexed image as a page lists it: its identity and its first path."""

    sha256: str
    path: str


@dataclass(frozen=True)
class BadFile:
    """A file that could not be indexed, and why."""

    path: str
    reason: str


@dataclass
class Match:
    """The segment chosen for one query phrase, with the parts of its score."""

    phrase: str
    segment: Segment | None
    parts: dict[str, float] = field(default_factory=dict)
    confidence: float = math.nan  # 0..1, 0.5 the line between a good and a weak match (irs.confidence)


@dataclass
class SearchResult:
    """One ranked image: its best segment and the named parts of its score."""

    path: str
    sha256: str
    score: float
    parts: dict[str, float]
    segment: Segment | None
    paths: list[str] = field(default_factory=list)  # every path with these bytes
    matches: list[Match] = field(default_factory=list)  # the segment matched for each query phrase
    parsed: ParsedQuery | None = None
    confidence: float = math.nan  # 0..1, 0.5 the line between a good and a weak result (irs.confidence)

    def to_json(self) -> dict:
        """The `search --json` shape."""
        return {
            "path": self.path,
            "paths": self.paths,
            "sha256": self.sha256,
            "score": round(self.score, 6),
            "confidence": _json_number(self.confidence),
            "parts": {k: round(v, 6) for k, v in self.parts.items()},
            "segment": segment_json(self.segment),
            "parsed": self.parsed.to_json() if self.parsed else None,
            "matches": [
                {
                    "phrase": m.phrase,
                    "segment": segment_json(m.segment),
                    "parts": {k: round(v, 6) for k, v in m.parts.items()},
                    "confidence": _json_number(m.confidence),
                }
                for m in self.matches
            ],
        }


def _json_number(value: float) -> float | None:
    """Rounded for JSON; None where unknown (NaN is not JSON)."""
    return round(value, 6) if math.isfinite(value) else None


def segment_json(segment: Segment | None) -> dict | None:
    """A segment as plain JSON (position only; masks stay in the store)."""
    if segment is None:
        return None
    return {
        "index": segment.index,
        "bbox": [round(v, 6) for v in segment.bbox],
        "centroid": [round(v, 6) for v in segment.centroid],
        "area": round(segment.area, 6),
        "predicted_iou": round(segment.predicted_iou, 6),
        "stability_score": round(segment.stability_score, 6),
    }


@dataclass
class Progress:
    """One progress report: a stage, how far it is, and how fast it goes."""

    stage: str  # "scan", "embed", "segment" or "copy vectors" (once, for a database from before schema 2)
    done: int
    total: int
    started: float
    path: str = ""

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def __str__(self) -> str:
        eta = f"{self.eta:.0f}s" if self.eta is not None else "?"
        return f"{self.stage}: {self.done}/{self.total} images, {self.rate:.1f}/s, ETA {eta}"


@dataclass
class IndexReport:
    """What one `add_folder` run did."""

    found: int = 0
    added: int = 0  # files whose image was embedded in this run
    reused: int = 0  # new paths whose bytes were already indexed (copies, renames)
    unchanged: int = 0
    removed: int = 0  # paths that vanished from the folder
    segmented: int = 0
    failed: list[BadFile] = field(default_factory=list)
    stopped: bool = False


ProgressFn = Callable[[Progress], Any]
