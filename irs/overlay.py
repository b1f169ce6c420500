"""Pictures for people: cached thumbnails and segment masks drawn over them (no Streamlit here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from irs.geometry import fit_mask
from irs.load import load_image
from irs.records import Segment

# one colour per query phrase, in order
PALETTE = [(255, 64, 64), (64, 160, 255), (255, 200, 0), (80, 220, 120), (200, 90, 255), (255, 140, 40)]


def thumbnail(path: str, sha256: str, size: int, cache_dir: str | Path, max_pixels: int = 100_000_000) -> Image.Image:
    """The image at most `size` pixels on its longest side, made once and cached as JPEG by content hash."""
    cache = Path(cache_dir) / f"{sha256[:2]}" / f"{sha256}_{size}.jpg"
    if cache.is_file():
        return Image.open(cache).convert("RGB")
    image = Image.fromarray(load_image(path, max_pixels, size).pixels)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".part")
    image.save(tmp, "JPEG", quality=88)
    tmp.replace(cache)  # atomic: a reader never sees half a file
    return image


def draw_segments(
    image: Image.Image,
    segments: list[tuple[Segment, tuple[int, int, int]]],
    opacity: float = 0.45,
    outline: bool = True,
    box: bool = True,
) -> Image.Image:
    """Each segment's mask blended over the image in its colour, with its outline and its box."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    height, width = base.shape[:2]
    edges = []
    for segment, colour in segments:
        if segment is None:
            continue
        mask = fit_mask(segment.mask(), height, width) if segment.mask_rle else None
        if mask is not None:
            base[mask] = (1 - opacity) * base[mask] + opacity * np.array(colour, np.float32)
            if outline:
                edges.append((mask & ~_erode(mask), colour))
    out = base.clip(0, 255).astype(np.uint8)
    for edge, colour in edges:
        out[edge] = colour
    result = Image.fromarray(out)
    if box:
        draw = ImageDraw.Draw(result)
        for segment, colour in segments:
            if segment is not None:
                x0, y0, x1, y1 = segment.bbox
                draw.rectangle([x0 * width, y0 * height, x1 * width - 1, y1 * height - 1], outline=colour, width=2)
    return result


def _erode(mask: np.ndarray) -> np.ndarray:
    """A mask shrunk by one pixel (4-neighbourhood), so mask minus this is its outline."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner
