"""Server mode: the same code path against a `chroma run` started here on 127.0.0.1."""

import shutil
import socket
import sys
from pathlib import Path

import pytest
from conftest import free_port, serve

from irs.index import Index
from irs.settings import load_settings


@pytest.fixture
def chroma_server(tmp_path):
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = free_port()
    command = [exe, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)]
    for _ in serve(
        command,
        lambda: socket.create_connection(("127.0.0.1", port), timeout=0.5) is not None,
        "chroma run",
        seconds=60,
    ):
        yield port


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
