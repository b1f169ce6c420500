"""One writer at a time: a second indexer names the first and exits or waits; searching never waits;
several processes may create the same new database at once."""

import re
import subprocess
import sys
import time

from conftest import REPO, cli_env

from irs.jobs import IndexJob
from irs.locks import DatabaseBusy, writer_lock
from irs.synthetic import write_folder


def start(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "irs", *args],
        cwd=REPO,
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "irs", *args], cwd=REPO, env=cli_env(**env), capture_output=True, text=True, timeout=240
    )


def wait_for_lock(db, proc, seconds=60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if (db / "irs.lock").exists() and (db / "irs.lock").read_text():
            return
        time.sleep(0.05)
    raise AssertionError("the first indexer never took the lock")


def test_a_second_indexer_names_the_first_and_searching_goes_on(tmp_path, scenes_folder):
    folder = tmp_path / "photos"
    write_folder(folder, 16, seed=5, side=128)
    db = tmp_path / "db"
    assert run("index", str(scenes_folder), "--db", str(db), "--no-segments").returncode == 0
    first = start("index", str(folder), "--db", str(db), "--quiet", IRS_BATCH_SIZE="2")
    try:
        wait_for_lock(db, first)
        second = run("index", str(folder), "--db", str(db))
        assert second.returncode == 2
        assert f"is being indexed by process {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert "lock_timeout" in second.stderr
        found = run("search", "a red circle", "--db", str(db), "-k", "3")  # readers never wait for the writer
        ranked = re.findall(r"^ +\d+\. ", found.stdout, flags=re.M)
        assert found.returncode == 0 and len(ranked) == 3, found.stdout + found.stderr
    finally:
        out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    assert "16 files: 16 embedded" in out


def test_three_processes_create_one_new_database_and_queue_for_it(tmp_path, scenes_folder):
    db = tmp_path / "db"
    procs = [start("index", str(scenes_folder), "--db", str(db), "--quiet", IRS_LOCK_TIMEOUT="200") for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    assert all("Traceback" not in err for _, err in outs)
    firsts = [out for out, _ in outs if "8 embedded" in out]
    assert len(firsts) == 1, outs  # one did the work; the others waited and found it done
    assert sum("8 unchanged" in out for out, _ in outs) == 2
    stats = run("check", "--db", str(db))
    assert stats.returncode == 0 and "agree" in stats.stdout


def test_the_apps_job_reports_a_busy_database(index, scenes_folder):
    from pathlib import Path

    held = writer_lock(Path(index.settings.db), 0)
    try:
        job = IndexJob(index)
        assert job.start(str(scenes_folder))
        job.join(60)
        state = job.snapshot()
        assert state.stage == "failed" and "is being indexed by process" in state.error
    finally:
        held.release()
    try:
        writer_lock(Path(index.settings.db), 0).release()  # free again once released
    except DatabaseBusy:
        raise AssertionError("the lock stayed held") from None
