"""Server mode: the same code path against a `chroma run` started here on 127.0.0.1."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irs.index import Index
from irs.settings import load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("chroma run did not start")
    yield port
    proc.terminate()
    proc.wait(timeout=20)


def test_index_and_search_through_a_chroma_server(tmp_path, scenes_folder, chroma_server):
    env = {"IRS_CHROMA_HOST": "127.0.0.1", "IRS_CHROMA_PORT": str(chroma_server)}
    settings = load_settings({"profile": "test", "db": str(tmp_path / "db")}, environ=env)
    with Index(settings) as index:
        report = index.add_folder(scenes_folder)
        assert report.added == 8
        results = index.search("a green star", k=3)
        assert len(results) == 3 and results[0].segment is not None
        assert index.store.images.count() == 8
    assert not (tmp_path / "db" / "chroma").exists()  # vectors live on the server
    assert (tmp_path / "server").exists()
