"""Fuzzed image files: each one decodes to RGB or is refused with LoadError, never anything else."""

import io
import json
import os
import re
import struct
import subprocess
from pathlib import Path

import conftest
import numpy as np
import pytest
from fuzzcorpus import corpus, make_corpus, png_chunk, png_insert_before_idat, save, seed_files, tiff_set
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, PngImagePlugin

from irs.load import LoadError, decode_image
from irs.settings import Settings

CAP = Settings().max_pixels
SIDE = Settings().work_max_side
REASONS = (
    "truncated or corrupt image header",
    "truncated or corrupt image data",
    "not an image",
    "over the pixel cap",
    "unsupported image layout",
    "image metadata too large",
    "out of memory while decoding",
)
SEEDS = seed_files()


def outcome(data: bytes, name: str = "") -> str:
    """'decoded', or the LoadError reason; anything else raised fails the test, naming the file."""
    try:
        image = decode_image(data, CAP, SIDE, name)
    except LoadError as err:
        assert str(err).startswith(REASONS), (name, str(err))
        return str(err)
    except Exception as err:  # the finding: an exception that escaped the boundary
        pytest.fail(f"{name}: {type(err).__name__} escaped decode_image: {err}")
    pixels = image.pixels
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8, (name, pixels.shape)
    assert min(pixels.shape[:2]) >= 1 and max(pixels.shape[:2]) <= SIDE, (name, pixels.shape)
    return "decoded"


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory: pytest.TempPathFactory) -> list:
    return make_corpus(tmp_path_factory.mktemp("fuzz"), 520, seed=0)


@pytest.mark.timeout(240)
def test_every_fuzzed_file_decodes_or_is_refused_with_load_error(fuzz_files):
    results = {path.name: outcome(path.read_bytes(), path.name) for path in fuzz_files}
    refused = [r for r in results.values() if r != "decoded"]
    assert len(results) == 520
    assert 100 < len(refused) < 500  # the mutations reach past the header checks, and many still decode
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # irs never changes PIL's global setting


def test_every_seed_decodes():
    for name, (_, data) in SEEDS.items():
        assert outcome(data, name) == "decoded"


def test_the_corpus_is_deterministic_small_and_named_for_irs():
    first, again = corpus(200, seed=7), corpus(200, seed=7)
    assert first == again
    assert corpus(200, seed=8) != first
    names = [name for name, _ in first]
    assert len(set(names)) == len(names) and len({data for _, data in first}) == len(first)
    assert all(name.rsplit(".", 1)[1] in ("jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff") for name in names)
    assert max(len(data) for _, data in first) < 200_000
    assert sum(len(data) for _, data in corpus(500, seed=0)) < 5_000_000


# --- the failures users saw -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt", b"iCCP"])
def test_png_text_that_inflates_past_max_text_chunk_is_metadata_too_large(kind):
    payload = zlib_bomb()
    body = {b"zTXt": b"k\0\0", b"iTXt": b"k\0\x01\0en\0\0", b"iCCP": b"p\0\0"}[kind] + payload
    data = png_insert_before_idat(SEEDS["png-rgb"][1], png_chunk(kind, body))
    with pytest.raises(LoadError, match="image metadata too large"):
        decode_image(data, CAP, SIDE)


def zlib_bomb() -> bytes:
    import zlib

    return zlib.compress(b"\0" * 2 * PngImagePlugin.MAX_TEXT_CHUNK, 9)


@pytest.mark.parametrize("samples", [0, 6, 65535, 303_169_682])
def test_tiff_with_absurd_samples_per_pixel_is_an_unsupported_layout(samples):
    with pytest.raises(LoadError, match="unsupported image layout|truncated or corrupt image header"):
        decode_image(tiff_set(SEEDS["tiff-rgb"][1], 277, samples), CAP, SIDE)


def test_more_samples_per_pixel_than_pil_decodes_says_so():
    with pytest.raises(LoadError, match="unsupported image layout: Invalid value for samples per pixel"):
        decode_image(tiff_set(SEEDS["tiff-rgb"][1], 277, 303_169_682), CAP, SIDE)


