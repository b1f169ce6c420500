"""What the pages draw: segment masks blended over a picture with outline and box, and thumbnails made
once and then read from the disk cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irs.geometry import mask_box, rle_encode
from irs.load import LoadError
from irs.overlay import draw_segments, thumbnail
from irs.records import Segment

GREY = (100, 100, 100)
RED = (255, 0, 0)
SIDE = 40


def disc(side: int = SIDE, radius: float = 8.5) -> np.ndarray:
    """A disc in the middle: its box corners lie outside it, so box and mask can be told apart."""
    y, x = np.mgrid[:side, :side]
    return (x - side / 2) ** 2 + (y - side / 2) ** 2 <= radius**2


def segment(mask: np.ndarray) -> Segment:
    return Segment(
        bbox=mask_box(mask),
        centroid=(0.5, 0.5),
        area=float(mask.mean()),
        mask_rle=rle_encode(mask),
        mask_shape=mask.shape,
    )


def grey() -> Image.Image:
    return Image.new("RGB", (SIDE, SIDE), GREY)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def test_the_fill_moves_pixels_inside_the_mask_toward_the_colour_and_leaves_the_rest() -> None:
    mask = disc()
    out = pixels(draw_segments(grey(), [(segment(mask), RED)], opacity=0.5, outline=False, box=False))
    assert np.all(out[mask] == [177, 50, 50])  # halfway from grey to red
    assert np.all(out[~mask] == GREY)


def test_the_outline_is_the_colour_on_the_masks_edge_only() -> None:
    mask = disc()
    out = pixels(draw_segments(grey(), [(segment(mask), RED)], opacity=0.5, outline=True, box=False))
    edge_row = np.flatnonzero(mask[SIDE // 2])[0]  # the leftmost mask pixel on the middle row
    assert tuple(out[SIDE // 2, edge_row]) == RED
    assert tuple(out[SIDE // 2, SIDE // 2]) == (177, 50, 50)  # the inside is blended, not painted
    assert np.all(out[~mask] == GREY)


def test_the_box_is_drawn_around_the_mask() -> None:
    mask = disc()
    x0, y0, _, _ = (round(v * SIDE) for v in mask_box(mask))
    assert not mask[y0, x0]  # the box's corner is outside the disc
    with_box = pixels(draw_segments(grey(), [(segment(mask), RED)], opacity=0.5, outline=False, box=True))
    without = pixels(draw_segments(grey(), [(segment(mask), RED)], opacity=0.5, outline=False, box=False))
    assert tuple(with_box[y0, x0]) == RED and tuple(without[y0, x0]) == GREY
    assert tuple(with_box[2, 2]) == GREY  # far outside the box


def test_opacity_zero_leaves_the_fill_unchanged() -> None:
    mask = disc()
    out = pixels(draw_segments(grey(), [(segment(mask), RED)], opacity=0.0, outline=False, box=False))
    assert np.all(out == GREY)
    outlined = pixels(draw_segments(grey(), [(segment(mask), RED)], opacity=0.0, outline=True, box=False))
    assert tuple(outlined[SIDE // 2, SIDE // 2]) == GREY and (outlined == RED).all(axis=-1).any()


def test_a_mask_made_at_another_size_fits_the_picture() -> None:
    small = disc(side=SIDE // 2, radius=4.5)  # masks are kept at the working size, pictures vary
    out = pixels(draw_segments(grey(), [(segment(small), RED)], opacity=1.0, outline=False, box=False))
    assert tuple(out[SIDE // 2, SIDE // 2]) == RED and tuple(out[1, 1]) == GREY


def test_each_segment_gets_its_own_colour_and_the_picture_itself_is_not_changed() -> None:
    left, right = np.zeros((SIDE, SIDE), bool), np.zeros((SIDE, SIDE), bool)
    left[10:20, 2:12], right[10:20, 28:38] = True, True
    picture = grey()
    blue = (0, 0, 255)
    out = pixels(draw_segments(picture, [(segment(left), RED), (segment(right), blue)], 1.0, False, False))
    assert tuple(out[15, 5]) == RED and tuple(out[15, 33]) == blue
    assert np.all(pixels(picture) == GREY)  # the cached thumbnail is reused for the next overlay


@pytest.fixture
def photo(tmp_path: Path) -> tuple[str, str]:
    """A 300x200 PNG and its content hash."""
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(path)
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_thumbnail_fits_the_size_and_is_cached_by_content_hash(photo: tuple[str, str], tmp_path: Path) -> None:
    path, sha = photo
    cache = tmp_path / "thumbs"
    first = thumbnail(path, sha, 120, cache)
    assert first.size == (120, 80)
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()) == [
        f"{sha[:2]}/{sha}_120.jpg"  # no half-written temporary left behind
    ]
    Path(path).unlink()  # from now on only the cache can answer
    again = thumbnail(path, sha, 120, cache)
    assert again.size == (120, 80) and again.mode == "RGB"
    with pytest.raises(LoadError):
        thumbnail(path, sha, 64, cache)  # another size is made from the file, which is gone


def test_a_missing_file_raises_and_caches_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "thumbs"
    with pytest.raises(LoadError, match="cannot read file"):
        thumbnail(str(tmp_path / "gone.jpg"), "ab" * 32, 120, cache)
    assert not cache.exists() or not any(cache.rglob("*.jpg"))
