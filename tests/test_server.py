"""Server mode: the same code path against a `chroma run` started here on 127.0.0.1, and what a user sees
when that server dies mid-index (a one-line message, exit 2), comes back in time (the run goes on), or
comes back later (a rerun completes: nothing lost, nothing doubled)."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import REPO, cli_env, db_state, free_port

from irs.index import Index
from irs.settings import load_settings
from irs.synthetic import write_folder
from irs.vectors import transport_error

N = 24  # images in the folder the CLI tests index


class ChromaServer:
    """`chroma run` on 127.0.0.1, which a test can SIGKILL and start again on the same port and path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, seconds: float = 60) -> float:
        """Start it and wait until it answers a heartbeat; returns how long that took."""
        exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
        command = [exe, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)]
        started = time.monotonic()
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not self.answers():
            if time.monotonic() - started > seconds or self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"chroma run did not start on {self.where}")
            time.sleep(0.1)
        return time.monotonic() - started

    def answers(self) -> bool:
        """Whether the server answers its heartbeat (a direct connection: no proxy is ever consulted)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/api/v2/heartbeat")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, connections in flight just break."""
        assert self.proc is not None and self.proc.poll() is None, "the server is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChromaServer]:
    chroma = ChromaServer(tmp_path / "server")
    try:
        chroma.start()
        yield chroma
    finally:
        chroma.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the CLI tests index (read-only)."""
    folder = tmp_path_factory.mktemp("photos")
    write_folder(folder, N, seed=21, side=96)
    return folder


@pytest.fixture(scope="module")
def clean_segments(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    """How many segments an uninterrupted (local) run stores for `photos`."""
    settings = load_settings({"profile": "test", "db": str(tmp_path_factory.mktemp("clean") / "db")}, environ={})
    with Index(settings) as clean:
        clean.add_folder(photos)
        return clean.stats().segments


def server_env(server: ChromaServer, **extra: str) -> dict[str, str]:
    """The CLI's environment for this server; NO_PROXY keeps its traffic on 127.0.0.1 whatever the
    environment says."""
    return cli_env(
        IRS_CHROMA_HOST="127.0.0.1",
        IRS_CHROMA_PORT=str(server.port),
        IRS_BATCH_SIZE="2",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        **extra,
    )


def irs(db: Path, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "irs", "--db", str(db), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def index_while(
    db: Path, folder: Path, env: dict[str, str], when: Callable[[tuple[int, int]], bool], act: Callable[[], None]
) -> tuple[subprocess.CompletedProcess, float, tuple[int, int]]:
    """Run `irs index`; as soon as when(db_state) holds, act() (kill the server...). Returns the finished
    run, the seconds from the end of act() to the run's exit, and the state act() saw."""
    out, err = db.parent / "index.out", db.parent / "index.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "irs", "--db", str(db), "index", str(folder), "--quiet"],
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 120
            seen = (0, 0)
            while proc.poll() is None and time.monotonic() < deadline:
                seen = db_state(db)
                if when(seen):
                    break
                time.sleep(0.005)
            assert proc.poll() is None, f"indexing ended before the moment came ({seen}): {err.read_text()}"
            act()
            acted = time.monotonic()
            proc.wait(timeout=120)
            after = time.monotonic() - acted
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    return done, after, seen


def assert_clean_failure(run: subprocess.CompletedProcess, server: ChromaServer) -> str:
    """Exit 2 and one `irs:` line that names the server and says to start it and run again."""
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    message = [line for line in lines if "Start it" in line]
    assert len(message) == 1 and message[0] == lines[-1], run.stderr
    line = message[0]
    assert line.startswith("irs: ") and server.where in line, line
    assert f"chroma run --path PATH --host 127.0.0.1 --port {server.port}" in line, line
    assert "run the command again" in line, line
    return line


def server_index(db: Path, server: ChromaServer) -> Index:
    return Index(
        load_settings({"db": str(db)}, environ={"IRS_CHROMA_HOST": "127.0.0.1", "IRS_CHROMA_PORT": str(server.port)})
    )


def assert_complete(index: Index, clean_segments: int) -> None:
    """Every image is embedded and segmented, and the segments are exactly those of an uninterrupted run
    (none lost, none doubled)."""
    s = index.stats()
    assert (s.files, s.images, s.embedded, s.segmented, s.image_vectors) == (N, N, N, N, N), s
    assert s.segments == s.segment_vectors == clean_segments, s
    ids = index.store.vectors.segments.get(include=[])["ids"]
    assert len(ids) == len(set(ids)) == clean_segments


@pytest.mark.timeout(120)
def test_index_and_search_through_a_chroma_server(tmp_path, scenes_folder, server):
    env = {"IRS_CHROMA_HOST": "127.0.0.1", "IRS_CHROMA_PORT": str(server.port)}
    settings = load_settings({"profile": "test", "db": str(tmp_path / "db")}, environ=env)
    with Index(settings) as index:
        report = index.add_folder(scenes_folder)
        assert report.added == 8
        results = index.search("a green star", k=3)
        assert len(results) == 3 and results[0].segment is not None
        assert index.store.vectors.image_count() == 8
        segments = index.stats().segments
    assert segments > 0
    assert not (tmp_path / "db" / "chroma").exists()  # no local vector store was made
    # the vectors live on the server: a client of its own, after the index is closed, sees every one
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    other = chromadb.HttpClient("127.0.0.1", server.port, settings=ChromaSettings(anonymized_telemetry=False))
    assert sorted(c.count() for c in other.list_collections()) == sorted([8, segments])


