"""The app's background indexing job on a real index (test profile): it runs, reports, refuses a second
run, stops and resumes, and says why it failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from irs.index import Index
from irs.jobs import IndexJob, JobState
from irs.settings import Settings
from irs.synthetic import write_folder

WAIT = 120  # seconds: a generous bound for a few tiny images on a busy machine


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_folder(folder, 4, seed=11, side=96)
    return folder


def finish(job: IndexJob) -> JobState:
    job.join(WAIT)
    assert not job.running, "the job did not finish in time"
    return job.snapshot()


def test_a_new_job_is_idle(index: Index) -> None:
    state = IndexJob(index).snapshot()
    assert (state.stage, state.running, state.report, state.error) == ("idle", False, None, None)


def test_a_job_runs_to_done_with_a_report_and_its_counts(index: Index, photos: Path) -> None:
    job = IndexJob(index)
    assert job.start(str(photos))
    first = job.snapshot()
    assert first.running and first.folder == str(photos) and first.started > 0
    state = finish(job)
    assert state.stage == "done" and not state.running and state.error is None
    assert state.report is not None and state.report.found == 4 and state.report.added == 4
    assert state.report.segmented == 4
    assert state.total > 0 and state.done == state.total  # the last stage's counts stay for the page
    assert state.eta is None and state.started == first.started
    assert index.image_count() == 4


def test_a_second_start_while_running_is_refused(index: Index, photos: Path) -> None:
    job = IndexJob(index)
    assert job.start(str(photos), segment=False)
    assert not job.start(str(photos), segment=False)
    assert job.snapshot().folder == str(photos)
    assert finish(job).stage == "done"
    assert job.start(str(photos), segment=False)  # free again once the run is over
    assert finish(job).report.unchanged == 4


@pytest.fixture
def small_batches(test_settings: Settings) -> Iterator[Index]:
    """An index that writes every two images, so a stopped run has written some and not all."""
    with Index(test_settings.replace(batch_size=2)) as idx:
        yield idx


def test_stop_ends_the_run_and_a_later_start_resumes_it(small_batches: Index, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    write_folder(folder, 8, seed=12, side=64)
    index = small_batches
    job = IndexJob(index)
    assert job.start(str(folder), segment=False)
    job.stop()  # before the first file is through: the run ends after its first batch
    stopped = finish(job)
    assert stopped.stage == "stopped" and stopped.report.stopped and stopped.error is None
    assert 0 < stopped.report.added < 8
    assert stopped.done < stopped.total == 8
    assert job.start(str(folder), segment=False)
    resumed = finish(job)
    assert resumed.stage == "done" and not resumed.report.stopped
    assert stopped.report.added + resumed.report.added == 8  # nothing redone, nothing left out
    assert index.image_count() == 8


def test_a_missing_folder_fails_with_the_reason(index: Index, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    job = IndexJob(index)
    assert job.start(str(missing))
    state = finish(job)
    assert state.stage == "failed" and not state.running and state.report is None
    assert state.error.startswith("FileNotFoundError: ") and str(missing) in state.error
    assert "not a folder" in state.error
