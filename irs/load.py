"""Discover and load: walk a folder for images, decode each to RGB at working resolution.

A file that cannot be used raises LoadError with a reason a person can act on; the caller records
it and goes on with the batch.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from irs.pipeline import TimeLimitExceeded, call_with_time_limit
from irs.records import BadFile, FileEntry, LoadedImage

T = TypeVar("T")
R = TypeVar("R")


class LoadError(Exception):
    """A file could not be loaded; str(err) is the reason."""


def discover(
    root: str | Path, extensions: tuple[str, ...], allowed_roots: tuple[str, ...] = ()
) -> tuple[list[FileEntry], list[BadFile]]:
    """Every image file under `root` (recursively, sorted), and the files and folders that cannot be used.

    Hidden files and folders (name starts with '.') are skipped. Symbolic links are followed, and
    a folder already visited (by device and inode) is not entered again, so link loops end. Only
    regular files are entries: a FIFO, device or socket with an image name is reported, never
    opened. With `allowed_roots`, a file or folder whose real path (links resolved) is outside
    every allowed root is reported and not entered. Entry paths are as found, not resolved.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    wanted = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    fence = _Fence(allowed_roots)
    entries: list[FileEntry] = []
    problems: list[BadFile] = []
    seen_dirs: set[tuple[int, int]] = set()

    def on_error(err: OSError) -> None:
        problems.append(BadFile(str(err.filename), f"cannot read folder: {err.strerror}"))

    outside = fence.outside(str(root))
    if outside:
        return entries, [BadFile(str(root), outside)]
    for folder, dirs, files in os.walk(root, followlinks=True, onerror=on_error):
        try:
            info = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(key)
        real_folder = fence.resolve(folder)
        dirs[:] = [
            d for d in sorted(dirs) if not d.startswith(".") and not _fenced(fence, folder, real_folder, d, problems)
        ]
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in wanted:
                continue
            if _fenced(fence, folder, real_folder, name, problems):
                continue
            entry = _file_entry(os.path.join(folder, name))
            if isinstance(entry, BadFile):
                problems.append(entry)
            else:
                entries.append(entry)
    return entries, [BadFile(printable(bad.path), bad.reason) for bad in problems]


