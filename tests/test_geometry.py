import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from irs.geometry import box_iou, box_pixels, mask_box, mask_centroid, mask_iou, pad_box, rle_decode, rle_encode

masks = st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
    lambda hw: arrays(np.bool_, hw, elements=st.booleans())
)
unit = st.floats(0, 1, allow_nan=False)
boxes = st.tuples(unit, unit, unit, unit).map(
    lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
)


@given(masks)
@settings(max_examples=200)
def test_rle_round_trip(mask):
    assert np.array_equal(rle_decode(rle_encode(mask), mask.shape), mask)


def test_rle_is_compact_for_a_large_blob():
    mask = np.zeros((1024, 1024), bool)
    mask[100:600, 200:900] = True
    assert len(rle_encode(mask)) < 2000  # vs 1 MiB as bools


def test_rle_rejects_wrong_shape():
    data = rle_encode(np.ones((4, 4), bool))
    try:
        rle_decode(data, (5, 5))
    except ValueError as err:
        assert "expected 5x5" in str(err)
    else:
        raise AssertionError("wrong shape accepted")


@given(masks)
def test_box_holds_every_set_pixel_and_the_centroid(mask):
    h, w = mask.shape
    x0, y0, x1, y1 = mask_box(mask)
    assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1
    ys, xs = np.nonzero(mask)
    if xs.size:
        assert (xs / w >= x0 - 1e-9).all() and ((xs + 1) / w <= x1 + 1e-9).all()
        assert (ys / h >= y0 - 1e-9).all() and ((ys + 1) / h <= y1 + 1e-9).all()
        cx, cy = mask_centroid(mask)
        assert x0 <= cx <= x1 and y0 <= cy <= y1


def test_box_and_centroid_of_a_known_square():
    mask = np.zeros((10, 20), bool)
    mask[0:5, 0:10] = True  # top-left quarter
    assert mask_box(mask) == (0.0, 0.0, 0.5, 0.5)
    assert mask_centroid(mask) == (0.25, 0.25)


@given(boxes, boxes)
def test_box_iou_is_symmetric_and_bounded(a, b):
    assert abs(box_iou(a, b) - box_iou(b, a)) < 1e-9
    assert 0 <= box_iou(a, b) <= 1 + 1e-9


def test_box_iou_known_values():
    assert box_iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5)) == 1.0
    assert box_iou((0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)) == 0.0
    assert abs(box_iou((0, 0, 0.5, 1), (0.25, 0, 0.75, 1)) - 1 / 3) < 1e-9


@given(boxes, st.floats(0, 2))
def test_padded_box_stays_in_image_and_contains_the_box(box, fraction):
    p = pad_box(box, fraction)
    assert 0 <= p[0] <= box[0] and 0 <= p[1] <= box[1] and box[2] <= p[2] <= 1 and box[3] <= p[3] <= 1


@given(boxes, st.integers(1, 500), st.integers(1, 500))
def test_box_pixels_never_empty_and_inside(box, w, h):
    x0, y0, x1, y1 = box_pixels(box, w, h)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert mask_iou(a, b) == 4 / 12
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0
