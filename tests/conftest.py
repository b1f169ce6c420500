"""Shared fixtures: the test profile (tiny random models), synthetic folders, an opened index."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from irs.index import Index
from irs.settings import load_settings
from irs.synthetic import write_folder

# Never reach for a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def scenes_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight synthetic scenes (read-only: copy before changing)."""
    folder = tmp_path_factory.mktemp("scenes")
    write_folder(folder, 8, seed=3, side=192)
    return folder


@pytest.fixture
def test_settings(tmp_path: Path):
    return load_settings({"profile": "test", "db": str(tmp_path / "db")}, environ={})


@pytest.fixture
def index(test_settings):
    idx = Index(test_settings)
    yield idx
    idx.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(command: list[str], ready: Callable[[], bool], what: str, seconds: float = 90, **popen: Any):
    """Start a server process, wait until `ready()` holds, yield it, and stop it afterwards."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    deadline = time.monotonic() + seconds
    while not _quietly(ready):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"{what} did not start")
        time.sleep(0.3)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except OSError:
        return False


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: the test profile, no hub access."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRS_")}
    env.update({"IRS_PROFILE": "test", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}, **extra)
    return env


def run_irs(*args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """`python -m irs ARGS` in a subprocess (test profile, `env` added), with a hard timeout."""
    return subprocess.run(
        [sys.executable, "-m", "irs", *args],
        cwd=REPO,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def db_state(db: Path | str) -> tuple[int, int]:
    """(embedded, segmented) images of a database, read without locking out its writer."""
    try:
        con = sqlite3.connect(f"file:{db}/irs.sqlite?mode=ro", uri=True, timeout=1)
        row = con.execute("SELECT COALESCE(SUM(embedded),0), COALESCE(SUM(segmented),0) FROM images").fetchone()
        con.close()
        return int(row[0]), int(row[1])
    except sqlite3.Error:
        return 0, 0
