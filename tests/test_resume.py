"""Kill -9 an indexing run at several moments; the rerun must end with nothing lost and nothing doubled."""

import signal
import subprocess
import sys
import time

from conftest import REPO, cli_env, db_state, run_irs

from irs.index import Index
from irs.settings import load_settings
from irs.synthetic import write_folder


def run_until(db, folder, condition, timeout=120) -> int:
    """Start `irs index`, SIGKILL it as soon as condition(state) holds; return its exit code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "irs", "--db", str(db), "index", str(folder), "--quiet"],
        cwd=REPO,
        env=cli_env(IRS_BATCH_SIZE="4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if condition(db_state(db)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    return proc.wait()


def test_sigkill_at_any_moment_then_rerun_is_complete_and_clean(tmp_path):
    n = 24
    folder = tmp_path / "photos"
    write_folder(folder, n, seed=21, side=128)
    db = tmp_path / "db"
    # during whole-image embedding, then twice during segmentation
    codes = [
        run_until(db, folder, lambda s: 0 < s[0] < n),
        run_until(db, folder, lambda s: 2 <= s[1] < n // 2),
        run_until(db, folder, lambda s: s[1] >= n // 2 and s[1] < n - 2),
    ]
    assert codes.count(-signal.SIGKILL) >= 2, codes  # the kills really landed mid-run
    final = run_irs("--db", str(db), "index", str(folder), "--quiet")
    assert final.returncode == 0, final.stderr

    settings = load_settings({"db": str(db)}, environ={})
    with Index(settings) as index:
        s = index.stats()
        assert (s.files, s.images, s.embedded, s.segmented) == (n, n, n, n)
        assert index.store.vectors.image_count() == n
        assert index.store.vectors.segment_count() == s.segments
        ids = index.store.vectors.segments.get(include=[])["ids"]
        assert len(ids) == len(set(ids))
        interrupted = s.segments

    # an uninterrupted run over the same folder stores exactly the same segments
    with Index(settings.replace(db=str(tmp_path / "clean"))) as clean:
        clean.add_folder(folder)
        assert clean.stats().segments == interrupted
