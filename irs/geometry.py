"""Mask and box geometry: run-length masks, boxes, centroids, IoU. Explicit arrays in and out."""

from __future__ import annotations

import zlib

import numpy as np

Box = tuple[float, float, float, float]  # normalised x0, y0, x1, y1 in 0..1
Point = tuple[float, float]  # normalised x, y in 0..1


def rle_encode(mask: np.ndarray) -> bytes:
    """Compress an HxW bool mask: column-major run lengths (COCO order), zlib-packed uint32.

    The first run counts zeros, so a mask that starts with a set pixel begins with a 0 run.
    """
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return zlib.compress(np.zeros(0, np.uint32).tobytes())
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).astype(np.uint32)
    if flat[0]:
        runs = np.concatenate(([0], runs)).astype(np.uint32)
    return zlib.compress(runs.tobytes())


def rle_decode(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of rle_encode: an HxW bool mask."""
    runs = np.frombuffer(zlib.decompress(data), dtype=np.uint32)
    height, width = shape
    if int(runs.sum()) != height * width:
        raise ValueError(f"mask runs cover {int(runs.sum())} pixels, expected {height}x{width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs.astype(np.int64))
    return flat.reshape((width, height)).T


def mask_box(mask: np.ndarray) -> Box:
    """Normalised (x0, y0, x1, y1) of the set pixels; pixel edges, so a full mask is (0, 0, 1, 1)."""
    height, width = mask.shape
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height)


def mask_centroid(mask: np.ndarray) -> Point:
    """Normalised centre of mass of the set pixels (pixel centres)."""
    height, width = mask.shape
    cols = mask.sum(axis=0, dtype=np.int64)  # row and column sums: no coordinate arrays to build
    total = cols.sum()
    if total == 0:
        return (0.5, 0.5)
    rows = mask.sum(axis=1, dtype=np.int64)
    x = float((cols * np.arange(width)).sum() / total)
    y = float((rows * np.arange(height)).sum() / total)
    return ((x + 0.5) / width, (y + 0.5) / height)


def fit_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A mask resized (nearest neighbour) to height x width, or itself when it already fits."""
    if mask.shape == (height, width):
        return mask
    import cv2

    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def shrink_mask(mask: np.ndarray, max_side: int) -> np.ndarray:
    """A mask scaled down so its longest side is at most max_side (aspect kept)."""
    height, width = mask.shape
    scale = max_side / max(height, width)
    if scale >= 1:
        return mask
    return fit_mask(mask, max(1, round(height * scale)), max(1, round(width * scale)))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two same-size bool masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two normalised boxes."""
    return float(pairwise_box_iou(np.array([a, b], np.float64).T)[0, 1])


def pairwise_box_iou(boxes: np.ndarray) -> np.ndarray:
    """IoU of every pair of boxes: `boxes` is 4 x (..., n) (x0, y0, x1, y1 first), the result (..., n, n)."""
    x0, y0, x1, y1 = boxes

    def overlap(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.clip(
            np.minimum(hi[..., :, None], hi[..., None, :]) - np.maximum(lo[..., :, None], lo[..., None, :]), 0, None
        )

    inter = overlap(x0, x1) * overlap(y0, y1)
    area = (x1 - x0) * (y1 - y0)
    union = area[..., :, None] + area[..., None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def pad_box(box: Box, fraction: float) -> Box:
    """Grow a box by `fraction` of its size on every side, clipped to the image."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * fraction, (y1 - y0) * fraction
    return (max(0.0, x0 - dx), max(0.0, y0 - dy), min(1.0, x1 + dx), min(1.0, y1 + dy))


def box_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """A normalised box as integer pixel edges, at least one pixel wide and high."""
    x0 = min(int(np.floor(box[0] * width)), width - 1)
    y0 = min(int(np.floor(box[1] * height)), height - 1)
    x1 = max(int(np.ceil(box[2] * width)), x0 + 1)
    y1 = max(int(np.ceil(box[3] * height)), y0 + 1)
    return x0, y0, min(x1, width), min(y1, height)
