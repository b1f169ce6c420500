"""Discover and load: walk a folder for images, decode each to RGB at working resolution.

A file that cannot be used raises LoadError with a reason a person can act on; the caller records
it and goes on with the batch.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from irs.records import BadFile, FileEntry, LoadedImage


class LoadError(Exception):
    """A file could not be loaded; str(err) is the reason."""


def discover(
    root: str | Path, extensions: tuple[str, ...], allowed_roots: tuple[str, ...] = ()
) -> tuple[list[FileEntry], list[BadFile]]:
    """Every image file under `root` (recursively, sorted), and the folders that could not be read.

    Hidden files and folders (name starts with '.') are skipped. Symbolic links are followed, and
    a folder already visited (by device and inode) is not entered again, so link loops end.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    wanted = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    entries: list[FileEntry] = []
    problems: list[BadFile] = []
    seen_dirs: set[tuple[int, int]] = set()

    def on_error(err: OSError) -> None:
        problems.append(BadFile(str(err.filename), f"cannot read folder: {err.strerror}"))

    for folder, dirs, files in os.walk(root, followlinks=True, onerror=on_error):
        try:
            stat = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        key = (stat.st_dev, stat.st_ino)
        if key in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(key)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in wanted:
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError as err:
                problems.append(BadFile(path, f"cannot read file: {err.strerror}"))
                continue
            entries.append(FileEntry(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns))
    return entries, problems


def check_folder(folder: str, allowed_roots: tuple[str, ...] = ()) -> str | None:
    """Why a folder cannot be indexed (None when it can): missing, not a folder, or outside the allowed roots."""
    if not folder.strip():
        return "type a folder path"
    path = Path(folder).expanduser()
    if not path.exists():
        return f"{path}: no such folder"
    if not path.is_dir():
        return f"{path}: not a folder"
    if allowed_roots:
        real = path.resolve()
        roots = [Path(r).expanduser().resolve() for r in allowed_roots]
        if not any(real == r or r in real.parents for r in roots):
            return f"{path}: outside the allowed folders ({', '.join(str(r) for r in roots)})"
    return None


def read_file(path: str) -> bytes:
    """A file's bytes (regular files only)."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise LoadError(f"cannot read file: {err.strerror or err}") from None


def load_image(path: str, max_pixels: int, max_side: int) -> LoadedImage:
    """Read and decode `path` (see decode_image)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise LoadError(f"cannot read file: {err.strerror or err}") from None
    return decode_image(data, max_pixels, max_side, path)


def decode_image(data: bytes, max_pixels: int, max_side: int, path: str = "") -> LoadedImage:
    """Decode image bytes to RGB, EXIF orientation applied, longest side at most `max_side`."""
    if not data:
        raise LoadError("empty file (0 bytes)")
    sha = hashlib.sha256(data).hexdigest()

    with warnings.catch_warnings():
        # irs applies its own pixel cap below; PIL's warning (or error, at twice its own cap) is noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise LoadError("not an image: format not recognised") from None
        except Image.DecompressionBombError:
            limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            raise LoadError(
                f"over the pixel cap: the header claims more than {limit:,} pixels (max_pixels {max_pixels:,})"
            ) from None
        except OSError as err:
            raise LoadError(f"truncated or corrupt image header: {err}") from None

        width, height = image.size
        if width * height > max_pixels:
            raise LoadError(
                f"over the pixel cap: {width}x{height} = {width * height:,} pixels > max_pixels {max_pixels:,}"
            )
        try:
            image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, much faster
            image.load()
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width  # the orientation turns the picture a quarter
            image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError) as err:
            raise LoadError(f"truncated or corrupt image data: {err}") from None

    rgb = to_rgb(image)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return LoadedImage(path=path, sha256=sha, width=width, height=height, pixels=np.asarray(rgb))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: transparency over white, 16-bit and float scaled, not clipped."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.size else 0.0
        if mode == "F" and top <= 1.0:
            scale = 255.0
        elif top > 255:
            scale = 255.0 / 65535.0
        else:
            scale = 1.0
        grey = np.clip(values * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
