"""A folder of awkward files, built in code: what a real photo folder can hold."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(image: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **kw)
    return buf.getvalue()


def png_bytes(image: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    return buf.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def exif_rotated() -> bytes:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    return jpeg_bytes(image, exif=exif.tobytes(), quality=95)


def palette_with_transparency() -> bytes:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    pal.putpixel((0, 0), 1)
    return png_bytes(pal, transparency=0)


def sixteen_bit_png() -> bytes:
    values = np.full((16, 16), 32768, dtype=np.uint16)
    values[:, :8] = 65535
    return png_bytes(Image.fromarray(values))


# file name -> the start of the reason it must be refused with (None: it must index)
EXPECTED: dict[str, str | None] = {
    "truncated.jpg": "truncated or corrupt",
    "zero.jpg": "empty file",
    "text.jpg": "not an image",
    "huge-header.png": "over the pixel cap",
    "dangling.jpg": "cannot read file",
    "cmyk.jpg": None,
    "sixteen-bit.png": None,
    "palette-alpha.png": None,
    "exif-rotated.jpg": None,
}


def make_bad_input_folder(folder: Path) -> Path:
    """Write every file of EXPECTED into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    full = jpeg_bytes(noise(128, 128))
    files = {
        "truncated.jpg": full[: len(full) // 2],
        "zero.jpg": b"",
        "text.jpg": b"this is a text file, not a picture\n",
        "huge-header.png": huge_png_header(100_000, 100_000),
        "cmyk.jpg": jpeg_bytes(Image.new("CMYK", (32, 32), (0, 255, 255, 0))),
        "sixteen-bit.png": sixteen_bit_png(),
        "palette-alpha.png": palette_with_transparency(),
        "exif-rotated.jpg": exif_rotated(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    return folder