def printable(path: str) -> str:
    """A path as text that can be stored and shown: bytes of a name that are not UTF-8 become \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _file_entry(path: str) -> FileEntry | BadFile:
    """The entry for a found file, or why it cannot be one (gone, not a regular file, a name irs cannot store)."""
    if printable(path) != path:  # SQLite stores UTF-8 text: such a path could not be stored or shown
        return BadFile(path, "file name is not valid UTF-8: rename the file (or its folder) to index it")
    try:
        info = os.stat(path)
    except OSError as err:
        return BadFile(path, f"cannot read file: {err.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return BadFile(path, f"not a regular file ({file_kind(info.st_mode)})")
    return FileEntry(path=path, size=info.st_size, mtime_ns=info.st_mtime_ns)


def _fenced(fence: _Fence, folder: str, real_folder: str | None, name: str, problems: list[BadFile]) -> bool:
    """True (and the reason recorded) if folder/name leads outside the allowed roots."""
    path = os.path.join(folder, name)
    outside = fence.outside(path, real_folder)
    if outside:
        problems.append(BadFile(path, outside))
    return bool(outside)


class _Fence:
    """The allowed roots of a walk, resolved once; no roots means everything is allowed."""

    def __init__(self, allowed_roots: tuple[str, ...]) -> None:
        self.roots = [os.path.realpath(Path(r).expanduser()) for r in allowed_roots]

    def outside(self, path: str, real_folder: str | None = None) -> str | None:
        """Why `path` is outside the allowed roots (None when inside, or when no roots are set).

        `real_folder` is the resolved folder holding `path`: then only a link needs resolving.
        """
        if not self.roots:
            return None
        if real_folder is None or os.path.islink(path):
            real = os.path.realpath(path)
        else:
            real = os.path.join(real_folder, os.path.basename(path))
        if any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots):
            return None
        return f"outside the allowed folders: link to {real}"

    def resolve(self, folder: str) -> str | None:
        """The real path of a folder being walked (None, to save the work, when no roots are set)."""
        return os.path.realpath(folder) if self.roots else None


def check_folder(folder: str, allowed_roots: tuple[str, ...] = ()) -> str | None:
    """Why a folder cannot be indexed (None when it can): missing, not a folder, or outside the allowed roots."""
    return _check_path(folder, allowed_roots, "folder")


def check_image_path(path: str, allowed_roots: tuple[str, ...] = ()) -> str | None:
    """Why a file cannot be read as a query image (None when it can): missing, not a file, or outside the
    allowed roots (the app reads only what it may index)."""
    return _check_path(path, allowed_roots, "file")


def _check_path(text: str, allowed_roots: tuple[str, ...], kind: str) -> str | None:
    """Why `text` does not name an existing `kind` ("folder" or "file") under the allowed roots, or None."""
    if not text.strip():
        return "type a folder path" if kind == "folder" else "type an image file's path"
    path = Path(text).expanduser()
    if not path.exists():
        return f"{path}: no such {kind}"
    if not (path.is_dir() if kind == "folder" else path.is_file()):
        return f"{path}: not a {kind}"
    return _outside(path, allowed_roots)


def _outside(path: Path, allowed_roots: tuple[str, ...]) -> str | None:
    """Why `path` is not under one of the allowed roots (links resolved), None when it is or none are set."""
    if not allowed_roots:
        return None
    real = path.resolve()
    roots = [Path(r).expanduser().resolve() for r in allowed_roots]
    if any(real == r or r in real.parents for r in roots):
        return None
    return f"{path}: outside the allowed folders ({', '.join(str(r) for r in roots)})"


def relative_path(path: str, folders: list[str]) -> str:
    """`path` relative to the innermost of `folders` it lies under, else in full: what a person who indexed
    those folders recognises (two folders' IMG_0001.JPG stay apart)."""
    prefixes = sorted((f.rstrip(os.sep) + os.sep for f in folders), key=len, reverse=True)
    return next((path[len(p) :] for p in prefixes if path.startswith(p)), path)


def read_file(path: str, max_bytes: int | None = None) -> bytes:
    """The bytes of `path`, only if it is a regular file; never blocks on a FIFO, device or socket.

    The path is checked with stat before it is opened (so a device is never opened at all), and
    the open descriptor is checked again with fstat (the path may have been swapped in between).
    """
    try:
        refuse_special(os.stat(path).st_mode)
        fd = os.open(path, _OPEN_FLAGS)  # O_NONBLOCK: opening a FIFO with no writer returns at once
    except OSError as err:
        raise LoadError(f"cannot read file: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        refuse_special(info.st_mode)
        if max_bytes is not None and info.st_size > max_bytes:
            raise LoadError(f"file too large: {info.st_size:,} bytes > {max_bytes:,}")
        os.set_blocking(fd, True)  # a regular file: plain blocking reads from here on
        return _read_all(fd, max_bytes)
    except OSError as err:
        raise LoadError(f"cannot read file: {err.strerror or err}") from None
    finally:
        os.close(fd)


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def _read_all(fd: int, max_bytes: int | None) -> bytes:
    """Read `fd` to its end; a file that grew past `max_bytes` since fstat is refused too."""
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise LoadError(f"file too large: more than {max_bytes:,} bytes")
    return b"".join(chunks)


def refuse_special(mode: int) -> None:
    """Raise LoadError unless `mode` (an st_mode) is a regular file."""
    if not stat.S_ISREG(mode):
        raise LoadError(f"not a regular file ({file_kind(mode)})")


def file_kind(mode: int) -> str:
    """A person's name for the kind of file an st_mode describes."""
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISREG, "regular file"),
    ):
        if test(mode):
            return name
    return "special file"


def load_image(path: str, max_pixels: int, max_side: int, wanted: Callable[[str], bool] | None = None) -> LoadedImage:
    """Read `path`, hash its bytes, and decode them (see read_file and decode_image): the one place a
    file is read, hashed and decoded. With `wanted`, bytes whose sha256 it refuses are not decoded (the
    image comes back with pixels None): content already indexed, or changed since it was listed."""
    data = read_file(path)
    sha = hashlib.sha256(data).hexdigest()
    if wanted is not None and not wanted(sha):
        return LoadedImage(path=path, sha256=sha, width=0, height=0, pixels=None)
    return decode_image(data, max_pixels, max_side, path, sha)


