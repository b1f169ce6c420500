"""What the pages draw: segment masks shown by a neutral double outline and a tag (the object's colour left as
it is), an optional faint fill, boxes, smooth enlarged masks, and thumbnails cached on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from irs.geometry import mask_box, rle_encode
from irs.load import LoadError
from irs.overlay import LIGHT, PALETTE, draw_segments, smooth_mask, tag, thumbnail
from irs.records import Segment

GREY = (100, 100, 100)
RED = (255, 0, 0)
BLACK, WHITE = (0, 0, 0), (255, 255, 255)
SIDE = 80


def disc(side: int = SIDE, radius: float = 17.5) -> np.ndarray:
    """A disc in the middle: its box corners lie outside it, so box and mask can be told apart."""
    y, x = np.mgrid[:side, :side]
    return (x + 0.5 - side / 2) ** 2 + (y + 0.5 - side / 2) ** 2 <= radius**2


def segment(mask: np.ndarray) -> Segment:
    return Segment(
        bbox=mask_box(mask),
        centroid=(0.5, 0.5),
        area=float(mask.mean()),
        mask_rle=rle_encode(mask),
        mask_shape=mask.shape,
    )


def scene(object_colour: tuple[int, int, int], background: tuple[int, int, int] = GREY) -> Image.Image:
    """A picture of one disc-shaped object of `object_colour` on `background`, like a synthetic scene."""
    out = np.full((SIDE, SIDE, 3), background, np.uint8)
    out[disc()] = object_colour
    return Image.fromarray(out)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def well_inside(mask: np.ndarray, margin: int = 4) -> np.ndarray:
    """The mask less a band along its edge, where the outline may be drawn."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


colours = st.tuples(*[st.integers(0, 255)] * 3)


@settings(max_examples=40, deadline=None)
@given(colour=colours, background=colours)
def test_without_fill_the_objects_own_pixels_are_unchanged(colour, background) -> None:
    mask = disc()
    picture = scene(colour, background)
    out = pixels(draw_segments(picture, [(segment(mask), "1")], fill=False, outline=True, box=True))
    inside = well_inside(mask)
    assert inside.sum() > 200
    assert np.all(out[inside] == colour)  # what the query asked about is what the reader sees
    assert np.all(out[:2, :] == background) or np.all(out[-2:, :] == background)  # far from the drawing


@pytest.mark.parametrize("colour", [BLACK, WHITE, RED, (30, 70, 220), (140, 40, 180), (128, 128, 128)])
def test_the_outline_stands_out_against_any_object_colour(colour) -> None:
    mask = disc()
    out = pixels(draw_segments(scene(colour, colour), [(segment(mask), "")]))  # object and background alike
    changed = np.abs(out - np.array(colour)).sum(axis=-1)
    ring = (changed > 0) & (np.abs(_distance_from_edge(mask)) <= 4)
    assert ring.sum() > 50  # an outline was drawn, along the edge
    assert np.all(changed[(np.abs(_distance_from_edge(mask)) > 6)] == 0)  # and only there
    # some outline pixel is far from the colour: the dark or the light line is nearly 765 / 2 away in summed channels
    assert changed.max() >= 350
    # dark outside, light inside: one of the two contrasts whatever the colour
    assert (out[ring & ~mask] <= 20).all() and (out[ring & mask] >= 235).all()


