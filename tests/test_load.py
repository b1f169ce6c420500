"""Discover and load: every awkward file a real photo folder holds, built inside the test."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from badinput import (
    EXPECTED,
    exif_rotated,
    huge_png_header,
    jpeg_bytes,
    make_bad_input_folder,
    noise,
    palette_with_transparency,
    png_bytes,
    sixteen_bit_png,
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from irs.load import LoadError, check_image_path, decode_image, discover, load_image, read_file, relative_path
from irs.records import BadFile

CAP = 50_000_000


def test_plain_rgb_jpeg():
    img = decode_image(jpeg_bytes(Image.new("RGB", (64, 48), (200, 10, 10))), CAP, 1024)
    assert img.pixels.shape == (48, 64, 3) and img.pixels.dtype == np.uint8
    assert (img.width, img.height) == (64, 48)
    assert img.pixels[24, 32, 0] > 150


def test_zero_bytes():
    with pytest.raises(LoadError, match="empty file"):
        decode_image(b"", CAP, 1024)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(LoadError, match="not an image"):
        load_image(str(path), CAP, 1024)


def test_truncated_jpeg():
    data = jpeg_bytes(noise(128, 128))
    with pytest.raises(LoadError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], CAP, 1024)


def test_png_header_claiming_100000_square_is_refused_before_decoding():
    with pytest.raises(LoadError, match="over the pixel cap"):
        decode_image(huge_png_header(100_000, 100_000), CAP, 1024)


def test_pixel_cap_is_a_setting():
    data = png_bytes(Image.new("RGB", (100, 100)))
    with pytest.raises(LoadError, match="100x100 = 10,000 pixels > max_pixels 9,999"):
        decode_image(data, 9_999, 1024)
    assert decode_image(data, 10_000, 1024).width == 100


def test_cmyk_jpeg_becomes_rgb():
    img = decode_image(jpeg_bytes(Image.new("CMYK", (32, 32), (0, 255, 255, 0))), CAP, 1024)
    r, g, b = img.pixels[16, 16]
    assert img.pixels.shape == (32, 32, 3) and r > 200 and g < 60 and b < 60  # cyan-free, magenta+yellow: red


def test_16_bit_png_is_scaled_not_clipped():
    data = sixteen_bit_png()
    img = decode_image(data, CAP, 1024)
    assert img.pixels[0, 0, 0] == 255
    assert 120 <= img.pixels[0, 12, 0] <= 135  # half range stays half, not clipped to 255


def test_palette_with_transparency_is_composited_on_white():
    data = palette_with_transparency()
    img = decode_image(data, CAP, 1024)
    assert tuple(img.pixels[4, 4]) == (255, 255, 255)  # transparent index -> white
    assert tuple(img.pixels[0, 0]) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["L", "LA", "1", "RGBA", "I", "F"])
def test_other_modes_become_rgb(mode):
    image = Image.new(mode, (10, 6))
    img = decode_image(_tiff(image) if mode in ("I", "F") else png_bytes(image), CAP, 1024)
    assert img.pixels.shape == (6, 10, 3)


def _tiff(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "TIFF")
    return buf.getvalue()


def test_exif_orientation_is_applied():
    img = decode_image(exif_rotated(), CAP, 1024)
    assert img.pixels.shape == (40, 20, 3)  # portrait after rotation
    assert (img.width, img.height) == (20, 40)
    assert img.pixels[5, 10].mean() > 200 and img.pixels[35, 10].mean() < 50  # the white half is now on top


def test_large_image_is_decoded_down_to_working_size():
    data = jpeg_bytes(Image.new("RGB", (2000, 1000), (0, 90, 0)))
    img = decode_image(data, CAP, 256)
    assert max(img.pixels.shape[:2]) == 256
    assert (img.width, img.height) == (2000, 1000)  # the original size is remembered


def test_identity_is_the_sha256_of_the_bytes():
    data = png_bytes(Image.new("RGB", (4, 4)))
    import hashlib

    assert decode_image(data, CAP, 64).sha256 == hashlib.sha256(data).hexdigest()


def test_discover_walks_recursively_skips_hidden_and_survives_link_loops(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for rel in ["one.jpg", "a/two.PNG", "a/b/three.webp", ".secret.jpg", ".hidden/four.jpg", "a/readme.txt"]:
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    entries, problems = discover(tmp_path, (".jpg", ".png", ".webp"))
    names = sorted(e.path.removeprefix(str(tmp_path) + "/") for e in entries)
    assert names == ["a/b/three.webp", "a/two.PNG", "one.jpg"]
    assert [p.path for p in problems] == [str(tmp_path / "dangling.jpg")]
    assert "cannot read file" in problems[0].reason


def test_discover_rejects_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        discover(tmp_path / "missing", (".jpg",))


def test_bad_input_folder_flags_each_bad_file_with_its_reason_and_indexes_the_rest(index, tmp_path):
    folder = make_bad_input_folder(tmp_path / "bad-input")
    report = index.add_folder(folder, segment=False)
    reasons = {b.path.rsplit("/", 1)[1]: b.reason for b in index.errors()}
    flagged = {name for name, why in EXPECTED.items() if why}
    assert set(reasons) == flagged
    for name in flagged:
        assert reasons[name].startswith(EXPECTED[name]), (name, reasons[name])
    assert report.added == len(EXPECTED) - len(flagged)
    assert index.stats().files == len(EXPECTED) - len(flagged)


# --- only regular files are read, and never by blocking -------------------------------------------


def _within_a_second(call):
    """Run `call` in a thread; its outcome, failing the test if it is still blocked after a second."""
    import threading

    result: dict = {}

    def run():
        try:
            result["value"] = call()
        except Exception as err:  # what the test asserts on
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(1.0)
    assert not thread.is_alive(), "blocked for more than a second"
    return result


@pytest.mark.timeout(10)
def test_read_file_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    try:
        result = _within_a_second(lambda: read_file(str(fifo)))
    finally:
        _unblock(fifo)
    assert isinstance(result.get("error"), LoadError)
    assert str(result["error"]) == "not a regular file (FIFO)"


def _unblock(fifo):
    """Open the FIFO for writing (without blocking), so a reader stuck on it would return."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waiting: nothing to release


