"""Export search results: CSV (one row per result), JSON (the `search --json` list), or COCO JSON with
the matched masks as run-length segmentations that FiftyOne and CVAT import (`irs search --export`).

COCO masks are written in COCO's uncompressed RLE form, {"size": [h, w], "counts": [ints]}: column-major
runs starting with a run of zeros, what pycocotools' `frPyObjects` reads (pycocotools, which writes the
compressed string form, is not a dependency). Stored masks are at most `mask_max_side` pixels on a side;
they are scaled back to each image's original size first.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from irs.geometry import fit_mask, rle_decode, rle_encode
from irs.records import SearchResult

FORMATS = (".coco.json", ".json", ".csv")  # longest suffix first: a .coco.json file is also a .json one
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")

ImageSize = Callable[[str], "tuple[int, int] | None"]  # sha256 -> original (width, height)


def export_format(path: str | os.PathLike) -> str:
    """The format a file name asks for; ValueError naming the ones there are otherwise."""
    name = Path(path).name.lower()
    for suffix in FORMATS:
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: cannot tell the export format; the name must end in {', '.join(FORMATS)}")


def write_export(
    path: str | os.PathLike,
    results: list[SearchResult],
    image_size: ImageSize,
    file_name: Callable[[str], str] = str,
) -> str:
    """Write `results` to `path` in the format its name ends with; returns that suffix. `image_size` gives
    an image's original size (COCO only); `file_name` turns a path into the name written for COCO images."""
    fmt = export_format(path)
    Path(path).write_text(export_text(fmt, results, image_size, file_name), encoding="utf-8")
    return fmt


def export_text(
    fmt: str, results: list[SearchResult], image_size: ImageSize, file_name: Callable[[str], str] = str
) -> str:
    """`results` as the text of one of FORMATS (what `write_export` writes, and what the app downloads)."""
    if fmt == ".csv":
        return to_csv(results)
    if fmt == ".json":
        return json.dumps([r.to_json() for r in results], indent=2)
    if fmt == ".coco.json":
        return json.dumps(to_coco(results, image_size, file_name))
    raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")


def to_csv(results: list[SearchResult]) -> str:
    """A header, then one row per result: rank, path, sha256, score, each score part, the normalised box
    (x0, y0, x1, y1) of the segment matched for the first phrase (empty for a whole-image match)."""
    parts: list[str] = []
    for r in results:
        parts += [k for k in r.parts if k not in parts]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "path", "sha256", "score", *parts, *BOX_COLUMNS])
    for rank, r in enumerate(results, 1):
        segment = r.matches[0].segment if r.matches else r.segment
        box = [f"{v:.6f}" for v in segment.bbox] if segment is not None else [""] * 4
        cells = [f"{r.parts[k]:.6f}" if k in r.parts else "" for k in parts]
        writer.writerow([rank, r.path, r.sha256, f"{r.score:.6f}", *cells, *box])
    return out.getvalue()


def to_coco(
    results: list[SearchResult], image_size: ImageSize, file_name: Callable[[str], str] = str
) -> dict[str, list[dict]]:
    """COCO instances: one image per result (id = rank), one annotation per matched segment, one category
    per query phrase. A phrase matched by the whole image (no segment) has no annotation."""
    phrases: list[str] = []
    for r in results:
        names = [p.text for p in r.parsed.phrases] if r.parsed else [m.phrase for m in r.matches]
        phrases += [p for p in names if p not in phrases]
    category = {p: n for n, p in enumerate(phrases, 1)}
    images, annotations = [], []
    for rank, r in enumerate(results, 1):
        size = image_size(r.sha256)
        if size is None:  # removed since the search: nothing to size its masks by
            continue
        width, height = size
        images.append({"id": rank, "file_name": file_name(r.path), "width": width, "height": height})
        for m in r.matches:
            if m.segment is None or m.phrase not in category:
                continue
            mask = fit_mask(m.segment.mask(), height, width)
            ys, xs = np.nonzero(mask)
            if xs.size == 0:
                continue
            x0, y0 = int(xs.min()), int(ys.min())
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": rank,
                    "category_id": category[m.phrase],
                    "segmentation": {"size": [height, width], "counts": rle_counts(mask)},
                    "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
                    "area": int(xs.size),
                    "iscrowd": 0,  # one object each; COCO tools treat crowd regions as ignored
                    "score": round(m.parts.get("score", r.score), 6),
                }
            )
    categories = [{"id": n, "name": p, "supercategory": "query"} for p, n in category.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed run lengths of an HxW mask: column-major, the first run counts zeros (the
    order irs stores masks in, unpacked)."""
    return np.frombuffer(zlib.decompress(rle_encode(mask)), np.uint32).tolist()


def rle_mask(counts: list[int], size: tuple[int, int] | list[int]) -> np.ndarray:
    """The HxW mask of COCO uncompressed run lengths (the inverse of rle_counts)."""
    return rle_decode(zlib.compress(np.asarray(counts, np.uint32).tobytes()), (int(size[0]), int(size[1])))
