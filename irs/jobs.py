"""Indexing in the background: a thread running Index.add_folder, its progress readable from any thread.

The app keeps one IndexJob per database; the page only reads `snapshot()`, so it stays responsive.
Stopping sets the index's stop event: the run ends after its current batch and a later start resumes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from irs.index import Index, IndexReport, Progress


@dataclass(frozen=True)
class JobState:
    folder: str
    running: bool
    stage: str
    done: int
    total: int
    rate: float
    eta: float | None
    started: float
    report: IndexReport | None
    error: str | None


class IndexJob:
    def __init__(self, index: Index) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state = JobState("", False, "idle", 0, 0, 0.0, None, 0.0, None, None)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, folder: str, segment: bool = True) -> bool:
        """Start indexing `folder` unless a run is going on. Returns whether it started."""
        with self._lock:
            if self.running:
                return False
            self._stop = threading.Event()
            self._state = JobState(folder, True, "scan", 0, 0, 0.0, None, time.time(), None, None)
            self._thread = threading.Thread(target=self._run, args=(folder, segment), daemon=True, name="irs-index")
            self._thread.start()
            return True

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> JobState:
        with self._lock:
            return self._state

    def _progress(self, p: Progress) -> None:
        with self._lock:
            s = self._state
            self._state = JobState(s.folder, True, p.stage, p.done, p.total, p.rate, p.eta, s.started, None, None)

    def _run(self, folder: str, segment: bool) -> None:
        report, error = None, None
        try:
            report = self.index.add_folder(folder, progress=self._progress, stop=self._stop, segment=segment)
        except Exception as err:  # shown on the page; the index itself stays consistent
            error = f"{type(err).__name__}: {err}"
        with self._lock:
            s = self._state
            stage = "stopped" if report and report.stopped else ("failed" if error else "done")
            self._state = JobState(s.folder, False, stage, s.done, s.total, s.rate, None, s.started, report, error)
