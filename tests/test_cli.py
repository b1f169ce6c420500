"""End to end through `python -m irs`, as a user types it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env

from irs.synthetic import write_folder


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
    assert "segment: 8/8 images" in out.stderr and "/s, ETA" in out.stderr  # progress with rate and ETA

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

    out = irs("--db", db, "search", "a red car on the left", "-k", "2")
    lines = out.stdout.splitlines()
    assert lines[0] == "parsed: object: a red car · position: left"
    assert lines[1].startswith("  1. ") and "segment box=" in out.stdout
    assert f"  {scenes_folder}" not in out.stdout and "  scene_0000" in out.stdout  # relative to the folder

    coco = tmp_path / "found.coco.json"
    out = irs("--db", db, "search", "a red circle", "-k", "3", "--export", str(coco))
    assert out.returncode == 0 and f"exported 3 results to {coco}" in out.stderr
    exported = json.loads(coco.read_text())
    assert [i["file_name"] for i in exported["images"]] == [line.split()[2] for line in out.stdout.splitlines()[1:]]
    assert exported["categories"] == [{"id": 1, "name": "a red circle", "supercategory": "query"}]
    assert len(exported["annotations"]) == 3 and exported["images"][0]["width"] == 192

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


def readme_block(heading: str, language: str) -> str:
    """The first fenced `language` block under `heading` in the README."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_every_command_of_the_readmes_using_it_runs_as_written(tmp_path):
    """The README cannot drift from the CLI: each line of "Using it" runs in a shell, unchanged."""
    home = tmp_path / "home"
    write_folder(home / "Pictures", 5, seed=4, side=96)
    (home / "Pictures" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    write_folder(home / "flickr30k-images", 3, seed=5, side=96)
    karpathy = {
        "images": [
            {"filename": f"scene_0000{i}.png", "split": "test", "sentences": [{"raw": "a red circle"}]}
            for i in range(3)
        ]
    }
    (home / "dataset_flickr30k.json").write_text(json.dumps(karpathy))
    env = cli_env(HOME=str(home), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    lines = [line for line in readme_block("## Using it", "sh").splitlines() if line.strip()]
    assert len(lines) >= 7 and all(line.startswith("python -m irs ") for line in lines)
    outputs = {}
    for line in lines:
        out = subprocess.run(["bash", "-c", line], cwd=home, env=env, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, f"{line}\n{out.stderr}"
        assert "Traceback" not in out.stderr, line
        outputs[line.split("#")[0].strip()] = out
    by_command = {cmd.split()[3]: out for cmd, out in outputs.items()}
    assert "6 files: 5 embedded" in by_command["index"].stdout
    assert "broken.jpg" in by_command["errors"].stdout
    assert json.loads(by_command["stats"].stdout)["images"] >= 5
    json_search = next(out for cmd, out in outputs.items() if "--json" in cmd)
    assert len(json.loads(json_search.stdout)) >= 1
    assert "3 queries, mode whole_image" in by_command["eval"].stdout
    assert len(list((home / "scenes").glob("*.png"))) == 24

    # and the Python example below it
    python = readme_block("## Using it", "python")
    out = subprocess.run([sys.executable, "-c", python], cwd=home, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "scene_0000" in out.stdout


@pytest.fixture(scope="module")
def whole_image_db(tmp_path_factory, scenes_folder) -> str:
    """The scenes indexed without segments (read-only for the tests that share it)."""
    db = str(tmp_path_factory.mktemp("cli") / "db")
    assert irs("index", str(scenes_folder), "--db", db, "--no-segments", "--profile", "test").returncode == 0
    return db


def test_global_options_go_before_or_after_the_command(whole_image_db):
    db = whole_image_db
    before = irs("--db", db, "search", "a red circle", "-k", "2")
    after = irs("search", "a red circle", "-k", "2", "--db", db)
    assert before.returncode == after.returncode == 0 and before.stdout == after.stdout and before.stdout


def test_readers_never_create_a_database_and_say_so(tmp_path):
    missing = tmp_path / "nothing"
    for command in (["search", "a cat"], ["stats"], ["errors"], ["check"]):
        out = irs(*command, "--db", str(missing))
        assert out.returncode == 2 and f"no irs database at {missing}" in out.stderr, command
    assert not missing.exists()


def test_an_empty_query_is_refused(whole_image_db):
    db = whole_image_db
    for query in ("", "   ", "?!"):
        out = irs("search", query, "--db", db)
        assert out.returncode == 2 and "empty query" in out.stderr and not out.stdout


def test_progress_in_a_log_is_plain_lines(tmp_path, scenes_folder):
    out = irs("index", str(scenes_folder), "--db", str(tmp_path / "db"))
    assert out.returncode == 0
    assert "\r" not in out.stderr and "\x1b" not in out.stderr  # no bar redraws in a log file
    assert "embed: 8/8 images" in out.stderr and "segment: 8/8 images" in out.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(whole_image_db):
    """`irs stats | head`, with the reader gone before irs writes: no error message, exit 141 (SIGPIPE's)."""
    for command in (["stats"], ["search", "a red circle", "-k", "3"], ["errors", "--json"]):
        read, write = os.pipe()
        os.close(read)
        try:
            out = subprocess.run(
                [sys.executable, "-m", "irs", *command, "--db", whole_image_db],
                cwd=REPO,
                env=cli_env(),
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=240,
            )
        finally:
            os.close(write)
        assert out.returncode == 141 and out.stderr == "", (command, out.stderr)


def test_errors_says_when_there_are_none(whole_image_db):
    db = whole_image_db
    out = irs("errors", "--db", db)
    assert out.returncode == 0 and out.stdout == "no files failed\n"
    out = irs("errors", "--db", db, "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == [] and out.stderr == ""


def test_bad_settings_name_the_setting_and_never_show_a_traceback(tmp_path, scenes_folder):
    db = str(tmp_path / "db")
    cases = {
        "IRS_SEGMENT_BACKGROUND": ("pink", "setting 'segment_background': 'pink' is not one of grey, blur, keep"),
        "IRS_WEIGHT_IMAGE": ("-3", "setting 'weight_image': -3.0 is not allowed"),
        "IRS_DEVICE": ("gpu", "setting 'device': 'gpu' is not one of"),
    }
    for name, (value, message) in cases.items():
        out = irs("index", str(scenes_folder), "--db", db, **{name: value})
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, (name, out.stderr)
        assert f"IRS_{name[4:]}" in out.stderr


def test_progress_on_a_terminal_is_a_tqdm_bar(tmp_path, scenes_folder):
    import fcntl
    import pty
    import struct
    import termios

    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    proc = subprocess.Popen(
        [sys.executable, "-m", "irs", "index", str(scenes_folder), "--db", str(tmp_path / "db"), "--no-segments"],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=side,
    )
    os.close(side)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0
    os.close(main)
    assert b"\r" in seen and b"img/s" in seen and b"100%" in seen


def test_check_finds_a_lost_vector_store_and_repair_rebuilds_it(tmp_path, scenes_folder):
    import shutil

    db = tmp_path / "db"
    assert irs("index", str(scenes_folder), "--db", str(db), "--no-segments").returncode == 0
    shutil.rmtree(db / "chroma")
    out = irs("check", "--db", str(db))
    assert out.returncode == 1 and "8 image vectors missing" in out.stdout and "check --repair" in out.stderr
    searched = irs("search", "a red circle", "--db", str(db))
    assert "the vector store holds 0 image" in searched.stderr  # never a silent "no results"
    out = irs("check", "--repair", "--db", str(db))
    assert out.returncode == 0 and "repaired: 8 images re-embedded" in out.stdout, out.stderr
    out = irs("check", "--db", str(db))
    assert out.returncode == 0 and out.stdout.strip() == "SQLite and Chroma agree"


def test_search_by_image_ranks_that_image_first(whole_image_db, scenes_folder, tmp_path):
    query = scenes_folder / "scene_00004.png"
    out = irs("--db", whole_image_db, "search", "--image", str(query), "--json", "-k", "3")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert results[0]["path"] == str(query) and results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    out = irs("--db", whole_image_db, "search", "a blue square", "--image", str(query), "--image-weight", "0.5")
    assert out.returncode == 0 and "parsed: object: (image scene_00004.png) + a blue square" in out.stdout


def test_search_by_a_bad_image_or_by_nothing_exits_2_saying_why(whole_image_db, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = irs("--db", whole_image_db, "search", "--image", str(bad))
    assert out.returncode == 2 and out.stderr.startswith(f"irs: {bad}: ") and "Traceback" not in out.stderr
    out = irs("--db", whole_image_db, "search")
    assert out.returncode == 2 and "search needs a query, --image FILE, or both" in out.stderr


def test_search_exports_csv_and_json(whole_image_db, tmp_path):
    out = irs("--db", whole_image_db, "search", "a red circle", "-k", "4", "--export", str(tmp_path / "r.csv"))
    assert out.returncode == 0, out.stderr
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[0] == "rank,path,sha256,score,image,segment,fused,box_x0,box_y0,box_x1,box_y1" and len(rows) == 5
    out = irs(
        "--db", whole_image_db, "search", "a red circle", "-k", "4", "--export", str(tmp_path / "r.json"), "--json"
    )
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(out.stdout)
    out = irs("--db", whole_image_db, "search", "a red circle", "--export", str(tmp_path / "r.txt"))
    assert out.returncode == 2 and "cannot tell the export format" in out.stderr and not out.stdout


def test_profile_help_lists_every_profile():
    out = irs("search", "--help")
    assert "default, test, demo" in " ".join(out.stdout.split())


def test_eval_counts_same_named_files_by_relative_path_and_says_which_names_it_cannot(tmp_path):
    for folder, seed in (("trip", 1), ("home", 2)):
        write_folder(tmp_path / "photos" / folder, 2, seed=seed, side=64)  # scene_00000.png in both
    db = str(tmp_path / "db")
    assert irs("--db", db, "index", str(tmp_path / "photos"), "--no-segments").returncode == 0
    queries = tmp_path / "q.jsonl"
    lines = [
        {"query": "a red circle", "relevant": ["trip/scene_00000.png"]},
        {"query": "a blue square", "relevant": ["scene_00001.png"]},
    ]
    queries.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = irs("--db", db, "eval", str(queries), "--modes", "whole_image", "--json", str(tmp_path / "m.json"))
    assert out.returncode == 0, out.stderr
    assert "1 relevant names match several indexed images and were not counted" in out.stderr
    assert "scene_00001.png" in out.stderr and "1 queries left with nothing relevant were skipped" in out.stderr
    assert "1 queries, mode whole_image" in out.stdout