@pytest.mark.timeout(10)
def test_load_image_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    try:
        result = _within_a_second(lambda: load_image(str(fifo), CAP, 1024))
    finally:
        _unblock(fifo)
    assert str(result["error"]) == "not a regular file (FIFO)"


def test_read_file_refuses_devices_sockets_and_folders(tmp_path):
    import socket

    with pytest.raises(LoadError, match=r"^not a regular file \(character device\)$"):
        read_file("/dev/null")
    with pytest.raises(LoadError, match=r"^not a regular file \(folder\)$"):
        read_file(str(tmp_path))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s.jpg"))
        with pytest.raises(LoadError, match=r"^not a regular file \(socket\)$"):
            read_file(str(tmp_path / "s.jpg"))
    finally:
        sock.close()


def test_read_file_reads_a_regular_file_and_reports_errors(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"0123456789")
    assert read_file(str(path)) == b"0123456789"
    assert read_file(str(path), max_bytes=10) == b"0123456789"
    with pytest.raises(LoadError, match="file too large: 10 bytes > 9"):
        read_file(str(path), max_bytes=9)
    with pytest.raises(LoadError, match="^cannot read file: No such file or directory$"):
        read_file(str(tmp_path / "missing.jpg"))
    (tmp_path / "link.jpg").symlink_to(path)
    assert read_file(str(tmp_path / "link.jpg")) == b"0123456789"  # a link to a regular file is fine


@pytest.mark.timeout(10)
def test_discover_reports_a_fifo_named_like_an_image_and_never_opens_it(tmp_path):
    (tmp_path / "ok.jpg").write_bytes(b"x")
    os.mkfifo(tmp_path / "x.jpg")
    os.mkfifo(tmp_path / "notes.txt")  # not an image name: not looked at
    result = _within_a_second(lambda: discover(tmp_path, (".jpg",)))
    entries, problems = result["value"]
    assert [e.path for e in entries] == [str(tmp_path / "ok.jpg")]
    assert problems == [BadFile(str(tmp_path / "x.jpg"), "not a regular file (FIFO)")]


# --- allowed roots: a link cannot lead out of them ----------------------------------------------------


