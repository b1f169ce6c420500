"""The index pipeline: incremental, resumable, bad files recorded, nothing lost or doubled."""

import io
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irs.index import Index
from irs.synthetic import write_folder


def counts(index: Index) -> tuple[int, int, int, int]:
    """(files, images, image vectors, segment vectors), checking SQLite and Chroma agree."""
    s = index.stats()
    assert index.store.vectors.image_count() == s.images
    assert index.store.vectors.segment_count() == s.segments
    return s.files, s.images, index.store.vectors.image_count(), index.store.vectors.segment_count()


def test_index_then_search_finds_segments(index, scenes_folder, tmp_path):
    report = index.add_folder(scenes_folder)
    assert (report.found, report.added, report.segmented, report.failed) == (8, 8, 8, [])
    files, images, vecs, segs = counts(index)
    assert (files, images, vecs) == (8, 8, 8) and segs >= 8
    results = index.search("a red circle", k=5)
    assert len(results) == 5
    assert all(r.path.startswith(str(scenes_folder)) for r in results)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    for r in results:
        assert set(r.parts) == {"image", "segment", "fused"}
        assert r.segment is not None and r.segment.mask().any()


def test_rerun_skips_unchanged(index, scenes_folder):
    index.add_folder(scenes_folder)
    before = counts(index)
    again = index.add_folder(scenes_folder)
    assert (again.unchanged, again.added, again.segmented) == (8, 0, 0)
    assert counts(index) == before


def test_add_modify_delete_rename_duplicate(index, tmp_path):
    folder = tmp_path / "photos"
    scenes = write_folder(folder, 5, seed=11, side=128)
    index.add_folder(folder)
    assert counts(index)[:3] == (5, 5, 5)

    # add one file, and a byte-identical copy of another (a duplicate: one image, two paths)
    write_folder(tmp_path / "more", 1, seed=99, side=128)
    shutil.copy(tmp_path / "more" / "scene_00000.png", folder / "new.png")
    shutil.copy(folder / "scene_00001.png", folder / "copy_of_1.png")
    r = index.add_folder(folder)
    assert (r.added, r.reused, r.unchanged) == (1, 1, 5)
    assert counts(index)[:3] == (7, 6, 6)
    dup = [res for res in index.search("shape", k=10) if "copy_of_1.png" in " ".join(res.paths)]
    assert len(dup) == 1 and len(dup[0].paths) == 2  # one result, both paths

    # modify a file: new bytes, old vectors replaced
    Image.fromarray(np.flipud(scenes[2].image)).save(folder / "scene_00002.png")
    r = index.add_folder(folder)
    assert (r.added, r.unchanged) == (1, 6)
    assert counts(index)[:3] == (7, 6, 6)

    # rename: the same bytes at a new path reuse the stored work
    (folder / "scene_00003.png").rename(folder / "renamed.png")
    r = index.add_folder(folder)
    assert (r.added, r.reused, r.removed, r.segmented) == (0, 1, 1, 0)
    assert counts(index)[:3] == (7, 6, 6)

    # delete: the path goes; its image goes too once no path refers to it
    (folder / "scene_00004.png").unlink()
    (folder / "copy_of_1.png").unlink()
    r = index.add_folder(folder)
    assert r.removed == 2
    files, images, vecs, _ = counts(index)
    assert (files, images, vecs) == (5, 5, 5)
    paths = {p for res in index.search("shape", k=10) for p in res.paths}
    assert str(folder / "scene_00004.png") not in paths and str(folder / "scene_00001.png") in paths


def test_bad_files_are_recorded_and_the_batch_goes_on(index, tmp_path):
    folder = tmp_path / "mixed"
    write_folder(folder, 3, seed=2, side=96)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (folder / "cut.jpg").write_bytes(buf.getvalue()[:300])
    report = index.add_folder(folder)
    assert report.added == 3
    reasons = {b.path.rsplit("/", 1)[1]: b.reason for b in index.errors()}
    assert set(reasons) == {"empty.jpg", "notes.jpg", "cut.jpg"}
    assert "empty" in reasons["empty.jpg"] and "not an image" in reasons["notes.jpg"]
    assert "truncated" in reasons["cut.jpg"]
    # fixing a file clears its error on the next run
    Image.new("RGB", (20, 20)).save(folder / "notes.jpg", "JPEG")
    index.add_folder(folder)
    assert {b.path.rsplit("/", 1)[1] for b in index.errors()} == {"empty.jpg", "cut.jpg"}


def test_whole_images_are_searchable_before_segmentation(index, scenes_folder):
    report = index.add_folder(scenes_folder, segment=False)
    assert report.segmented == 0 and index.stats().segments == 0
    results = index.search("a blue square", k=3)
    assert len(results) == 3 and all(r.segment is None for r in results)
    assert all(
        r.parts["segment"] == pytest.approx(r.parts["image"], abs=1e-5) for r in results
    )  # whole image stands in
    report = index.add_folder(scenes_folder)
    assert report.segmented == 8 and all(r.segment is not None for r in index.search("a blue square", k=3))


