"""End to end through `python -m irs`, as a user types it."""

import json
import subprocess
import sys

from conftest import REPO, cli_env


def irs(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "irs", *args], cwd=REPO, env=cli_env(**env), capture_output=True, text=True, timeout=240
    )


def test_index_search_json_errors(tmp_path, scenes_folder):
    db = str(tmp_path / "db")
    (tmp_path / "bad").mkdir()
    bad = tmp_path / "bad" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = irs("--db", db, "index", str(scenes_folder))
    assert out.returncode == 0, out.stderr
    assert "8 files: 8 embedded" in out.stdout and "8 segmented" in out.stdout
    assert "segment: 100%" in out.stderr and "img/s" in out.stderr  # tqdm bars with rate and ETA

    out = irs("--db", db, "search", "a red car", "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert len(results) == 3
    for r in results:
        assert r["path"].startswith(str(scenes_folder)) and isinstance(r["score"], float)
        assert set(r["parts"]) == {"image", "segment", "fused"}
        seg = r["segment"]
        x0, y0, x1, y1 = seg["bbox"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert len(seg["centroid"]) == 2 and 0 < seg["area"] <= 1

    out = irs("--db", db, "search", "a red car", "-k", "2")
    assert out.stdout.startswith("  1. ") and "segment box=" in out.stdout

    irs("--db", db, "index", str(tmp_path / "bad"))
    out = irs("--db", db, "errors")
    assert out.stdout.startswith(f"{bad}\ttruncated or corrupt image")


def test_wrong_settings_for_a_database_exit_2_with_a_message(tmp_path, scenes_folder):
    db = str(tmp_path / "db")
    assert irs("--db", db, "index", str(scenes_folder), "--no-segments").returncode == 0
    out = irs("--db", db, "search", "x", IRS_MAX_SEGMENTS="3")
    assert out.returncode == 2
    assert "max_segments: database has 8, asked for 3" in out.stderr


def test_missing_folder(tmp_path):
    out = irs("--db", str(tmp_path / "db"), "index", str(tmp_path / "nope"))
    assert out.returncode == 2 and "not a folder" in out.stderr


def test_sample_writes_scenes(tmp_path):
    out = irs("sample", str(tmp_path / "s"), "--count", "3")
    assert out.returncode == 0 and len(list((tmp_path / "s").glob("*.png"))) == 3


def test_eval_on_a_jsonl_file(tmp_path, scenes_folder):
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        json.dumps({"query": "a red circle", "relevant": ["scene_00001.png"], "family": "colour"})
        + "\n"
        + json.dumps({"query": "a shape at the top", "relevant": ["scene_00002.png", "scene_00003.png"]})
        + "\n"
    )
    out = irs(
        "--db",
        str(tmp_path / "db"),
        "eval",
        str(queries),
        "--folder",
        str(scenes_folder),
        "--json",
        str(tmp_path / "m.json"),
    )
    assert out.returncode == 0, out.stderr
    assert "2 queries, mode whole_image" in out.stdout and "mode segments_positions" in out.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) == {"whole_image", "segments_positions"}
    assert set(metrics["segments_positions"]) == {"colour", "all"}
    assert metrics["segments_positions"]["all"]["n"] == 2.0
