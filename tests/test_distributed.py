"""Indexing on Ray (irs.distributed) gives what the single-process indexer gives, and survives its driver
being stopped or killed. Ray runs locally with 2 CPUs and fractional resources."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, cli_env, db_state, run_irs

from irs.index import Index, Progress
from irs.settings import load_settings
from irs.synthetic import write_folder

ray = pytest.importorskip("ray")

COUNT = 16  # good images; the folder also holds a copy of one and a file that is not an image


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-photos")
    write_folder(folder, COUNT, seed=31, side=160)
    shutil.copy(folder / "scene_00002.png", folder / "copy of scene 2.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def open_index(db: Path) -> Index:
    return Index(load_settings({"profile": "test", "db": str(db)}, environ={}))


@pytest.fixture(scope="module")
def reference(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The single-process indexer's database of the folder, as comparable values."""
    db = tmp_path_factory.mktemp("single") / "db"
    with open_index(db) as index:
        report = index.add_folder(folder)
        assert (report.added + report.reused, report.segmented) == (COUNT + 1, COUNT)
        return contents(index)


@pytest.fixture(scope="module")
def local_ray() -> None:
    """One local Ray for the in-process tests (irs.distributed joins it rather than starting its own)."""
    from irs.distributed import connect

    started = connect("local")
    yield
    if started:
        ray.shutdown()


def contents(index: Index) -> dict:
    """Everything a user could tell apart: paths -> image ids, segment ids and boxes, vectors, errors."""
    paths = index.indexed_paths()
    shas = sorted(set(paths.values()))
    segments = {(sha, s.index): s.bbox for sha in shas for s in index.segments_of(sha)}
    return {
        "paths": paths,
        "images": index.store.vectors.image_vectors(shas),
        "segments": segments,
        "segment_vectors": {(sha, s.index): v for sha, s, v in index.store.segment_vectors(shas)},
        "errors": sorted((bad.path, bad.reason) for bad in index.errors()),
        "consistent": index.check().ok,
    }


def assert_same(got: dict, want: dict) -> None:
    assert got["paths"] == want["paths"]
    assert got["errors"] == want["errors"] and len(want["errors"]) == 1
    assert got["segments"] == want["segments"]  # the same segment ids, with the same boxes
    assert sorted(got["images"]) == sorted(want["images"])
    for key, vector in want["images"].items():
        np.testing.assert_allclose(got["images"][key], vector, atol=1e-5)
    assert sorted(got["segment_vectors"]) == sorted(want["segment_vectors"])
    for key, vector in want["segment_vectors"].items():
        np.testing.assert_allclose(got["segment_vectors"][key], vector, atol=1e-5)
    assert got["consistent"]


def test_ray_index_equals_single_process_even_when_stopped_and_resumed(local_ray, folder, reference, tmp_path):
    stop = threading.Event()
    seen: list[Progress] = []

    def stop_at_first_batch(p: Progress) -> None:
        seen.append(p)
        stop.set()

    with open_index(tmp_path / "db") as index:
        first = index.add_folder(folder, progress=stop_at_first_batch, stop=stop, ray="local")
        assert first.stopped and 0 < seen[-1].done < seen[-1].total  # it stopped part-way
        second = index.add_folder(folder, ray="local")
        assert not second.stopped
        assert first.added + second.added + first.reused + second.reused == COUNT + 1
        assert first.segmented + second.segmented == COUNT
        # each run tries the broken file again, as a single-process run does
        assert {bad.path for bad in first.failed + second.failed} == {str(folder / "broken.jpg")}
        assert_same(contents(index), reference)
        assert index.search("a red circle", k=3)  # and the result is searchable


def test_ray_segments_the_images_a_whole_image_run_left(local_ray, folder, reference, tmp_path):
    with open_index(tmp_path / "db") as index:
        index.add_folder(folder, segment=False)
        assert index.stats().segmented == 0
        report = index.add_folder(folder, ray="local", ray_workers=1)
        assert (report.added, report.unchanged, report.segmented) == (0, COUNT + 1, COUNT)
        assert_same(contents(index), reference)


def test_ctrl_c_then_kill_9_of_the_ray_driver_then_a_rerun_loses_and_doubles_nothing(folder, reference, tmp_path):
    """`irs index --ray` stopped with Ctrl-C (SIGINT to its process group, as a terminal sends it) ends
    cleanly with its Ray gone; killed with SIGKILL it leaves a database a rerun without Ray completes."""
    db = tmp_path / "db"
    interrupted = _start_ray_cli(db, folder)
    try:
        _wait_for_images(interrupted, db)
        os.killpg(interrupted.pid, signal.SIGINT)
        out, _ = interrupted.communicate(timeout=120)
        assert interrupted.returncode == 0 and "(stopped: rerun to resume)" in out
        time.sleep(3)
        assert _session_processes(interrupted.pid) == []  # the local Ray it started is shut down
    finally:
        _kill_session(interrupted.pid)
    after_ctrl_c = db_state(db)[0]
    assert 0 < after_ctrl_c < COUNT

    killed = _start_ray_cli(db, folder)
    try:
        _wait_for_images(killed, db, more_than=after_ctrl_c)
        killed.send_signal(signal.SIGKILL)
        assert killed.wait() == -signal.SIGKILL
        assert db_state(db)[0] < COUNT  # killed mid-run
    finally:
        _kill_session(killed.pid)
    rerun = run_irs("--db", str(db), "index", str(folder), "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    with open_index(db) as index:
        assert_same(contents(index), reference)
        s = index.stats()
        assert (s.images, s.embedded, s.segmented) == (COUNT, COUNT, COUNT)
        assert index.store.vectors.image_count() == COUNT
        assert index.store.vectors.segment_count() == s.segments


def _start_ray_cli(db: Path, folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "irs", "--db", str(db), "index", str(folder), "--ray", "--quiet"],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, with the Ray processes it starts
    )


def _wait_for_images(proc: subprocess.Popen, db: Path, more_than: int = 0) -> None:
    """Until the run has written more than `more_than` images (it must still be running then)."""
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and db_state(db)[0] <= more_than:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be stopped"


def _session_processes(sid: int) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return found


def _kill_session(sid: int) -> None:
    """SIGKILL whatever the killed driver's session still runs (Ray's agents can outlive their driver)."""
    import psutil

    for pid in _session_processes(sid):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
