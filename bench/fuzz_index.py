"""A fuzz campaign of `python -m irs index` as a user runs it: make a folder, account for every file after.

    python bench/fuzz_index.py make FOLDER --count 3000 --seed 2026   # mutated images + odd files
    python -m irs index FOLDER --db DB                                # (time it: /usr/bin/time -f "%e s %M KB")
    python bench/fuzz_index.py account FOLDER --db DB                 # indexed / failed by reason / missing
    python bench/fuzz_index.py kill --after 120 -- python -m irs index FOLDER --db DB   # SIGKILL mid-run
    python bench/fuzz_index.py compare DB_A DB_B                      # same files, errors, segments?

`make` writes tests/fuzzcorpus.py's corpus plus the files nobody makes on purpose (a FIFO named x.jpg, a
folder named dir.jpg, link loops, a dangling link, an empty file, a 250-byte name, names with a newline
and a tab; with --non-utf8 also a Latin-1 name). `account` walks the folder itself and checks that every
image-named file is either in the catalog's files or in its errors with a reason, never both, never
neither; it exits 1 when one is not. Settings come from the database's irs.toml (IRS_* still apply).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from irs.index import Index

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def make(folder: Path, count: int, seed: int, non_utf8: bool) -> None:
    from fuzzcorpus import make_corpus, seed_files

    paths = make_corpus(folder, count, seed)
    picture = seed_files()["png-rgb"][1]
    os.mkfifo(folder / "x.jpg")
    (folder / "dir.jpg").mkdir()
    (folder / "dir.jpg" / "inside.png").write_bytes(picture)
    os.symlink("loop-b.jpg", folder / "loop-a.jpg")
    os.symlink("loop-a.jpg", folder / "loop-b.jpg")
    os.symlink(".", folder / "here")
    os.symlink("nothing-here.jpg", folder / "dangling.jpg")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / ("l" * 246 + ".png")).write_bytes(picture + b"\0")
    (folder / "new\nline.png").write_bytes(picture + b"\0\0")
    (folder / "bad\nline.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (folder / "tab\tin name.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 40)
    if non_utf8:
        with open(os.fsencode(folder) + b"/caf\xe9.jpg", "wb") as handle:
            handle.write(picture + b"\0\0\0")
    print(f"{len(paths)} corpus files and 10 odd files (plus a folder dir.jpg and a folder link) in {folder}")


def image_files(folder: Path) -> set[str]:
    """Every non-folder entry with an image suffix under `folder` (links not followed, hidden skipped),
    as the indexer names it."""
    root = str(folder.expanduser().resolve())
    out = set()
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(here, d))]
        out |= {os.path.join(here, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)}
    return out


def open_index(db: str) -> Index:
    from irs.index import Index
    from irs.settings import load_settings

    return Index(load_settings({"db": db}), create=False)


def fingerprint(db: str) -> dict:
    """What a database holds, comparable between two runs: path -> sha, path -> reason, sha -> segments."""
    with open_index(db) as index:
        files = {p: f.sha256 for p, f in index.catalog.known_files().items()}
        errors = {bad.path: bad.reason for bad in index.errors()}
        segments = {sha: n for sha, n in index.catalog.segment_count(set(files.values())).items() if n}
        stats = index.stats()
        check = index.check()
    return {"files": files, "errors": errors, "segments": segments, "stats": stats.to_json(), "check": str(check)}


def account(folder: Path, db: str, as_json: Path | None) -> int:
    on_disk = image_files(folder)
    fp = fingerprint(db)
    files, errors = set(fp["files"]), fp["errors"]
    both = files & set(errors)
    neither = on_disk - files - set(errors)
    extra = (files | set(errors)) - on_disk
    blank = [p for p, r in errors.items() if not r.strip()]
    reasons = Counter(r.split(":")[0] for r in errors.values())
    s = fp["stats"]
    print(f"files on disk {len(on_disk)}, indexed {len(files)}, failed {len(errors)}")
    print(f"images {s['images']} (embedded {s['embedded']}, segmented {s['segmented']}), segments {s['segments']}")
    print(f"vectors: {s['image_vectors']} image, {s['segment_vectors']} segment; check: {fp['check']}")
    print("failed by reason:")
    for why, n in reasons.most_common():
        print(f"  {n:5d}  {why}")
    for label, paths in (("both indexed and failed", both), ("neither", neither), ("not on disk", extra)):
        print(f"{label}: {len(paths)}" + "".join(f"\n  {p!r}" for p in sorted(paths)[:20]))
    print(f"blank reasons: {len(blank)}")
    if as_json:
        as_json.write_text(json.dumps({"reasons": dict(reasons), **fp}, indent=1, default=str))
    return 1 if both or neither or extra or blank else 0


def compare(a: str, b: str) -> int:
    fa, fb = fingerprint(a), fingerprint(b)
    bad = 0
    for key in ("files", "errors", "segments"):
        same = fa[key] == fb[key]
        bad += not same
        print(f"{key}: {'same' if same else 'DIFFERENT'} ({len(fa[key])} vs {len(fb[key])})")
        if not same:
            for k in sorted(set(fa[key]) ^ set(fb[key]))[:10]:
                print(f"  only in one: {k!r}")
            for k in sorted(k for k in set(fa[key]) & set(fb[key]) if fa[key][k] != fb[key][k])[:10]:
                print(f"  differs: {k!r}: {fa[key][k]!r} vs {fb[key][k]!r}")
    print(f"check: {fa['check']} / {fb['check']}")
    return 1 if bad else 0


def kill(after: float, command: list[str], log: Path | None) -> int:
    """Run `command`, SIGKILL it (and its process group) after `after` seconds."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=after)
        print(f"finished before the kill, exit {proc.returncode}")
        return 1
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"killed with SIGKILL after {after:g} s")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make")
    p.add_argument("folder", type=Path)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--non-utf8", action="store_true", help="also a file whose name is not UTF-8")
    p = sub.add_parser("account")
    p.add_argument("folder", type=Path)
    p.add_argument("--db", required=True)
    p.add_argument("--json", type=Path)
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p = sub.add_parser("kill")
    p.add_argument("--after", type=float, required=True)
    p.add_argument("--log", type=Path)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command == "make":
        make(args.folder, args.count, args.seed, args.non_utf8)
        return 0
    if args.command == "account":
        return account(args.folder, args.db, args.json)
    if args.command == "compare":
        return compare(args.a, args.b)
    started = time.monotonic()
    code = kill(args.after, args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd, args.log)
    print(f"{time.monotonic() - started:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