@pytest.mark.timeout(60)
def test_what_the_http_client_raises_when_its_server_dies_is_recognised(server):
    """Each phase, against a real server: what chromadb's HttpClient raises, and transport_error on it."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    def client() -> object:
        return chromadb.HttpClient("127.0.0.1", server.port, settings=ChromaSettings(anonymized_telemetry=False))

    def raised(call: Callable[[], object]) -> BaseException:
        with pytest.raises(Exception) as info:
            call()
        return info.value

    chroma = client()
    col = chroma.get_or_create_collection("irs-probe", embedding_function=None)
    col.upsert(ids=["a"], embeddings=np.ones((1, 8)))
    # the server answered: its refusals are not "unreachable"
    assert transport_error(raised(lambda: chroma.get_or_create_collection("x", embedding_function=None))) is None
    assert transport_error(raised(lambda: col.upsert(ids=["b"], embeddings=np.ones((1, 3))))) is None
    assert transport_error(ValueError("Could not connect to tenant default_tenant. Are you sure it exists?")) is None

    server.kill()
    err = raised(client)  # the client checks tenant and database when it is made
    assert type(err) is ValueError and isinstance(err.__context__, httpx.ConnectError), repr(err)
    assert transport_error(err) is not None
    calls = {
        "get_or_create_collection": lambda: chroma.get_or_create_collection("irs-probe", embedding_function=None),
        "upsert": lambda: col.upsert(ids=["a"], embeddings=np.ones((1, 8))),
        "get": lambda: col.get(ids=["a"], include=["embeddings"]),
        "query": lambda: col.query(query_embeddings=[np.ones(8)], n_results=1),
        "count": col.count,
        "delete": lambda: col.delete(ids=["zz"]),
    }
    for name, call in calls.items():
        err = raised(call)
        assert type(err) is httpx.ConnectError and transport_error(err) is not None, (name, repr(err))

    # back on the same path: the same client and collection work again, and a repeated upsert is harmless
    server.start()
    for call in calls.values():
        call()
    assert col.count() == 1

    # dying in the middle of requests: the connection is dropped or reset under them
    failures: list[BaseException] = []

    def hammer() -> None:
        try:
            while True:
                col.count()
                col.upsert(ids=["a"], embeddings=np.ones((1, 8)))
        except Exception as err:
            failures.append(err)

    worker = threading.Thread(target=hammer)
    worker.start()
    time.sleep(0.3)
    server.kill()
    worker.join(timeout=10)
    assert failures and transport_error(failures[0]) is not None, failures
    assert type(failures[0]) in (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError), repr(failures[0])


@pytest.mark.timeout(300)  # with the module's uninterrupted run, when this test is the first to need it
def test_server_killed_mid_index_says_so_and_a_rerun_completes(tmp_path, photos, clean_segments, server):
    db = tmp_path / "db"
    env = server_env(server, IRS_CHROMA_RETRY_SECONDS="3")
    # SIGKILL the server once segments are being written
    run, after, seen = index_while(db, photos, env, lambda s: 1 <= s[1] <= N // 2, server.kill)
    assert_clean_failure(run, server)
    assert after < 3 + 20, f"exited {after:.1f} s after the server died"
    embedded, segmented = db_state(db)
    assert embedded == N and segmented < N, (seen, embedded, segmented)

    # the server comes back (same path), the user runs the command again
    server.start()
    rerun = irs(db, "index", str(photos), "--quiet", env=env)
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
    assert f"{N - segmented} segmented" in rerun.stdout, rerun.stdout
    check = irs(db, "check", env=env)
    assert check.returncode == 0 and check.stdout.strip() == "SQLite and Chroma agree", check.stdout + check.stderr
    stats = json.loads(irs(db, "stats", env=env).stdout)
    assert (stats["embedded"], stats["segmented"], stats["segments"]) == (N, N, clean_segments), stats
    with server_index(db, server) as index:
        assert_complete(index, clean_segments)


@pytest.mark.timeout(60)
def test_server_down_before_the_run_fails_quickly(tmp_path, photos, server):
    server.kill()
    started = time.monotonic()
    run = irs(tmp_path / "db", "index", str(photos), "--quiet", env=server_env(server, IRS_CHROMA_RETRY_SECONDS="3"))
    took = time.monotonic() - started
    assert_clean_failure(run, server)
    assert "retried for 3 s" in run.stderr
    assert took < 3 + 12, f"took {took:.1f} s"


@pytest.mark.timeout(300)
def test_server_back_within_the_retry_window_the_run_goes_on(tmp_path, photos, clean_segments, server):
    db = tmp_path / "db"
    env = server_env(server, IRS_CHROMA_RETRY_SECONDS="60")

    def bounce() -> None:
        server.kill()
        time.sleep(1)
        server.start()

    # kill it during whole-image embedding (or, should that be over already, early in segmentation)
    run, _, _ = index_while(db, photos, env, lambda s: s[0] >= 2, bounce)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert f"irs: Chroma server at {server.where} not answering" in run.stderr, run.stderr
    assert f"irs: Chroma server at {server.where} answering again" in run.stderr, run.stderr
    assert f"{N} embedded" in run.stdout and f"{N} segmented, 0 failed" in run.stdout, run.stdout
    with server_index(db, server) as index:
        assert index.check().ok, index.check()
        assert_complete(index, clean_segments)