@pytest.mark.parametrize("size", [(0, 48), (64, 0), (0, 0)])
def test_zero_width_or_height_is_refused_before_decoding(size):
    data = SEEDS["png-rgb"][1]
    ihdr = data[16:29]
    bad = data[:8] + png_chunk(b"IHDR", struct.pack(">II", *size) + ihdr[8:]) + data[33:]
    with pytest.raises(LoadError, match="truncated or corrupt image header: .*size"):
        decode_image(bad, CAP, SIDE)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        SyntaxError("bad"),
        struct.error("unpack requires a buffer of 4 bytes"),
        OSError("broken data stream"),
        MemoryError(),
        ZeroDivisionError("division by zero"),
        IndexError("list index out of range"),
        TypeError("bad"),
        EOFError(),
        KeyError(12),
        RuntimeError("anything"),
        NotImplementedError("no"),
        Image.DecompressionBombError("too big"),
    ],
)
def test_any_exception_inside_the_decoder_becomes_a_load_error(monkeypatch, error):
    def broken_load(self: Image.Image) -> None:
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    with pytest.raises(LoadError) as caught:
        decode_image(SEEDS["png-rgb"][1], CAP, SIDE)
    assert str(caught.value).startswith(REASONS), str(caught.value)


def test_a_broken_exif_block_does_not_cost_the_picture(monkeypatch):
    def broken_exif(self: Image.Image) -> None:
        raise struct.error("unpack requires a buffer of 2 bytes")

    monkeypatch.setattr(Image.Image, "getexif", broken_exif)
    assert decode_image(SEEDS["jpeg-exif6"][1], CAP, SIDE).pixels.shape == (48, 64, 3)  # as stored, not turned


def test_a_file_of_another_pil_format_is_not_an_image():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(LoadError, match="not an image"):
        decode_image(eps, CAP, SIDE)  # never handed to Ghostscript


# --- multi-frame files give their first frame -----------------------------------------------------

COLOURS = [(220, 20, 20), (20, 220, 20), (20, 20, 220)]


def solid_frames() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), colour) for colour in COLOURS]


@pytest.mark.parametrize(
    "fmt,kw",
    [
        ("GIF", {"duration": 50}),
        ("PNG", {"duration": 50}),
        ("TIFF", {}),
        ("WEBP", {"lossless": True}),
        ("MPO", {}),
    ],
)
def test_multi_frame_files_give_their_first_frame(fmt, kw):
    frames = solid_frames()
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    image = decode_image(data, CAP, SIDE)
    assert image.pixels.shape == (30, 40, 3)
    assert np.abs(image.pixels[15, 20].astype(int) - COLOURS[0]).max() < 30


# --- properties -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=2048))
def test_any_bytes_decode_or_raise_load_error(data):
    outcome(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    keep=st.floats(0.05, 1.0),
)
def test_edited_seed_files_decode_or_raise_load_error(seed, edits, keep):
    data = bytearray(SEEDS[seed][1])
    for where, value in edits:
        data[int(where * len(data))] = value
    outcome(bytes(data[: max(1, int(keep * len(data)))]), seed)


# --- the whole pipeline, as a user runs it ----------------------------------------------------------

# Segmentation is the slow stage on a CPU: two SAM prompts a side and two segments an image keep a
# 500-file folder within the test's budget (the segments are still made, embedded and stored).
CHEAP_SEGMENTS = {"IRS_POINTS_PER_SIDE": "2", "IRS_MAX_SEGMENTS": "2"}
SUMMARY = re.compile(
    r"^(\d+) files: (\d+) embedded, (\d+) reused, (\d+) unchanged, (\d+) removed, (\d+) segmented, (\d+) failed",
    re.MULTILINE,
)


