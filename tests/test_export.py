"""Exported results: CSV rows, the JSON list, COCO run-length masks that decode back to the masks."""

import csv
import io
import json

import numpy as np
import pytest

from irs.export import export_format, export_text, rle_counts, rle_mask, to_coco, to_csv, write_export
from irs.geometry import fit_mask, mask_box, mask_centroid, rle_encode
from irs.query import parse_query
from irs.records import Match, SearchResult, Segment


def segment(mask: np.ndarray, index: int = 0) -> Segment:
    return Segment(
        bbox=mask_box(mask),
        centroid=mask_centroid(mask),
        area=float(mask.mean()),
        mask_rle=rle_encode(mask),
        mask_shape=mask.shape,
        index=index,
    )


def results() -> list[SearchResult]:
    """Two results for "a red circle left of a blue square": masks stored at 4x6, the images 8x12 and 12x18."""
    parsed = parse_query("a red circle left of a blue square")
    left = np.zeros((4, 6), bool)
    left[1:3, 0:2] = True
    right = np.zeros((4, 6), bool)
    right[0:4, 4:6] = True
    matches = [Match("a red circle", segment(left), {"score": 0.7}), Match("a blue square", segment(right, 1), {})]
    parts = {"image": 0.5, "segment": 0.6, "fused": 0.58}
    return [
        SearchResult("/g/a.png", "a" * 64, 0.58, parts, matches[0].segment, matches=matches, parsed=parsed),
        SearchResult("/g/b.png", "b" * 64, 0.41, {"image": 0.41, "fused": 0.41}, None, parsed=parsed),
    ]


SIZES = {"a" * 64: (12, 8), "b" * 64: (18, 12)}


def test_rle_counts_are_cocos_column_major_runs_and_decode_back():
    # [[0, 1], [1, 1]] read column by column is 0,1,1,1: one zero, three ones
    assert rle_counts(np.array([[0, 1], [1, 1]], bool)) == [1, 3]
    assert rle_counts(np.array([[1, 0], [1, 0]], bool)) == [0, 2, 2]  # starts set: a zero-length first run
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (5, 3), (37, 64)):
        mask = rng.random(shape) > 0.6
        counts = rle_counts(mask)
        assert sum(counts) == mask.size and all(isinstance(c, int) for c in counts)
        assert np.array_equal(rle_mask(counts, shape), mask)


def test_coco_masks_are_scaled_to_the_original_size_and_decode_to_the_matched_segment():
    coco = json.loads(json.dumps(to_coco(results(), SIZES.get, lambda p: p.rsplit("/", 1)[1])))
    assert coco["images"] == [
        {"id": 1, "file_name": "a.png", "width": 12, "height": 8},
        {"id": 2, "file_name": "b.png", "width": 18, "height": 12},
    ]
    assert [c["name"] for c in coco["categories"]] == ["a red circle", "a blue square"]
    first, second = coco["annotations"]
    assert (first["image_id"], first["category_id"], second["category_id"]) == (1, 1, 2)
    assert first["segmentation"]["size"] == [8, 12]
    mask = rle_mask(first["segmentation"]["counts"], first["segmentation"]["size"])
    stored = results()[0].matches[0].segment.mask()
    assert np.array_equal(mask, fit_mask(stored, 8, 12))
    assert first["bbox"] == [0, 2, 4, 4] and first["area"] == 16 == int(mask.sum())
    assert second["bbox"] == [8, 0, 4, 8]  # the right third of a 12-wide image, full height
    assert first["score"] == 0.7 and second["score"] == 0.58  # the phrase's own score, else the image's
    assert all(a["iscrowd"] == 0 for a in coco["annotations"])


def test_coco_skips_images_no_longer_indexed():
    coco = to_coco(results(), {"a" * 64: (12, 8)}.get)
    assert [i["file_name"] for i in coco["images"]] == ["/g/a.png"]


def test_csv_has_a_header_and_one_row_per_result():
    rows = list(csv.DictReader(io.StringIO(to_csv(results()))))
    assert [r["rank"] for r in rows] == ["1", "2"] and [r["path"] for r in rows] == ["/g/a.png", "/g/b.png"]
    assert float(rows[0]["segment"]) == 0.6 and rows[1]["segment"] == ""  # parts missing from a result: empty
    assert [float(rows[0][k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1")] == pytest.approx(
        [0, 0.25, 1 / 3, 0.75]
    )
    assert rows[1]["box_x0"] == ""


def test_write_export_picks_the_format_from_the_name(tmp_path):
    assert write_export(tmp_path / "r.csv", results(), SIZES.get) == ".csv"
    assert write_export(tmp_path / "r.json", results(), SIZES.get) == ".json"
    assert write_export(tmp_path / "r.COCO.json", results(), SIZES.get) == ".coco.json"
    assert json.loads((tmp_path / "r.json").read_text())[0]["path"] == "/g/a.png"
    assert len(json.loads((tmp_path / "r.COCO.json").read_text())["annotations"]) == 2
    with pytest.raises(ValueError, match=r"r\.txt: cannot tell the export format"):
        export_format(tmp_path / "r.txt")


def test_export_text_is_what_the_file_would_hold(tmp_path):
    results = [SearchResult("/photos/a.jpg", "a" * 64, 0.5, {"fused": 0.5}, None, ["/photos/a.jpg"])]
    for name in ("r.csv", "r.json", "r.coco.json"):
        fmt = write_export(tmp_path / name, results, lambda sha: (10, 10))
        assert (tmp_path / name).read_text() == export_text(fmt, results, lambda sha: (10, 10))
    with pytest.raises(ValueError, match="unknown export format '.txt'"):
        export_text(".txt", results, lambda sha: None)
