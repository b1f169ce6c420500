"""The index pipeline's concurrency: read ahead in order and bounded, write behind in order and never
past a failed write, calls that may hang cut off in time, and slicing into batches."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from irs.pipeline import TimeLimitExceeded, Writer, batch_or_each, call_with_time_limit, chunks, prefetch


class Counted:
    """A function that records how many calls have started, so a test can see how far ahead it ran."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.started = 0
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, item: int) -> int:
        with self._lock:
            self.started += 1
        if item == self.fail_on:
            raise OSError(f"cannot read {item}")
        time.sleep(0.001 * (item % 3))  # uneven times: later items may finish first
        return item * 10


@pytest.mark.parametrize("workers", [0, 1, 4])
def test_prefetch_yields_every_item_in_input_order(workers: int) -> None:
    out = list(prefetch(Counted(), range(30), workers=workers, depth=5))
    assert out == [(i, i * 10) for i in range(30)]


@pytest.mark.parametrize("workers", [1, 4])
def test_prefetch_never_runs_more_than_depth_items_ahead(workers: int) -> None:
    fn = Counted()
    depth = 3
    for consumed, (item, _) in enumerate(prefetch(fn, range(20), workers=workers, depth=depth), 1):
        time.sleep(0.01)  # a slow consumer: the workers would race ahead if nothing held them
        assert fn.started <= consumed + depth, f"{fn.started} calls started after {consumed} items consumed"
        assert item == consumed - 1
    assert fn.started == 20


def test_prefetch_without_workers_calls_lazily() -> None:
    fn = Counted()
    stream = prefetch(fn, range(10), workers=0, depth=5)
    assert next(stream) == (0, 0)
    assert fn.started == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_prefetch_raises_a_workers_error_at_its_item(workers: int) -> None:
    seen = []
    with pytest.raises(OSError, match="cannot read 4"):
        for item, _ in prefetch(Counted(fail_on=4), range(10), workers=workers, depth=3):
            seen.append(item)
    assert seen == [0, 1, 2, 3]


def test_writer_applies_writes_in_order_and_close_waits_for_them() -> None:
    written: list[int] = []

    def slow_append(n: int) -> None:
        time.sleep(0.005)
        written.append(n)

    writer = Writer(depth=2)
    for n in range(10):
        writer.submit(slow_append, n)
    writer.close()
    assert written == list(range(10))


def test_writer_reraises_a_failed_write_at_a_later_submit_and_at_close() -> None:
    written: list[int] = []

    def write(n: int) -> None:
        if n == 2:
            raise OSError("disk full")
        written.append(n)

    writer = Writer(depth=4)
    for n in range(3):
        writer.submit(write, n)
    deadline = time.monotonic() + 10
    with pytest.raises(OSError, match="disk full"):
        while time.monotonic() < deadline:  # the failure surfaces once the writer thread has reached it
            writer.submit(write, 99)
            time.sleep(0.01)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert written == [0, 1]  # nothing submitted after the failure was written


def test_writer_skips_writes_queued_behind_a_failed_one() -> None:
    """Writes already queued when one fails must not run: a later batch must never land without an earlier one."""
    written: list[int] = []
    gate = threading.Event()

    def write(n: int) -> None:
        gate.wait(5)
        if n in (1, 3):
            raise OSError(f"disk full at {n}")
        written.append(n)

    writer = Writer(depth=8)
    for n in range(5):
        writer.submit(write, n)  # all queued before the first one runs
    gate.set()
    with pytest.raises(OSError, match="disk full at 1"):  # the first error, not a later one
        writer.close()
    assert written == [0]


def test_call_with_time_limit_returns_the_value() -> None:
    assert call_with_time_limit(lambda x: x + 1, 41, 5) == 42


def test_call_with_time_limit_reraises_the_callees_error() -> None:
    def broken(_: object) -> None:
        raise KeyError("bad header")

    with pytest.raises(KeyError, match="bad header"):
        call_with_time_limit(broken, None, 5)


def test_call_with_time_limit_gives_up_on_a_hang() -> None:
    release = threading.Event()
    started = time.monotonic()
    try:
        with pytest.raises(TimeLimitExceeded, match="0.2 s"):
            call_with_time_limit(lambda _: release.wait(30), None, 0.2)
    finally:
        release.set()  # let the abandoned thread end
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("items", [list(range(7)), tuple(range(7)), np.arange(7)])
def test_chunks_slice_lists_tuples_and_arrays(items: list[int] | tuple[int, ...] | np.ndarray) -> None:
    parts = list(chunks(items, 3))
    assert [list(p) for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(type(p) is type(items) for p in parts)  # arrays stay arrays for the model


def test_chunks_of_nothing_is_nothing() -> None:
    assert list(chunks([], 4)) == []


@pytest.mark.parametrize("size", [0, -1])
def test_chunks_refuse_a_size_below_one(size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(chunks([1, 2, 3], size))


@given(st.lists(st.integers()), st.integers(min_value=1, max_value=20))
def test_chunks_give_the_input_back_in_full_sized_pieces(items: list[int], size: int) -> None:
    parts = list(chunks(items, size))
    assert [x for p in parts for x in p] == items
    assert all(len(p) == size for p in parts[:-1])
    assert all(0 < len(p) <= size for p in parts)


def test_batch_or_each_fails_only_the_culprit():
    calls = []

    def double(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 3 in items:
            raise ValueError("three is bad")
        return [2 * i for i in items]

    out = batch_or_each(double, [1, 2, 3, 4])
    assert out[:2] == [2, 4] and out[3] == 8
    assert isinstance(out[2], ValueError) and "three" in str(out[2])
    assert calls[0] == [1, 2, 3, 4]  # the whole batch first, then one by one
    assert batch_or_each(double, [5, 6]) == [10, 12] and calls[-1] == [5, 6]