def run_irs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m irs ARGS` with cheap segments (see conftest.run_irs)."""
    return conftest.run_irs(*args, timeout=timeout, **CHEAP_SEGMENTS)


def add_odd_files(folder: Path, picture: bytes, garbage: bytes) -> dict[str, set[str]]:
    """Files nobody makes on purpose, next to the corpus: path -> what must become of it.

    Returns {"indexed": paths, "failed": paths, "neither": paths} (paths as str, like the catalog's)."""
    at = str(folder) + os.sep
    os.mkfifo(folder / "x.jpg")  # opening it would block forever
    (folder / "dir.jpg").mkdir()  # a folder with an image's name: walked into, not read
    (folder / "dir.jpg" / "inside.png").write_bytes(picture)
    os.symlink("loop-b.jpg", folder / "loop-a.jpg")  # a link loop between two names
    os.symlink("loop-a.jpg", folder / "loop-b.jpg")
    os.symlink(".", folder / "here")  # a folder link back to itself: not entered twice
    os.symlink("nothing-here.jpg", folder / "dangling.jpg")
    (folder / "zero.jpg").write_bytes(b"")
    long_name = "l" * 246 + ".png"  # 250 bytes: near NAME_MAX
    (folder / long_name).write_bytes(picture + b"\0")  # other bytes than the seed: embedded on its own
    (folder / "new\nline.png").write_bytes(picture + b"\0\0")
    (folder / "bad\nline.png").write_bytes(garbage)
    (folder / "tab\tin name.jpg").write_bytes(garbage)
    return {
        "indexed": {at + "dir.jpg/inside.png", at + long_name, at + "new\nline.png"},
        "failed": {at + name for name in ("x.jpg", "loop-a.jpg", "loop-b.jpg", "dangling.jpg", "zero.jpg")}
        | {at + "bad\nline.png", at + "tab\tin name.jpg"},
        "neither": {at + "dir.jpg", at + "here"},
    }


def catalog(db: Path) -> tuple[set[str], list, dict]:
    """What the database holds, read through the library: file paths, errors (in `irs errors` order), stats."""
    from irs.index import Index
    from irs.settings import load_settings

    with Index(load_settings({"db": str(db)}, environ={}), create=False) as index:
        return set(index.catalog.known_files()), index.errors(), index.stats()


@pytest.mark.timeout(300)
def test_indexing_a_fuzzed_folder_through_the_cli_accounts_for_every_file(tmp_path):
    folder, db = (tmp_path / "photos").resolve(), tmp_path / "db"
    corpus_paths = {str(p) for p in make_corpus(folder, 520, seed=3)}
    odd = add_odd_files(folder, SEEDS["png-rgb"][1], b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    every_file = corpus_paths | odd["indexed"] | odd["failed"]

    out = run_irs("index", str(folder), "--db", str(db), timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "unexpected error" not in out.stderr, out.stderr[-3000:]

    files, errors, stats = catalog(db)
    failed = {bad.path: bad.reason for bad in errors}
    assert len(failed) == len(errors)
    assert not files & set(failed), "both indexed and listed as failed"
    assert not every_file - files - set(failed), "neither indexed nor listed"
    assert files | set(failed) == every_file, "something indexed or listed that is not a file of the folder"
    assert all(reason.strip() for reason in failed.values())
    assert odd["indexed"] <= files and odd["failed"] <= set(failed) and not odd["neither"] & (files | set(failed))
    assert {p for p in corpus_paths if "__orig." in p} <= files  # every unmutated seed is indexed
    assert failed[str(folder / "x.jpg")] == "not a regular file (FIFO)"
    assert failed[str(folder / "zero.jpg")] == "empty file (0 bytes)"
    assert failed[str(folder / "dangling.jpg")].startswith("cannot read file")
    assert 100 < len(files) and 100 < len(failed)  # the corpus reaches both outcomes

    found, embedded, reused, unchanged, removed, segmented, n_failed = map(int, SUMMARY.search(out.stdout).groups())
    assert (unchanged, removed) == (0, 0)
    assert n_failed == len(failed) and embedded + reused == len(files)
    assert embedded + reused + n_failed == len(every_file)  # each file counted once
    assert found == len(every_file)  # the special files refused while walking count too
    assert segmented == stats.images == stats.embedded == stats.segmented
    assert stats.files == len(files) and stats.errors == len(failed)
    assert stats.image_vectors == stats.images and stats.segment_vectors == stats.segments > 0

    listed = run_irs("errors", "--db", str(db), "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    assert json.loads(listed.stdout) == [{"path": bad.path, "reason": bad.reason} for bad in errors]
    lines = run_irs("errors", "--db", str(db)).stdout.splitlines()
    assert len(lines) == len(errors) and all(line.count("\t") >= 1 for line in lines)  # one line per file
    assert "More samples per pixel" not in out.stderr  # PIL's own log lines, which name no file, are silenced

    check = run_irs("check", "--db", str(db))
    assert check.returncode == 0 and "agree" in check.stdout, check.stdout + check.stderr


@pytest.mark.timeout(180)
def test_a_file_name_that_is_not_utf8_is_that_files_problem_only(tmp_path):
    folder, db = (tmp_path / "photos").resolve(), tmp_path / "db"
    folder.mkdir()
    for name in ("png-rgb", "jpeg-rgb", "gif-anim"):
        ext, data = SEEDS[name]
        (folder / f"{name}{ext}").write_bytes(data)
    with open(os.fsencode(folder) + b"/caf\xe9.jpg", "wb") as handle:  # Latin-1 "café.jpg"
        handle.write(SEEDS["png-palette"][1])

    out = run_irs("index", str(folder), "--db", str(db), timeout=150)
    assert out.returncode == 0, out.stderr[-2000:]
    files, errors, _ = catalog(db)
    assert {str(folder / n) for n in ("png-rgb.png", "jpeg-rgb.jpg", "gif-anim.gif")} <= files
    odd = [p for p in files | {bad.path for bad in errors} if os.path.basename(p).startswith("caf")]
    assert len(odd) == 1  # indexed, or listed with a reason: either way accounted for, once
    assert {bad.reason for bad in errors if os.path.basename(bad.path).startswith("caf")} == {
        "file name is not valid UTF-8: rename the file (or its folder) to index it"
    }
    assert run_irs("check", "--db", str(db)).returncode == 0