def load_any(paths: list[str], sha: str, max_pixels: int, max_side: int) -> tuple[LoadedImage | None, list[BadFile]]:
    """Decode the first of `paths` that still holds the bytes `sha` (None if none does), and the
    problems met on the way. A path whose bytes changed is skipped: the next run re-embeds it."""
    problems = []
    for path in paths:
        try:
            image = load_image(path, max_pixels, max_side, lambda h: h == sha)
        except LoadError as err:
            problems.append(BadFile(path, str(err)))
            continue
        if image.pixels is not None:
            return image, problems
    return None, problems


def within_limit(fn: Callable[[T], R], item: T, seconds: float) -> R:
    """fn(item) (reading and decoding) under a time limit; a hang, or any exception a decoder or
    preprocessing bug raises, becomes a LoadError: that file's failure, not the run's."""
    try:
        return call_with_time_limit(fn, item, seconds)
    except TimeLimitExceeded:
        raise LoadError(f"reading and decoding took over {seconds:g} s (decode_timeout); abandoned") from None
    except LoadError:
        raise
    except Exception as err:
        raise LoadError(f"could not be read: {type(err).__name__}: {err}") from None


# The formats irs decodes (JPEG covers MPO). Image.open would otherwise try every PIL plugin, some
# of which hand the file to an outside program (EPS runs Ghostscript) or take any bytes for a
# headerless format (TGA, IPTC, SPIDER have no signature check).
DECODE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "PPM", "QOI", "AVIF")

# What exif_transpose does for each EXIF orientation; done here so a corrupt EXIF block cannot
# cost an otherwise good picture.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decode_image(data: bytes, max_pixels: int, max_side: int, path: str = "", sha256: str = "") -> LoadedImage:
    """Decode image bytes to RGB, EXIF orientation applied, longest side at most `max_side`.

    Any bad input raises LoadError (and nothing else): PIL and its C decoders raise almost every
    exception type on corrupt data. Multi-frame files (GIF, APNG, multi-page TIFF, MPO) give
    their first frame. `sha256` is the bytes' hash when the caller has it already.
    """
    if not data:
        raise LoadError("empty file (0 bytes)")
    sha = sha256 or hashlib.sha256(data).hexdigest()

    with warnings.catch_warnings():
        # irs applies its own pixel cap below; PIL's warning (or error, at twice its own cap) is noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # PIL warns about corrupt metadata it skips; the file's fate is the LoadError, or none.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        try:
            image = Image.open(io.BytesIO(data), formats=_formats())
        except Exception as err:  # the boundary: one odd file is that file's failure
            raise LoadError(_open_reason(err, data, max_pixels)) from None
        width, height = image.size
        check_size(width, height, max_pixels)
        try:
            width, height, rgb = _decode(image, max_side)
        except Exception as err:
            raise LoadError(reason(err, "data", max_pixels)) from None
    return LoadedImage(path=path, sha256=sha, width=width, height=height, pixels=rgb)


def check_size(width: int, height: int, max_pixels: int) -> None:
    """Refuse, before decoding, a header that declares no pixels or more than `max_pixels`."""
    if width <= 0 or height <= 0:
        raise LoadError(f"truncated or corrupt image header: it declares a {width}x{height} image")
    if width * height > max_pixels:
        raise LoadError(f"over the pixel cap: {width}x{height} = {width * height:,} pixels > max_pixels {max_pixels:,}")


def _decode(image: Image.Image, max_side: int) -> tuple[int, int, np.ndarray]:
    """Original width and height (after orientation) and the HxWx3 uint8 pixels at working size."""
    width, height = image.size
    image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, much faster
    image.load()  # the first frame: a freshly opened file is positioned there
    orientation = _orientation(image)
    if orientation in _ORIENTATION:
        image = image.transpose(_ORIENTATION[orientation])
    if orientation in (5, 6, 7, 8):
        width, height = height, width  # the orientation turns the picture a quarter
    rgb = to_rgb(image, max_side)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    pixels = np.asarray(rgb)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8 or 0 in pixels.shape:
        raise ValueError(f"decoded to an unexpected array {pixels.shape} {pixels.dtype}")
    return width, height, pixels


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = as stored); a corrupt EXIF block counts as none."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # EXIF is metadata: a broken block should not lose the picture
        return 1
    return value if isinstance(value, int) else 1


def _formats() -> tuple[str, ...]:
    """DECODE_FORMATS that this PIL build has (Image.open raises KeyError for an unknown one)."""
    Image.init()
    return tuple(f for f in DECODE_FORMATS if f in Image.OPEN)


