"""A deterministic corpus of broken image files, built in code: valid seeds of every format irs reads, then mutated.

    python tests/fuzzcorpus.py OUT --count 500 --seed 0

writes `count` files into OUT, named `<seed file>__<mutation>.<ext>` (for example
`png-palette__trunc-0137.png`), the extension matching the format so that irs discovers them.
The first files are the unmutated seeds (`__orig`), which must decode. The same count and seed
always give the same bytes.
"""

from __future__ import annotations

import argparse
import io
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

Mutation = Callable[[bytes, random.Random], tuple[str, bytes]]

# Values that break size arithmetic: zero, one, the edges of 16/31/32-bit fields, and "large but
# plausible" sizes that pass a signature check and then ask for a big allocation.
ODD_SIZES = (0, 1, 2, 255, 256, 9000, 32767, 32768, 65535, 65536, 100_000, 2**31 - 1, 2**31, 2**32 - 1)


# --- seed files ---------------------------------------------------------------------------------


def picture(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A small RGB picture with gradients, blocks and noise (so every codec has something to encode)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    rgb[height // 4 : height // 2, width // 4 : width // 2] = (250, 30, 30)
    rgb = rgb + rng.integers(-12, 12, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def translucent(image: Image.Image) -> Image.Image:
    """`image` with an alpha ramp (an opaque alpha channel is dropped by some encoders)."""
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(image.size))
    return rgba


def save(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    # Copies: PIL leaves a save's encoder settings on the images (a JPEG save breaks a later TIFF save).
    if "append_images" in kw:
        kw["append_images"] = [im.copy() for im in kw["append_images"]]  # type: ignore[union-attr]
    image.copy().save(buf, fmt, **kw)
    return buf.getvalue()


def frames(count: int = 3, width: int = 48, height: int = 40) -> list[Image.Image]:
    return [picture(width, height, seed=i) for i in range(count)]


def tiff_raw(
    width: int,
    height: int,
    samples: int,
    photometric: int,
    extra: tuple[int, ...],
    big_endian: bool = False,
) -> bytes:
    """An uncompressed 8-bit TIFF written by hand, for layouts PIL cannot write (extra samples)."""
    end = ">" if big_endian else "<"
    pixels = bytes((i * 7) % 256 for i in range(width * height * samples))
    tags: list[tuple[int, int, list[int]]] = [  # (tag, type, values); type 3 SHORT, 4 LONG
        (256, 4, [width]),
        (257, 4, [height]),
        (258, 3, [8] * samples),
        (259, 3, [1]),
        (262, 3, [photometric]),
        (273, 4, [0]),  # strip offset, patched below
        (277, 3, [samples]),
        (278, 4, [height]),
        (279, 4, [len(pixels)]),
    ]
    if extra:
        tags.append((338, 3, list(extra)))
    ifd_at = 8
    ifd_size = 2 + 12 * len(tags) + 4
    blobs = b""
    entries = b""
    blob_at = ifd_at + ifd_size
    for tag, kind, values in tags:
        fmt = "H" if kind == 3 else "I"
        packed = struct.pack(end + fmt * len(values), *values)
        if len(packed) <= 4:
            entries += struct.pack(end + "HHI", tag, kind, len(values)) + packed.ljust(4, b"\0")
        else:
            entries += struct.pack(end + "HHII", tag, kind, len(values), blob_at + len(blobs))
            blobs += packed
    data_at = blob_at + len(blobs)
    strip_entry = [t for t, _, _ in tags].index(273)
    at = 12 * strip_entry + 8
    entries = entries[:at] + struct.pack(end + "I", data_at) + entries[at + 4 :]
    head = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(end + "I", ifd_at)
    return head + struct.pack(end + "H", len(tags)) + entries + b"\0\0\0\0" + blobs + pixels


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(picture(), "JPEG", exif=exif.tobytes(), quality=90)


def palette_transparent_png() -> bytes:
    pal = picture().quantize(16)
    return save(pal, "PNG", transparency=0)


def text_png() -> bytes:
    """A PNG with small tEXt, zTXt and iTXt chunks before its pixels, for the text mutations to hit."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "seed")
    info.add_text("Comment", "a compressed comment " * 20, zip=True)
    info.add_itxt("Description", "an international text", lang="en", zip=True)
    return save(picture(32, 24), "PNG", pnginfo=info)


def seed_files() -> dict[str, tuple[str, bytes]]:
    """Every seed: name -> (extension, bytes). All decode with PIL."""
    rgb = picture()
    grey16 = Image.fromarray((np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16))
    floats = Image.fromarray(np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64), "F")
    anim = frames()
    seeds: dict[str, tuple[str, bytes]] = {
        "jpeg-rgb": (".jpg", save(rgb, "JPEG", quality=85)),
        "jpeg-l": (".jpg", save(rgb.convert("L"), "JPEG")),
        "jpeg-cmyk": (".jpg", save(rgb.convert("CMYK"), "JPEG")),
        "jpeg-exif6": (".jpg", exif_rotated_jpeg()),
        "jpeg-progressive": (".jpeg", save(rgb, "JPEG", progressive=True, quality=80)),
        "mpo": (".jpg", save(anim[0], "MPO", save_all=True, append_images=anim[1:2])),
        "png-rgb": (".png", save(rgb, "PNG")),
        "png-palette": (".png", save(rgb.quantize(32), "PNG")),
        "png-palette-trns": (".png", palette_transparent_png()),
        "png-rgba": (".png", save(translucent(rgb), "PNG")),
        "png-la": (".png", save(rgb.convert("LA"), "PNG")),
        "png-16bit": (".png", save(grey16, "PNG")),
        "png-1bit": (".png", save(rgb.convert("1"), "PNG")),
        "png-text": (".png", text_png()),
        "png-apng": (".png", save(anim[0], "PNG", save_all=True, append_images=anim[1:], duration=100)),
        "gif-anim": (".gif", save(anim[0], "GIF", save_all=True, append_images=anim[1:], duration=100, loop=0)),
        "webp-lossy": (".webp", save(rgb, "WEBP", quality=70)),
        "webp-lossless": (".webp", save(rgb, "WEBP", lossless=True)),
        "webp-alpha": (".webp", save(translucent(rgb), "WEBP", quality=70)),
        "bmp-rgb": (".bmp", save(rgb, "BMP")),
        "bmp-palette": (".bmp", save(rgb.quantize(16), "BMP")),
        "tiff-rgb": (".tif", save(rgb, "TIFF")),
        "tiff-lzw": (".tif", save(rgb, "TIFF", compression="tiff_lzw")),
        "tiff-deflate": (".tiff", save(rgb, "TIFF", compression="tiff_adobe_deflate")),
        "tiff-packbits": (".tif", save(rgb.convert("L"), "TIFF", compression="packbits")),
        "tiff-multipage": (".tif", save(anim[0], "TIFF", save_all=True, append_images=anim[1:])),
        "tiff-16bit": (".tif", save(grey16, "TIFF")),
        "tiff-float": (".tif", save(floats, "TIFF")),
        "tiff-cmyk": (".tif", save(rgb.convert("CMYK"), "TIFF")),
        "tiff-rgbxx": (".tif", tiff_raw(24, 16, 5, 2, (0, 0))),
        "tiff-la-be": (".tif", tiff_raw(24, 16, 2, 1, (2,), big_endian=True)),
    }
    return seeds


# --- generic mutations --------------------------------------------------------------------------


def truncate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    cut = rng.randrange(1, len(data))
    return f"trunc-{cut:04d}", data[:cut]


def flip(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    out = bytearray(data)
    count = rng.choice((1, 1, 2, 4, 16))
    # Headers hold the interesting fields: aim half the flips at the first 128 bytes.
    for _ in range(count):
        at = rng.randrange(min(len(out), 128)) if rng.random() < 0.5 else rng.randrange(len(out))
        out[at] ^= rng.randrange(1, 256)
    return f"flip{count}-{rng.randrange(10_000):04d}", bytes(out)


def fill(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    out = bytearray(data)
    start = rng.randrange(len(out))
    span = rng.choice((4, 16, 64, 512))
    value = rng.choice((0x00, 0xFF))
    out[start : start + span] = bytes([value]) * len(out[start : start + span])
    return f"fill{value:02x}-{start:04d}", bytes(out)


def duplicate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    start = rng.randrange(len(data))
    span = rng.choice((8, 64, 1024))
    return f"dup-{start:04d}", data[: start + span] + data[start:]


GENERIC: list[Mutation] = [truncate, truncate, flip, flip, fill, duplicate]


# --- PNG ----------------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, type, body) of each chunk of a well-formed PNG."""
    chunks, at = [], 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        chunks.append((at, kind, data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_replace(data: bytes, kind: bytes, body: bytes) -> bytes:
    """`data` with the first `kind` chunk's body replaced (CRC fixed, so PIL reads on)."""
    for at, k, old in png_chunks(data):
        if k == kind:
            return data[:at] + png_chunk(kind, body) + data[at + 12 + len(old) :]
    return data


def png_insert_before_idat(data: bytes, extra: bytes) -> bytes:
    for at, kind, _ in png_chunks(data):
        if kind == b"IDAT":
            return data[:at] + extra + data[at:]
    return data + extra


def png_chunk_length(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    at, kind, body = rng.choice(png_chunks(data))
    length = rng.choice((0, 1, len(body) + 1, max(len(body) - 1, 0), 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(2**32)))
    out = data[:at] + struct.pack(">I", length) + data[at + 4 :]
    return f"chunklen-{kind.decode('latin-1')}-{length:x}", out


def png_dims(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    ihdr = png_chunks(data)[0][2]
    width, height = rng.choice(ODD_SIZES), rng.choice(ODD_SIZES)
    return f"ihdr-{width}x{height}", png_replace(data, b"IHDR", struct.pack(">II", width, height) + ihdr[8:])


def png_layout(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    ihdr = bytearray(png_chunks(data)[0][2])
    ihdr[8] = rng.choice((0, 1, 2, 3, 4, 5, 7, 8, 16, 32))  # bit depth
    ihdr[9] = rng.choice((0, 1, 2, 3, 4, 5, 6, 7))  # colour type
    ihdr[12] = rng.choice((0, 0, 1, 2))  # interlace
    return f"ihdr-depth{ihdr[8]}-type{ihdr[9]}-il{ihdr[12]}", png_replace(data, b"IHDR", bytes(ihdr))


def png_text_bomb(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A zTXt, iTXt or iCCP chunk that inflates past PIL's MAX_TEXT_CHUNK (a few KB on disk)."""
    payload = zlib.compress(b"\0" * (PngImagePlugin.MAX_TEXT_CHUNK * 2), 9)
    kind = rng.choice((b"zTXt", b"iTXt", b"iCCP"))
    if kind == b"zTXt":
        body = b"Comment\0\0" + payload
    elif kind == b"iTXt":
        body = b"Comment\0\x01\0en\0\0" + payload
    else:
        body = b"profile\0\0" + payload
    return f"{kind.decode()}-bomb", png_insert_before_idat(data, png_chunk(kind, body))


def png_text_flood(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Many zTXt chunks each just under MAX_TEXT_CHUNK: together past MAX_TEXT_MEMORY."""
    count = PngImagePlugin.MAX_TEXT_MEMORY // PngImagePlugin.MAX_TEXT_CHUNK + 2
    one = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * (PngImagePlugin.MAX_TEXT_CHUNK - 64), 9))
    return f"ztxt-flood{count}", png_insert_before_idat(data, one * count)


def png_bad_crc(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    at, kind, body = rng.choice(png_chunks(data))
    crc_at = at + 8 + len(body)
    return f"crc-{kind.decode('latin-1')}", data[:crc_at] + b"\xde\xad\xbe\xef" + data[crc_at + 4 :]


def png_apng_control(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """An acTL or fcTL with odd counts, sizes or offsets (CRC fixed)."""
    chunks = [(at, k, b) for at, k, b in png_chunks(data) if k in (b"acTL", b"fcTL")]
    if not chunks:
        return png_dims(data, rng)
    at, kind, body = rng.choice(chunks)
    fields = bytearray(body)
    pos = rng.randrange(0, len(fields) - 3, 4) if kind == b"acTL" else rng.choice((4, 8, 12, 16, 20))
    value = rng.choice(ODD_SIZES)
    fields[pos : pos + 4] = struct.pack(">I", value)
    out = data[:at] + png_chunk(kind, bytes(fields)) + data[at + 12 + len(body) :]
    return f"{kind.decode()}-{pos}-{value}", out


PNG: list[Mutation] = [png_chunk_length, png_dims, png_dims, png_layout, png_text_bomb, png_bad_crc, png_apng_control]


# --- JPEG ---------------------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the marker, marker byte, length field) up to the start of scan."""
    segments, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        length = struct.unpack(">H", data[at + 2 : at + 4])[0]
        segments.append((at, marker, length))
        if marker == 0xDA:
            break
        at += 2 + length
    return segments


def jpeg_length(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    at, marker, length = rng.choice(jpeg_segments(data))
    new = rng.choice((0, 1, 2, 3, length - 1, length + 1, 0xFFFF, rng.randrange(0x10000)))
    new = max(0, min(new, 0xFFFF))
    return f"seglen-{marker:02x}-{new}", data[: at + 2] + struct.pack(">H", new) + data[at + 4 :]


def jpeg_dims(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    sof = [at for at, marker, _ in jpeg_segments(data) if marker in (0xC0, 0xC1, 0xC2)]
    if not sof:
        return truncate(data, rng)
    at = sof[0]
    height, width = rng.choice(ODD_SIZES) & 0xFFFF, rng.choice(ODD_SIZES) & 0xFFFF
    return f"sof-{width}x{height}", data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def jpeg_components(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """The SOF's precision or component count, or one component's sampling factors."""
    sof = [at for at, marker, _ in jpeg_segments(data) if marker in (0xC0, 0xC1, 0xC2)]
    if not sof:
        return flip(data, rng)
    out = bytearray(data)
    field = rng.choice(("precision", "count", "sampling", "table"))
    at = sof[0] + {"precision": 4, "count": 9, "sampling": 11, "table": 12}[field]
    out[at] = rng.choice((0, 1, 2, 5, 12, 16, 0x11, 0x44, 0xFF))
    return f"sof-{field}-{out[at]}", bytes(out)


def jpeg_drop(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Drop one segment (a table, the frame header, the EXIF block)."""
    at, marker, length = rng.choice(jpeg_segments(data)[:-1] or jpeg_segments(data))
    return f"drop-{marker:02x}", data[:at] + data[at + 2 + length :]


JPEG: list[Mutation] = [jpeg_length, jpeg_length, jpeg_dims, jpeg_dims, jpeg_components, jpeg_drop]


# --- TIFF ---------------------------------------------------------------------------------------


def tiff_entries(data: bytes) -> tuple[str, list[tuple[int, int, int, int]]]:
    """Byte order and (offset, tag, type, count) of each entry of the first IFD."""
    end = ">" if data[:2] == b"MM" else "<"
    ifd = struct.unpack(end + "I", data[4:8])[0]
    count = struct.unpack(end + "H", data[ifd : ifd + 2])[0]
    entries = []
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, kind, n = struct.unpack(end + "HHI", data[at : at + 8])
        entries.append((at, tag, kind, n))
    return end, entries


def tiff_set(data: bytes, tag: int, value: int) -> bytes:
    """The first IFD's `tag` set to one LONG `value` (type and count rewritten)."""
    end, entries = tiff_entries(data)
    for at, t, _, _ in entries:
        if t == tag:
            return data[:at] + struct.pack(end + "HHII", tag, 4, 1, value & 0xFFFFFFFF) + data[at + 12 :]
    return data


TIFF_TAGS = {256: "width", 257: "height", 258: "bits", 259: "compression", 262: "photometric", 273: "stripoffset"}
TIFF_TAGS |= {277: "samples", 278: "rowsperstrip", 279: "stripbytes", 284: "planar", 338: "extrasamples"}


def tiff_tag(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    tag = rng.choice(list(TIFF_TAGS))
    if tag == 277:
        value = rng.choice((0, 2, 3, 6, 7, 255, 65535, 303169682))
    elif tag in (256, 257):
        value = rng.choice(ODD_SIZES)
    else:
        value = rng.choice((0, 1, 2, 3, 5, 7, 8, 16, 32, 64, 65535, 2**31, rng.randrange(2**32)))
    return f"tag-{TIFF_TAGS[tag]}-{value}", tiff_set(data, tag, value)


def tiff_samples(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    value = rng.choice((0, 2, 4, 5, 6, 200, 65535, 303169682))
    return f"tag-samples-{value}", tiff_set(data, 277, value)


def tiff_ifd(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """The first IFD's offset or entry count, or one entry's count or value offset."""
    end, entries = tiff_entries(data)
    out = bytearray(data)
    what = rng.choice(("ifdoffset", "entrycount", "count", "valueoffset"))
    value = rng.choice((0, 1, 7, len(data) - 2, len(data) + 100, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF))
    if what == "ifdoffset":
        out[4:8] = struct.pack(end + "I", value)
    elif what == "entrycount":
        ifd = struct.unpack(end + "I", data[4:8])[0]
        out[ifd : ifd + 2] = struct.pack(end + "H", value & 0xFFFF)
    else:
        at = rng.choice(entries)[0]
        pos = at + 4 if what == "count" else at + 8
        out[pos : pos + 4] = struct.pack(end + "I", value)
    return f"ifd-{what}-{value}", bytes(out)


TIFF: list[Mutation] = [tiff_tag, tiff_tag, tiff_samples, tiff_ifd, tiff_ifd]


# --- GIF, BMP, WebP -----------------------------------------------------------------------------


def gif_dims(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """The logical screen, or the first frame's descriptor (position and size)."""
    width, height = rng.choice(ODD_SIZES) & 0xFFFF, rng.choice(ODD_SIZES) & 0xFFFF
    if rng.random() < 0.5:
        return f"screen-{width}x{height}", data[:6] + struct.pack("<HH", width, height) + data[10:]
    at = data.find(b"\x2c", 13)
    if at < 0:
        return truncate(data, rng)
    left = rng.choice((0, 1, 65535))
    block = struct.pack("<HHHH", left, 0, width, height)
    return f"frame-{left}+{width}x{height}", data[: at + 1] + block + data[at + 9 :]


def gif_lzw(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """The LZW minimum code size byte of the first frame."""
    at = data.find(b"\x2c", 13)
    if at < 0:
        return truncate(data, rng)
    flags = data[at + 9]
    code_at = at + 10 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    value = rng.choice((0, 1, 9, 12, 13, 255))
    return f"lzw-{value}", data[:code_at] + bytes([value]) + data[code_at + 1 :]


def bmp_field(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    name, at, fmt = rng.choice(
        (("width", 18, "<i"), ("height", 22, "<i"), ("bits", 28, "<H"), ("compression", 30, "<I"),
         ("dataoffset", 10, "<I"), ("headersize", 14, "<I"), ("colours", 46, "<I"))
    )  # fmt: skip
    lo, hi = {"<i": (-(2**31), 2**31 - 1), "<H": (0, 0xFFFF), "<I": (0, 2**32 - 1)}[fmt]
    value = rng.choice((0, 1, -1, 3, 7, 32, 64, 65535, 100_000, 2**31 - 1, -(2**31), 2**32 - 1))
    value = min(max(value, lo), hi)
    return f"{name}-{value}", data[:at] + struct.pack(fmt, value) + data[at + struct.calcsize(fmt) :]


def webp_field(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """The RIFF size, the first chunk's size, or (VP8X) the canvas size."""
    what = rng.choice(("riff", "chunk", "canvas"))
    value = rng.choice((0, 1, 8, len(data), 0xFFFFFF, 0xFFFFFFFF))
    if what == "canvas" and data[12:16] == b"VP8X":
        return f"canvas-{value & 0xFFFFFF}", data[:24] + struct.pack("<I", value)[:3] * 2 + data[30:]
    at = 4 if what == "riff" else 16
    return f"{what}size-{value}", data[:at] + struct.pack("<I", value) + data[at + 4 :]


SPECIFIC: dict[str, list[Mutation]] = {
    "png": PNG,
    "jpeg": JPEG,
    "mpo": JPEG,
    "tiff": TIFF,
    "gif": [gif_dims, gif_dims, gif_lzw],
    "bmp": [bmp_field, bmp_field],
    "webp": [webp_field],
}


def mutations_for(seed_name: str) -> list[Mutation]:
    """Generic mutations and, as often, those that know the seed's format."""
    specific = SPECIFIC[seed_name.split("-")[0]] + ([png_text_flood] if seed_name == "png-text" else [])
    return GENERIC * len(specific) + specific * len(GENERIC)


# --- the corpus ---------------------------------------------------------------------------------


def corpus(count: int, seed: int) -> list[tuple[str, bytes]]:
    """`count` (file name, bytes): the seeds unchanged first, then mutants round the seeds, no two alike."""
    seeds = seed_files()
    names = list(seeds)
    out = [(f"{name}__orig{ext}", data) for name, (ext, data) in seeds.items()][:count]
    taken = {name for name, _ in out}
    seen = {data for _, data in out}
    draw = 0
    while len(out) < count:
        name = names[len(out) % len(names)]
        ext, data = seeds[name]
        rng = random.Random(f"{seed}:{draw}")
        draw += 1
        label, mutant = rng.choice(mutations_for(name))(data, rng)
        if mutant in seen and draw < 50 * count:  # the same bytes again: draw another mutation
            continue
        file_name = f"{name}__{label}{ext}"
        if file_name in taken:  # a label that does not tell two mutants apart: add the draw number
            file_name = f"{name}__{label}__{draw:05d}{ext}"
        taken.add(file_name)
        seen.add(mutant)
        out.append((file_name, mutant))
    return out


def make_corpus(folder: Path, count: int, seed: int) -> list[Path]:
    """Write the corpus into `folder` (created if needed); its paths, in corpus order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in corpus(count, seed):
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


# --- measuring a decoder over the corpus -------------------------------------------------------


def load_decoder(module_file: Path | None) -> tuple[Callable[..., object], type[Exception]]:
    """decode_image and LoadError from irs.load, or from another copy of load.py (an older version)."""
    if module_file is None:
        from irs.load import LoadError, decode_image

        return decode_image, LoadError
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_under_test", module_file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.decode_image, module.LoadError


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _decode_in_child(
    path: Path, decoder: tuple[Callable[..., object], type[Exception]], limits: tuple[int, int]
) -> dict:
    """Decode one file (in a forked child): outcome, reason, seconds, and the memory it added (MiB)."""
    import time

    decode, load_error = decoder
    base = _status_kib("VmRSS")
    started = time.perf_counter()
    try:
        decode(path.read_bytes(), limits[0], limits[1], str(path))
        outcome, reason = "decoded", ""
    except load_error as err:
        outcome, reason = "LoadError", str(err)
    except BaseException as err:  # noqa: BLE001 - what escaped is the finding
        outcome, reason = "escaped", f"{type(err).__module__}.{type(err).__name__}: {err}"
    seconds = time.perf_counter() - started
    mib = (_status_kib("VmHWM") - base) / 1024
    return {"file": path.name, "outcome": outcome, "reason": reason[:300], "seconds": seconds, "mib": mib}


def measure(paths: list[Path], decoder: tuple, limits: tuple[int, int], timeout: float = 60.0) -> list[dict]:
    """Decode each file in its own forked process (a crash or hang costs one file), one at a time."""
    import json
    import os
    import signal
    import time

    rows = []
    for path in paths:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: decode, report, leave without running the parent's cleanup
            os.close(read_end)
            try:
                row = _decode_in_child(path, decoder, limits)
                os.write(write_end, json.dumps(row).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        deadline = time.monotonic() + timeout
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as pipe:
            raw = pipe.read()
        if raw:
            rows.append(json.loads(raw))
        else:
            killed = f"no result after {timeout:.0f} s" if done[0] == 0 else f"child died, status {done[1]}"
            rows.append({"file": path.name, "outcome": "crashed", "reason": killed, "seconds": timeout, "mib": 0})
    return rows


def summary(rows: list[dict]) -> str:
    """Counts by outcome and reason prefix, the slowest files, the hungriest files, what escaped."""
    from collections import Counter

    lines = [f"{len(rows)} files"]
    kinds = Counter(r["outcome"] if r["outcome"] != "LoadError" else "LoadError: " + r["reason"].split(":")[0]
                    for r in rows)  # fmt: skip
    lines += [f"  {n:5d}  {kind}" for kind, n in kinds.most_common()]
    lines.append("slowest:")
    for r in sorted(rows, key=lambda r: -r["seconds"])[:10]:
        lines.append(
            f"  {r['seconds'] * 1000:8.1f} ms  {r['mib']:7.1f} MiB  {r['file']}  [{r['outcome']}: {r['reason'][:90]}]"
        )
    lines.append("most memory:")
    for r in sorted(rows, key=lambda r: -r["mib"])[:10]:
        lines.append(
            f"  {r['mib']:7.1f} MiB  {r['seconds'] * 1000:8.1f} ms  {r['file']}  [{r['outcome']}: {r['reason'][:90]}]"
        )
    escaped = [r for r in rows if r["outcome"] in ("escaped", "crashed")]
    lines.append(f"escaped or crashed: {len(escaped)}")
    for kind, n in Counter(r["reason"].split(":")[0] for r in escaped).most_common():
        example = next(r for r in escaped if r["reason"].split(":")[0] == kind)
        lines.append(f"  {n:5d}  {kind}  e.g. {example['file']}: {example['reason'][:120]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write into")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", action="store_true", help="then decode each file, timed, and summarise")
    parser.add_argument("--decoder", type=Path, help="a load.py to measure instead of irs.load (e.g. an old one)")
    parser.add_argument("--max-pixels", type=int, default=100_000_000)
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="write one JSON row per file here")
    args = parser.parse_args(argv)
    paths = make_corpus(args.out, args.count, args.seed)
    sizes = [p.stat().st_size for p in paths]
    print(f"{len(paths)} files, {sum(sizes) / 1e6:.1f} MB, largest {max(sizes):,} bytes, in {args.out}")
    if args.measure:
        rows = measure(paths, load_decoder(args.decoder), (args.max_pixels, args.max_side))
        if args.json:
            import json

            args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(summary(rows))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: irs importable
    main()