def test_stop_then_resume(index, scenes_folder):
    stop = threading.Event()
    seen = []

    def progress(p):
        seen.append(p)
        if p.stage == "segment" and p.done == 3:
            stop.set()

    report = index.add_folder(scenes_folder, progress=progress, stop=stop)
    assert report.stopped and report.segmented == 3
    assert str(seen[-1]).startswith("segment: 3/8 images")
    report = index.add_folder(scenes_folder)
    assert not report.stopped and (report.unchanged, report.segmented) == (8, 5)
    assert index.stats().segmented == 8


def test_two_folders_do_not_remove_each_other(index, tmp_path):
    write_folder(tmp_path / "a", 2, seed=1, side=96)
    write_folder(tmp_path / "b", 2, seed=2, side=96)
    index.add_folder(tmp_path / "a")
    index.add_folder(tmp_path / "b")
    assert index.stats().files == 4


def test_reopen_without_flags_uses_the_databases_settings(index, scenes_folder, monkeypatch):
    index.add_folder(scenes_folder, segment=False)
    db = index.settings.db
    index.close()
    for key in list(__import__("os").environ):
        if key.startswith("IRS_"):
            monkeypatch.delenv(key)
    with Index.open(db) as again:  # irs.toml in the database carries the test profile
        assert again.settings.profile == "test"
        assert len(again.search("anything", k=2)) == 2


# ---- one file's failure is that file's failure ----------------------------------------------------


def reasons(index: Index) -> dict[str, str]:
    return {Path(b.path).name: b.reason for b in index.errors()}


@pytest.mark.timeout(60)
def test_a_fifo_named_like_an_image_is_listed_not_read(index, tmp_path):
    folder = tmp_path / "photos"
    write_folder(folder, 2, seed=8, side=96)
    os.mkfifo(folder / "x.jpg")  # reading it would block forever
    report = index.add_folder(folder, segment=False)
    assert report.added == 2
    assert reasons(index) == {"x.jpg": "not a regular file (FIFO)"}


@pytest.mark.timeout(60)
def test_a_decoder_that_hangs_is_abandoned_after_decode_timeout(test_settings, tmp_path, monkeypatch):
    import irs.load

    folder = tmp_path / "photos"
    write_folder(folder, 3, seed=9, side=96)
    real = irs.load.decode_image

    def stuck_on_one(data, max_pixels, max_side, path="", sha256=""):
        if path.endswith("scene_00001.png"):
            time.sleep(30)
        return real(data, max_pixels, max_side, path, sha256)

    monkeypatch.setattr(irs.load, "decode_image", stuck_on_one)
    with Index(test_settings.replace(decode_timeout=0.5)) as index:
        started = time.monotonic()
        report = index.add_folder(folder, segment=False)
        assert time.monotonic() - started < 20
        assert report.added == 2
        assert reasons(index) == {"scene_00001.png": "reading and decoding took over 0.5 s (decode_timeout); abandoned"}


def is_flat_white(pixels) -> bool:
    return bool(pixels.amin() == pixels.amax() or all((c.amin() == c.amax()) for c in pixels) and pixels.max() > 1.5)