def _distance_from_edge(mask: np.ndarray) -> np.ndarray:
    """Signed distance in pixels to the mask's edge: positive inside."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    return inside - outside


def test_no_outline_no_fill_no_box_leaves_the_picture_as_it_was_but_the_tag() -> None:
    mask = disc()
    picture = scene(RED)
    plain = pixels(draw_segments(picture, [(segment(mask), "")], outline=False))
    assert np.all(plain == pixels(picture))
    tagged = pixels(draw_segments(picture, [(segment(mask), "1")], outline=False))
    changed = (tagged != pixels(picture)).any(axis=-1)
    x0, y0, x1, y1 = (round(v * SIDE) for v in mask_box(mask))
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 20  # a tag was drawn
    assert abs(xs.min() - x0) <= 1 and ys.max() <= y0 + 1  # at the box's top-left corner, above it
    assert (tagged[changed] <= 20).all(axis=-1).any() and (tagged[changed] >= 235).all(axis=-1).any()


def test_tags_are_drawn_per_segment_and_differ_by_text() -> None:
    left, right = np.zeros((SIDE, SIDE), bool), np.zeros((SIDE, SIDE), bool)
    left[30:50, 5:30], right[30:50, 50:75] = True, True
    picture = scene(GREY)
    one = pixels(draw_segments(picture, [(segment(left), "1"), (segment(right), "2")], outline=False))
    other = pixels(draw_segments(picture, [(segment(left), "2"), (segment(right), "1")], outline=False))
    assert (one[:30, :40] != GREY).any() and (one[:30, 40:] != GREY).any()  # one tag above each box
    assert (one != other).any()
    assert draw_segments(picture, [(None, "1"), (segment(right), "2")]) is not None  # a whole-image match


def test_the_fill_is_faint_and_in_the_phrases_colour() -> None:
    mask = disc()
    out = pixels(draw_segments(scene(GREY), [(segment(mask), "")], fill=True, outline=False))
    expected = np.round(0.75 * np.array(GREY) + 0.25 * np.array(PALETTE[0]))
    assert np.all(np.abs(out[well_inside(mask)] - expected) <= 1)
    assert np.all(out[~mask] == GREY)
    second = pixels(draw_segments(scene(GREY), [(None, ""), (segment(mask), "")], fill=True, outline=False))
    assert not np.array_equal(second[SIDE // 2, SIDE // 2], out[SIDE // 2, SIDE // 2])  # the second colour


def test_the_box_is_drawn_around_the_mask() -> None:
    mask = disc()
    x0, y0, _, _ = (round(v * SIDE) for v in mask_box(mask))
    assert not mask[y0, x0]  # the box's corner is outside the disc
    with_box = pixels(draw_segments(scene(GREY), [(segment(mask), "")], outline=False, box=True))
    without = pixels(draw_segments(scene(GREY), [(segment(mask), "")], outline=False, box=False))
    assert tuple(with_box[y0, x0]) == LIGHT and tuple(without[y0, x0]) == GREY
    assert tuple(with_box[2, 2]) == GREY  # far outside the box


def test_a_mask_made_at_another_size_fits_the_picture() -> None:
    small = disc(side=SIDE // 4, radius=17.5 / 4)  # masks are kept at the working size, pictures vary
    out = pixels(draw_segments(scene(GREY), [(segment(small), "")], fill=True, opacity=1.0, outline=False))
    assert tuple(out[SIDE // 2, SIDE // 2]) == PALETTE[0] and tuple(out[1, 1]) == GREY


def test_the_picture_itself_is_not_changed() -> None:
    picture = scene(RED)
    draw_segments(picture, [(segment(disc()), "1")], fill=True, outline=True, box=True)
    assert np.all(pixels(picture) == pixels(scene(RED)))  # the cached thumbnail is reused for the next overlay


def _steps(mask: np.ndarray, centre: float, radius: float) -> int:
    """The largest jump of the left or right edge between neighbouring rows, where the true edge is steep
    (within 0.6 radius of the centre row its slope is under 0.75 pixel per row, so a smooth edge moves at
    most one pixel a row)."""
    rows = [y for y in range(mask.shape[0]) if abs(y + 0.5 - centre) < 0.6 * radius]
    left = np.array([np.flatnonzero(mask[y])[0] for y in rows])
    right = np.array([np.flatnonzero(mask[y])[-1] for y in rows])
    return int(max(np.abs(np.diff(left)).max(), np.abs(np.diff(right)).max()))


@pytest.mark.parametrize("stored, scale", [(64, 4), (256, 4), (50, 5), (32, 8), (100, 3.84)])
def test_a_small_mask_is_enlarged_without_stair_steps(stored, scale) -> None:
    shown = round(stored * scale)
    radius = 0.3 * stored
    coarse = disc(stored, radius)
    smooth = smooth_mask(coarse, shown, shown)
    nearest = cv2.resize(coarse.astype(np.uint8), (shown, shown), interpolation=cv2.INTER_NEAREST).astype(bool)
    centre, true_radius = shown / 2, radius * shown / stored
    for mask in (smooth, smooth.T):  # rows and columns
        assert _steps(mask, centre, true_radius) <= 1
    assert _steps(nearest, centre, true_radius) >= 3  # what the old drawing did: steps of the scale
    truth = disc(shown, true_radius)
    assert (smooth ^ truth).sum() < (nearest ^ truth).sum()  # and closer to the disc the mask stands for


def test_a_large_mask_is_shrunk_and_a_fitting_one_kept() -> None:
    mask = disc(400, 90)
    assert smooth_mask(mask, 400, 400) is not None and np.array_equal(smooth_mask(mask, 400, 400), mask)
    small = smooth_mask(mask, 100, 100)
    assert small.shape == (100, 100) and abs(small.sum() - np.pi * 22.5**2) < 40


def test_legend_tags() -> None:
    assert [tag(i) for i in range(3)] == ["①", "②", "③"] and tag(20) == "(21)"


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
