"""Pictures for people: cached thumbnails and segment masks drawn over them (no Streamlit here).

Overlays must not change the colours a query asks about: by default a mask is shown by a neutral double
outline (dark outside, light inside, so one of the two contrasts with any object and any background) and a
small numbered tag; the object's own pixels stay as they are. A colour fill is optional and faint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from irs.load import load_image
from irs.records import Segment

# one fill colour per query phrase, in order (used only when the fill is switched on)
PALETTE = [(255, 64, 64), (64, 160, 255), (255, 200, 0), (80, 220, 120), (200, 90, 255), (255, 140, 40)]
DARK = (10, 10, 10)
LIGHT = (250, 250, 250)
FILL_OPACITY = 0.25  # faint: the object's colour stays readable through it


def tag(i: int) -> str:
    """The legend's mark for phrase i (0-based): ① ② … ⑳, then (21), (22), …; the picture shows i + 1."""
    return chr(0x2460 + i) if i < 20 else f"({i + 1})"


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


def smooth_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A bool mask resized to height x width with smooth edges.

    Masks are stored at the working size (often 256 px); nearest neighbour would enlarge every pixel into a
    visible step. Resizing the mask as a float (bilinear up, area down), blurring by about half the scale
    and thresholding at 0.5 gives the curve the coarse mask stands for instead."""
    if mask.shape == (height, width):
        return mask.astype(bool)
    scale = max(height / mask.shape[0], width / mask.shape[1])
    interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
    soft = cv2.resize(mask.astype(np.float32), (width, height), interpolation=interpolation)
    if scale > 1.5:
        soft = cv2.GaussianBlur(soft, (0, 0), sigmaX=scale / 2)
    return soft >= 0.5


def draw_segments(
    image: Image.Image,
    segments: Sequence[tuple[Segment | None, str]],
    fill: bool = False,
    outline: bool = True,
    box: bool = False,
    opacity: float = FILL_OPACITY,
) -> Image.Image:
    """Segments drawn over a copy of the image, each with its tag text ("" for none).

    The i-th entry's fill colour is PALETTE[i]; a None segment (a phrase matched by the whole image) keeps
    its place so colours and tags stay those of the phrases."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    height, width = base.shape[:2]
    thick = _thickness(height, width)
    masks = [(i, smooth_mask(s.mask(), height, width) if s.mask_rle else None, s) for i, s in _present(segments)]
    if fill:
        for i, mask, _ in masks:
            if mask is not None:
                colour = np.array(PALETTE[i % len(PALETTE)], np.float32)
                base[mask] = (1 - opacity) * base[mask] + opacity * colour
    out = base.clip(0, 255).astype(np.uint8)
    if outline:
        for _, mask, _ in masks:
            if mask is not None:
                _double_outline(out, mask, thick)
    result = Image.fromarray(out)
    draw = ImageDraw.Draw(result)
    if box:
        for _, _, segment in masks:
            x0, y0, x1, y1 = _pixel_box(segment, height, width)
            draw.rectangle([x0 - thick, y0 - thick, x1 + thick, y1 + thick], outline=DARK, width=thick)
            draw.rectangle([x0, y0, x1, y1], outline=LIGHT, width=thick)
    for i, _, segment in masks:
        text = segments[i][1]
        if text:
            _draw_tag(draw, text, _pixel_box(segment, height, width), height, width)
    return result


def _present(segments: Sequence[tuple[Segment | None, str]]) -> list[tuple[int, Segment]]:
    return [(i, s) for i, (s, _) in enumerate(segments) if s is not None]


def _thickness(height: int, width: int) -> int:
    """Line width in pixels: readable on a 1024 px view without burying a 256 px thumbnail."""
    return max(1, round(max(height, width) / 320))


def _double_outline(out: np.ndarray, mask: np.ndarray, thick: int) -> None:
    """Paint a light ring just inside the mask's edge and a dark ring just outside it (in place)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * thick + 1, 2 * thick + 1))
    as_u8 = mask.astype(np.uint8)
    inner = mask & ~cv2.erode(as_u8, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    outer = cv2.dilate(as_u8, kernel).astype(bool) & ~mask
    out[outer] = DARK
    out[inner] = LIGHT


def _pixel_box(segment: Segment, height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = segment.bbox
    return round(x0 * width), round(y0 * height), max(round(x1 * width) - 1, 0), max(round(y1 * height) - 1, 0)


def _draw_tag(draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int], height: int, width: int) -> None:
    """A small dark box with light text at the top-left corner of the segment's box, kept inside the image."""
    size = max(10, round(max(height, width) / 28))
    font = _font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 5)
    tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
    # just above the box's corner when there is room, else just inside it; never off the picture
    x = min(max(box[0], 0), max(width - tag_w, 0))
    y = box[1] - tag_h if box[1] - tag_h >= 0 else box[1]
    y = min(max(y, 0), max(height - tag_h, 0))
    draw.rectangle([x, y, x + tag_w - 1, y + tag_h - 1], fill=DARK, outline=LIGHT, width=1)
    draw.text((x + pad - left, y + pad - top), text, fill=LIGHT, font=font)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` (the fixed bitmap font where Pillow lacks FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()