def test_a_batch_the_model_fails_on_is_retried_file_by_file(index, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    write_folder(folder, 5, seed=10, side=96)
    Image.new("RGB", (64, 64), (255, 255, 255)).save(folder / "white.png")
    real = index.embedder.encode_pixels
    calls = []

    def fails_on_white(pixels):
        calls.append(len(pixels))
        if any(is_flat_white(p) for p in pixels):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(pixels)

    monkeypatch.setattr(index.embedder, "encode_pixels", fails_on_white)
    report = index.add_folder(folder, segment=False)
    assert report.added == 5 and calls[0] == 6  # the whole batch first, then one by one
    assert reasons(index) == {
        "white.png": "embedding failed: RuntimeError: CUDA error: an illegal memory access was encountered"
    }
    assert index.stats().images == 5 and index.check().ok


def test_an_image_the_segmenter_fails_on_stays_pending_and_is_listed(test_settings, tmp_path, monkeypatch):
    import irs.index

    folder = tmp_path / "photos"
    write_folder(folder, 4, seed=12, side=96)
    Image.new("RGB", (64, 64), (0, 0, 0)).save(folder / "black.png")
    real = irs.index.segment_images

    def fails_on_black(segmenter, images, settings):
        if any(int(im.max()) == 0 for im in images):
            raise ValueError("no masks could be decoded")
        return real(segmenter, images, settings)

    monkeypatch.setattr(irs.index, "segment_images", fails_on_black)
    with Index(test_settings.replace(sam_batch=2)) as index:
        report = index.add_folder(folder)
        assert (report.added, report.segmented) == (5, 4)
        assert reasons(index) == {"black.png": "segmentation failed: ValueError: no masks could be decoded"}
        assert index.stats().segmented == 4 and index.check().ok
        monkeypatch.setattr(irs.index, "segment_images", real)  # fixed: the next run finishes it
        assert index.add_folder(folder).segmented == 1 and reasons(index) == {}


def test_an_image_whose_segment_crops_the_model_fails_on_is_listed_and_the_rest_stored(index, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    write_folder(folder, 4, seed=15, side=96)
    Image.new("RGB", (96, 96), (0, 0, 0)).save(folder / "black.png")
    index.add_folder(folder, segment=False)
    real, calls = index.embedder.encode_pixels, []

    def fails_on_black_crops(pixels):  # a crop of the black image is black and grey: nothing above 0
        calls.append(len(pixels))
        if any(float(p.max()) <= 0 for p in pixels):
            raise RuntimeError("out of memory")
        return real(pixels)

    monkeypatch.setattr(index.embedder, "encode_pixels", fails_on_black_crops)
    report = index.add_folder(folder)
    assert len(calls) > 5  # the whole batch first, then image by image
    assert report.segmented == 4
    assert reasons(index) == {"black.png": "embedding segments failed: RuntimeError: out of memory"}
    assert index.stats().segmented == 4 and index.check().ok


def test_allowed_roots_refuse_folders_and_links_that_leave_them(test_settings, tmp_path):
    allowed, outside = tmp_path / "Allowed", tmp_path / "elsewhere"
    write_folder(allowed, 2, seed=13, side=96)
    write_folder(outside, 1, seed=14, side=96)
    (allowed / "sneaky.png").symlink_to(outside / "scene_00000.png")
    (allowed / "sneaky-dir").symlink_to(outside, target_is_directory=True)
    with Index(test_settings.replace(allowed_roots=(str(allowed),))) as index:
        with pytest.raises(ValueError, match="outside the allowed folders"):
            index.add_folder(outside)
        report = index.add_folder(allowed, segment=False)
        assert report.added == 2
        listed = reasons(index)
        assert set(listed) == {"sneaky.png", "sneaky-dir"}
        assert all(r.startswith("outside the allowed folders") for r in listed.values())


@pytest.fixture(scope="module")
def scenes_index(tmp_path_factory, scenes_folder):
    """The scenes indexed with segments under the test profile (read-only for the tests that share it)."""
    from irs.settings import load_settings

    settings = load_settings({"profile": "test", "db": str(tmp_path_factory.mktemp("img") / "db")}, environ={})
    idx = Index(settings)
    idx.add_folder(scenes_folder)
    yield idx
    idx.close()


def test_find_similar_to_a_whole_image_ranks_that_image_first_at_about_1(scenes_index, scenes_folder):
    sha = scenes_index.search("a red circle", k=1)[0].sha256
    results = scenes_index.similar(sha, None, k=8)
    assert results[0].sha256 == sha and results[0].score == pytest.approx(1.0, abs=1e-3)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    # a segment's Find similar still compares segments
    assert scenes_index.similar(sha, 0, k=3)[0].matches[0].segment is not None


def test_an_indexed_query_image_ranks_itself_first(scenes_index, scenes_folder):
    for path in sorted(scenes_folder.glob("*.png"))[:3]:
        results = scenes_index.search_image(path, k=3)
        assert results[0].path == str(path) and results[0].score == pytest.approx(1.0, abs=1e-3)
        by_bytes = scenes_index.search_image(path.read_bytes(), k=3)
        assert [r.sha256 for r in by_bytes] == [r.sha256 for r in results]


def test_an_image_query_mixed_with_text_moves_with_the_weights(scenes_index, scenes_folder):
    path = sorted(scenes_folder.glob("*.png"))[0]
    text_only = scenes_index.search("a blue square", k=8, settings=scenes_index.settings.replace(weight_segment=0.0))
    mixed = scenes_index.search_image(path, "a blue square", k=8, image_weight=0.0)
    # with the image weighed 0 the mix is the text alone, ranked on whole images
    assert [r.sha256 for r in mixed] == [r.sha256 for r in text_only]
    assert scenes_index.search_image(path, "a blue square", k=1, text_weight=0.0)[0].path == str(path)
    assert mixed[0].parsed is not None and "a blue square" in mixed[0].parsed.text
    with pytest.raises(ValueError, match="both 0"):
        scenes_index.search_image(path, "a blue square", image_weight=0.0, text_weight=0.0)


def test_a_bad_query_image_names_the_file_and_the_reason(scenes_index, tmp_path):
    from irs.load import LoadError

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(LoadError, match=rf"{bad}: truncated or corrupt image"):
        scenes_index.search_image(bad)
    with pytest.raises(LoadError, match=f"{tmp_path / 'missing.png'}"):
        scenes_index.search_image(tmp_path / "missing.png")


def test_image_size_is_the_original_size(scenes_index, scenes_folder):
    result = scenes_index.search("a red circle", k=1)[0]
    assert scenes_index.image_size(result.sha256) == Image.open(result.path).size
    assert scenes_index.image_size("0" * 64) is None