@pytest.fixture
def linked_tree(tmp_path):
    """allowed/ holds a picture, links out to secret/, and links that stay inside."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "sub").mkdir(parents=True)
    (secret / "deep").mkdir(parents=True)
    for rel in ["allowed/a.jpg", "allowed/sub/b.jpg", "secret/s.jpg", "secret/deep/t.jpg"]:
        (tmp_path / rel).write_bytes(b"x")
    (allowed / "out.jpg").symlink_to(secret / "s.jpg")
    (allowed / "outdir").symlink_to(secret, target_is_directory=True)
    (allowed / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)
    (allowed / "in.jpg").symlink_to(allowed / "sub" / "b.jpg")
    (allowed / "indir").symlink_to(allowed / "sub", target_is_directory=True)
    return tmp_path


def test_discover_does_not_follow_links_out_of_the_allowed_roots(linked_tree):
    allowed = linked_tree / "allowed"
    entries, problems = discover(allowed, (".jpg",), allowed_roots=(str(allowed),))
    found = sorted(e.path.removeprefix(str(allowed) + "/") for e in entries)
    # paths as found, not resolved; sub/ was already walked as indir/ (one visit per folder)
    assert found == ["a.jpg", "in.jpg", "indir/b.jpg"]
    assert sorted(problems, key=lambda p: p.path) == [
        BadFile(str(allowed / "indir" / "up"), f"outside the allowed folders: link to {linked_tree}"),
        BadFile(str(allowed / "out.jpg"), f"outside the allowed folders: link to {linked_tree / 'secret' / 's.jpg'}"),
        BadFile(str(allowed / "outdir"), f"outside the allowed folders: link to {linked_tree / 'secret'}"),
    ]


def test_without_allowed_roots_links_are_followed_as_before(linked_tree):
    allowed = linked_tree / "allowed"
    entries, problems = discover(allowed, (".jpg",))
    assert {Path(e.path).name for e in entries} == {"a.jpg", "in.jpg", "b.jpg", "out.jpg", "s.jpg", "t.jpg"}
    assert problems == []


def test_allowed_roots_are_compared_resolved(linked_tree):
    alias = linked_tree / "alias"
    alias.symlink_to(linked_tree / "allowed", target_is_directory=True)
    entries, problems = discover(alias, (".jpg",), allowed_roots=(str(alias),))
    assert str(alias / "a.jpg") in {e.path for e in entries}
    assert len(problems) == 3  # out.jpg, outdir, sub/up: still outside


def test_a_walk_started_outside_the_allowed_roots_finds_nothing(linked_tree):
    secret = linked_tree / "secret"
    entries, problems = discover(secret, (".jpg",), allowed_roots=(str(linked_tree / "allowed"),))
    assert entries == []
    assert [p.path for p in problems] == [str(secret)]
    assert problems[0].reason.startswith("outside the allowed folders")


NAME = st.text("abcXYZ019-_. é", min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))


@given(st.lists(NAME, min_size=1, max_size=4), st.lists(NAME, min_size=1, max_size=3), st.lists(NAME, max_size=3))
def test_a_path_is_shown_relative_to_the_innermost_indexed_folder(outer, inner, rest):
    root = "/data/" + "/".join(outer)
    nested = root + "/" + "/".join(inner)
    path = nested + "/" + "/".join([*rest, "IMG_0001.JPG"])
    shown = relative_path(path, [root, nested])
    assert shown == "/".join([*rest, "IMG_0001.JPG"])  # the innermost folder wins, whatever the order
    assert relative_path(path, [nested, root]) == shown
    assert relative_path(path, [root]) == "/".join([*inner, *rest, "IMG_0001.JPG"])
    assert relative_path(path, []) == path and relative_path(path, [root + "x"]) == path  # not a mere prefix


def test_a_query_image_path_is_checked_before_it_is_read(tmp_path):
    picture = tmp_path / "allowed" / "a.png"
    picture.parent.mkdir()
    Image.new("RGB", (8, 8)).save(picture)
    assert check_image_path(str(picture)) is None
    assert check_image_path(str(picture), (str(tmp_path / "allowed"),)) is None
    assert check_image_path(str(tmp_path / "nope.png")) == f"{tmp_path / 'nope.png'}: no such file"
    assert check_image_path(str(tmp_path)) == f"{tmp_path}: not a file"
    assert "outside the allowed folders" in check_image_path(str(picture), (str(tmp_path / "other"),))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "link.png").symlink_to(picture)  # a link out of the allowed folder is followed
    assert "outside the allowed folders" in check_image_path(
        str(tmp_path / "other" / "link.png"), (str(tmp_path / "other"),)
    )
    assert check_image_path("  ") == "type an image file's path"
