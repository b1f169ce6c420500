"""Geometry of every position and relation: right answers, smooth, bounded."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from irs.spatial import POSITIONS, RELATIONS, position_fit, relation_fit


def box_at(cx, cy, half=0.08):
    return (cx - half, cy - half, cx + half, cy + half)


@pytest.mark.parametrize(
    "position,good,bad",
    [
        ("left", (0.15, 0.5), (0.85, 0.5)),
        ("right", (0.85, 0.5), (0.15, 0.5)),
        ("top", (0.5, 0.15), (0.5, 0.85)),
        ("bottom", (0.5, 0.85), (0.5, 0.15)),
        ("centre", (0.5, 0.5), (0.1, 0.9)),
        ("top left", (0.15, 0.15), (0.15, 0.85)),
        ("top right", (0.85, 0.15), (0.15, 0.15)),
        ("bottom left", (0.15, 0.85), (0.85, 0.85)),
        ("bottom right", (0.85, 0.85), (0.85, 0.15)),
    ],
)
def test_positions(position, good, bad):
    assert position_fit(position, good) > 0.9
    assert position_fit(position, bad) < 0.05


def test_positions_are_smooth_not_hard_filters():
    values = [position_fit("left", (x / 100, 0.5)) for x in range(0, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone
    assert 0.4 < position_fit("left", (1 / 3, 0.5)) < 0.6  # half at the edge of the third
    assert max(abs(a - b) for a, b in zip(values, values[1:])) < 0.1  # no jumps


def test_no_position_fits_everything():
    assert position_fit(None, (0.9, 0.9)) == 1.0


@given(st.sampled_from(POSITIONS), st.floats(0, 1), st.floats(0, 1))
def test_position_fit_is_bounded(position, x, y):
    assert 0.0 <= position_fit(position, (x, y)) <= 1.0


@pytest.mark.parametrize(
    "predicate,subject,obj",
    [
        ("left of", (0.2, 0.5), (0.7, 0.5)),
        ("right of", (0.8, 0.5), (0.3, 0.5)),
        ("above", (0.5, 0.2), (0.5, 0.7)),
        ("below", (0.5, 0.8), (0.5, 0.3)),
        ("near", (0.4, 0.4), (0.55, 0.45)),
        ("next to", (0.3, 0.5), (0.55, 0.52)),
    ],
)
def test_relations_by_centres(predicate, subject, obj):
    fit = relation_fit(predicate, box_at(*subject), subject, box_at(*obj), obj)
    swapped_or_far = relation_fit(predicate, box_at(*obj), obj, box_at(*subject), subject)
    assert fit > 0.9
    if predicate not in ("near", "next to"):
        assert swapped_or_far < 0.05  # the converse does not hold


def test_near_and_next_to_fail_when_far_apart():
    assert relation_fit("near", box_at(0.1, 0.1), (0.1, 0.1), box_at(0.9, 0.9), (0.9, 0.9)) < 0.05
    assert relation_fit("next to", box_at(0.2, 0.1), (0.2, 0.1), box_at(0.25, 0.8), (0.25, 0.8)) < 0.05  # stacked


def test_on_top_of_needs_contact_and_overlap():
    cup, table = (0.4, 0.2, 0.6, 0.4), (0.2, 0.4, 0.8, 0.8)
    assert relation_fit("on top of", cup, (0.5, 0.3), table, (0.5, 0.6)) > 0.8
    floating = (0.4, 0.0, 0.6, 0.1)  # far above the table
    assert relation_fit("on top of", floating, (0.5, 0.05), table, (0.5, 0.6)) < 0.1
    beside = (0.85, 0.2, 0.95, 0.4)  # at the right height but not over it
    assert relation_fit("on top of", beside, (0.9, 0.3), table, (0.5, 0.6)) < 0.1


def test_inside_is_box_containment():
    dog, car = (0.4, 0.4, 0.5, 0.5), (0.3, 0.3, 0.7, 0.7)
    assert relation_fit("inside", dog, (0.45, 0.45), car, (0.5, 0.5)) == 1.0
    half_out = (0.6, 0.4, 0.8, 0.5)
    assert relation_fit("inside", half_out, (0.7, 0.45), car, (0.5, 0.5)) == pytest.approx(0.5)
    assert relation_fit("inside", car, (0.5, 0.5), dog, (0.45, 0.45)) < 0.1


unit = st.floats(0, 1)


@given(st.sampled_from(RELATIONS), unit, unit, unit, unit)
def test_relation_fit_is_bounded(predicate, x1, y1, x2, y2):
    fit = relation_fit(predicate, box_at(x1, y1), (x1, y1), box_at(x2, y2), (x2, y2))
    assert 0.0 <= fit <= 1.0


def test_unknown_words_are_refused():
    with pytest.raises(ValueError):
        position_fit("sideways", (0.5, 0.5))
    with pytest.raises(ValueError):
        relation_fit("behind", box_at(0.5, 0.5), (0.5, 0.5), box_at(0.5, 0.5), (0.5, 0.5))
