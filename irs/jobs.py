"""Indexing in the background: a thread running Index.add_folder, its progress readable from any thread.

The app keeps one IndexJob per database; the page only reads `snapshot()`, so it stays responsive.
Stopping sets the index's stop event: the run ends after its current batch and a later start resumes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from irs.index import Index, IndexReport, Progress


@dataclass(frozen=True)
class JobState:
    """One moment of a job: `stage` is idle, a pipeline stage (scan, embed, …), done, stopped or failed."""

    folder: str = ""
    running: bool = False
    stage: str = "idle"
    done: int = 0  # images through the current stage
    total: int = 0
    rate: float = 0.0  # images per second
    eta: float | None = None  # seconds left, when known
    started: float = 0.0  # time.time() at start
    report: IndexReport | None = None  # once finished or stopped
    error: str | None = None  # once failed: "ExceptionType: message"


class IndexJob:
    """At most one background indexing run over `index`, started, stopped and watched from any thread."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state = JobState()

    @property
    def running(self) -> bool:
        """Whether a run is going on."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, folder: str, segment: bool = True) -> bool:
        """Start indexing `folder` unless a run is going on. Returns whether it started."""
        with self._lock:
            if self.running:
                return False
            self._stop = threading.Event()
            self._state = JobState(folder=folder, running=True, stage="scan", started=time.time())
            self._thread = threading.Thread(target=self._run, args=(folder, segment), daemon=True, name="irs-index")
            self._thread.start()
            return True

    def stop(self) -> None:
        """Ask the run to end after its current batch (returns at once; `join` waits)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the run, if any, to end (at most `timeout` seconds)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> JobState:
        """The job's state now (immutable, so safe to read while the run goes on)."""
        with self._lock:
            return self._state

    def _progress(self, p: Progress) -> None:
        with self._lock:
            self._state = replace(self._state, stage=p.stage, done=p.done, total=p.total, rate=p.rate, eta=p.eta)

    def _run(self, folder: str, segment: bool) -> None:
        report, error = None, None
        try:
            report = self.index.add_folder(folder, progress=self._progress, stop=self._stop, segment=segment)
        except Exception as err:  # shown on the page; the index itself stays consistent
            error = f"{type(err).__name__}: {err}"
        stage = "stopped" if report and report.stopped else ("failed" if error else "done")
        with self._lock:
            self._state = replace(self._state, running=False, stage=stage, eta=None, report=report, error=error)
