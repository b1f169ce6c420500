"""Concurrency for the index pipeline: read and decode ahead of the model, write behind it.

Both are bounded, so memory stays flat however large the folder: `prefetch` runs at most `depth`
items ahead of the consumer, and `Writer` holds at most `depth` pending writes.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S", bound=Sequence[Any])


def chunks(items: S, size: int) -> Iterator[S]:
    """Consecutive slices of `items` (a list, tuple or array) of at most `size` each."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int, depth: int) -> Iterator[tuple[T, R]]:
    """(item, fn(item)) in input order, fn running on `workers` threads at most `depth` items ahead.

    PIL decoding, hashing and file reads release the GIL, so threads overlap them with the model."""
    if workers <= 0:
        for item in items:
            yield item, fn(item)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="irs-load")
    pending: deque[tuple[T, Future[R]]] = deque()
    source = iter(items)
    try:
        for item in source:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= depth:
                break
        while pending:
            item, future = pending.popleft()
            following = next(source, _END)
            if following is not _END:
                pending.append((following, pool.submit(fn, following)))
            yield item, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END: Any = object()


class TimeLimitExceeded(Exception):
    """A call did not finish within its time limit (it was abandoned, not stopped)."""


def call_with_time_limit(fn: Callable[[T], R], item: T, seconds: float) -> R:
    """fn(item), or TimeLimitExceeded after `seconds`.

    A decoder stuck in C code cannot be interrupted, so the call runs on a daemon thread that is
    abandoned when the time runs out: the run goes on, and that one thread is lost."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(item)
        except BaseException as err:  # handed to the caller below
            box["error"] = err

    thread = threading.Thread(target=run, name="irs-timed", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeLimitExceeded(f"took over {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class Writer:
    """Applies writes in order on one background thread, so the model never waits for the database.

    `submit` blocks while `depth` writes are pending; `close` waits for all of them and re-raises the
    first error (a failed write stops the run rather than losing data silently)."""

    def __init__(self, depth: int = 4) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="irs-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((fn, args))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job[0](*job[1])
                except BaseException as err:  # handed to the caller at the next submit or close
                    self._error = err


def batch_or_each(fn: Callable[[list[T]], Sequence[R]], items: list[T]) -> list[R | Exception]:
    """fn over all items at once (one output per item); if that raises, fn over each item alone, so
    that a failure is only the culprit's: its place in the result holds the exception."""
    try:
        return list(fn(items))
    except Exception as err:
        if len(items) == 1:
            return [err]
    return [out for item in items for out in batch_or_each(fn, [item])]