def _open_reason(err: Exception, data: bytes, max_pixels: int) -> str:
    """Why Image.open failed. It says only "cannot identify" when the plugin for a recognised
    signature refused the header, so ask that plugin for its own reason."""
    if isinstance(err, UnidentifiedImageError):
        inner = _plugin_error(data)
        if inner is None:
            return "not an image: format not recognised"
        err = inner
    return reason(err, "header", max_pixels)


def _plugin_error(data: bytes) -> Exception | None:
    """The exception raised by the first plugin whose signature check accepts `data`, if any."""
    prefix = data[:16]
    for name in _formats():
        factory, accept = Image.OPEN[name]
        try:
            accepted = accept(prefix) if accept else False
            if not accepted or isinstance(accepted, str):  # a str is Image.open's "possibly, but" warning
                continue
            factory(io.BytesIO(data), "").close()
        except Exception as err:
            return err
        return None
    return None


# Words in PIL's messages that say what kind of failure it was.
_METADATA_WORDS = ("MAX_TEXT_CHUNK", "MAX_TEXT_MEMORY", "text chunk")
_LAYOUT_WORDS = (
    "samples per pixel",
    "unknown pixel mode",
    "unknown data organization",
    "not supported",
    "unsupported",
    "cannot convert",
    "cannot handle",
    "not implemented",
    "unknown raw mode",
    "bad mode",
    "unrecognized mode",
    "unrecognised mode",
    "unknown mode",
)


# PIL messages that say little to a person, said plainly.
_PLAIN_WORDS = {
    # ImageFile's own check: the plugin found no mode, or a zero width or height
    "not identified by this driver": "the header gives no usable size or pixel layout (zero width or height?)",
}


def reason(err: BaseException, stage: str, max_pixels: int) -> str:
    """A reason a person understands for an exception raised while decoding the image `stage`."""
    text = _describe(err)
    if isinstance(err, Image.DecompressionBombError):
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        return f"over the pixel cap: the header claims more than {limit:,} pixels (max_pixels {max_pixels:,})"
    if isinstance(err, MemoryError):
        return "out of memory while decoding: the image is too large for this machine"
    if any(word in text for word in _METADATA_WORDS):
        return f"image metadata too large: {text}"
    if isinstance(err, NotImplementedError) or any(word in text.lower() for word in _LAYOUT_WORDS):
        return f"unsupported image layout: {text}"
    return f"truncated or corrupt image {stage}: {text}"


def _describe(err: BaseException) -> str:
    """The exception's message, with its type when that is not one PIL uses for bad data."""
    cause = err.__cause__
    if isinstance(err, SyntaxError) and cause is not None and str(cause) == str(err):
        err = cause  # ImageFile re-raises a plugin's IndexError, KeyError, struct.error... as SyntaxError(err)
    text = " ".join(str(err).split())[:200] or "no detail"
    text = _PLAIN_WORDS.get(text, text)
    if isinstance(err, OSError | SyntaxError | ValueError | EOFError):
        return text
    return f"{type(err).__name__}: {text}"  # IndexError, struct.error, ...: a decoder tripped on bad data


def to_rgb(image: Image.Image, max_side: int | None = None) -> Image.Image:
    """Any PIL mode to 8-bit RGB: transparency over white, 16-bit and float scaled, not clipped.

    With `max_side`, a 16/32-bit or float image is first box-averaged down towards it, so the
    float copy made for scaling stays small.
    """
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _scaled_grey(image, max_side).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _scaled_grey(image: Image.Image, max_side: int | None) -> Image.Image:
    """A 16/32-bit integer or float image as 8-bit grey ("L"), its range mapped to 0..255."""
    mode = image.mode
    if mode.startswith("I;16"):
        image = image.convert("I")  # reduce() takes I and F, not the 16-bit modes
    factor = max(image.size) // max_side if max_side else 1
    if factor >= 2:
        image = image.reduce(factor)  # a box average: no overshoot to change the range found below
    values = np.asarray(image, dtype=np.float32)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)  # float TIFFs can hold NaN and inf
    top = float(values.max()) if values.size else 0.0
    if mode == "F" and top <= 1.0:
        scale = 255.0
    elif top > 255:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    grey = np.clip(values * scale, 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L")
