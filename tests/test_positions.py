"""Segment positions in memory: always what the catalog holds, after adds, replacements and removals made
through this store or another process's."""

import numpy as np

from irs.positions import IDX_BITS
from irs.records import Segment, SegmentedImage
from irs.store import Store


def positions_by_image(store: Store) -> dict[str, list[tuple]]:
    """sha256 -> (index, box, centre, area) of every segment, as the in-memory table has them."""
    table = store.current_positions()
    return {
        sha: [(s.index, s.bbox, s.centroid, s.area) for s in map(table.segment, table.image_rows(sha))]
        for sha in table.shas
        if len(table.image_rows(sha))
    }


def positions_in_catalog(store: Store) -> dict[str, list[tuple]]:
    rows = store.catalog.sql.execute(
        "SELECT sha256, idx, x0, y0, x1, y1, cx, cy, area FROM segments ORDER BY sha256, idx"
    )
    out: dict[str, list[tuple]] = {}
    for sha, idx, x0, y0, x1, y1, cx, cy, area in rows:
        out.setdefault(sha, []).append((idx, (x0, y0, x1, y1), (cx, cy), area))
    return out


def segmented(sha: str, xs: list[float], dim: int = 4) -> SegmentedImage:
    segments = [Segment((x, 0.0, x + 0.1, 0.2), (x + 0.05, 0.1), 0.02, b"", (0, 0), index=i) for i, x in enumerate(xs)]
    return SegmentedImage(sha, segments, np.eye(len(xs), dim, dtype=np.float32))


def test_positions_follow_adds_replacements_and_removals(index, scenes_folder, tmp_path):
    index.add_folder(scenes_folder)
    store = index.store
    assert positions_by_image(store) == positions_in_catalog(store)
    # the last image written is replaced by as many segments: SQLite may give the same rowids again
    last = store.catalog.sql.execute("SELECT sha256 FROM segments ORDER BY rowid DESC LIMIT 1").fetchone()[0]
    count = len(positions_in_catalog(store)[last])
    dim = store.manifest["dim"]
    store.add_segments([segmented(last, [0.5 + i / 100 for i in range(count)], dim)])
    assert positions_by_image(store) == positions_in_catalog(store)
    assert positions_by_image(store)[last][0][1] == (0.5, 0.0, 0.6, 0.2)

    # another process (here: another Store on the same folder) writes; this one sees it at its next read
    other = Store(index.settings)
    other.add_segments([segmented(last, [0.25], dim)])
    assert positions_by_image(store) == positions_in_catalog(store)
    assert len(positions_by_image(store)[last]) == 1
    other.forget_paths(index.paths_of(last))
    other.collect_garbage()
    other.close()
    assert last not in positions_by_image(store)
    assert positions_by_image(store) == positions_in_catalog(store)


def test_segment_ids_map_to_their_rows_and_unknown_ids_to_none(index, scenes_folder):
    index.add_folder(scenes_folder)
    table = index.store.current_positions()
    sha = table.shas[0]
    rows = table.rows([f"{sha}:0", f"{sha}:999", "f" * 64 + ":0"])
    assert rows[0] >= 0 and table.segment(int(rows[0])).index == 0
    assert list(rows[1:]) == [-1, -1]


def test_searches_after_a_replacement_use_the_new_positions(index, scenes_folder):
    """A search right after another process moved an image's segments ranks with where they are now."""
    index.add_folder(scenes_folder)
    before = index.search("a red circle", k=1)[0]
    other = Store(index.settings)
    moved = [
        Segment((0.8, 0.8, 0.9, 0.9), (0.85, 0.85), 0.01, s.mask_rle, s.mask_shape, index=s.index)
        for s in index.segments_of(before.sha256)
    ]
    vectors = np.stack([v for _, _, v in index.store.segment_vectors([before.sha256])])
    other.add_segments([SegmentedImage(before.sha256, moved, vectors)])
    other.close()
    again = index.search("a red circle", k=8)
    match = next(r for r in again if r.sha256 == before.sha256)
    assert match.segment.centroid == (0.85, 0.85)


def test_image_spans_are_the_rows_of_each_image(index, scenes_folder):
    index.add_folder(scenes_folder)
    table = index.store.current_positions()
    shas = [*table.shas, "0" * 64, table.shas[0]]  # an unknown image and a repeat
    starts, ends = table.image_spans(shas)
    for sha, start, end in zip(shas, starts.tolist(), ends.tolist()):
        number = table.numbers.get(sha)
        assert sorted(range(start, end)) == [r for r, key in enumerate(table.keys) if key >> IDX_BITS == number]
    assert ends[-2] == starts[-2]
    assert sum((ends - starts)[:-2]) == len(table.keys)  # every row belongs to one image


def test_a_segment_pool_groups_its_hits_by_image_best_first_and_leaves_out_unlisted_segments(index, scenes_folder):
    index.add_folder(scenes_folder)
    vector = index.embedder.texts(["a red circle"])[0]
    pool = index.store.query_segments(vector, 50)
    ids, sims = index.store.vectors.segment_neighbours(vector, 50)
    assert np.array_equal(pool.returned, sims) and len(pool.rows) == len(ids)  # every one listed here
    shas, groups = pool.by_image()
    assert sorted(shas) == sorted({i.rpartition(":")[0] for i in ids}) and len(set(shas)) == len(shas)
    for sha, hits in zip(shas, groups):
        expected = [int(i.rpartition(":")[2]) for i in ids if i.startswith(sha)]  # best first, as Chroma answered
        assert [s.index for s in pool.segments(hits)] == expected
        assert list(pool.similarities[hits]) == sorted(pool.similarities[hits], reverse=True)
    # a vector whose catalog rows are gone (a stray vector) is not a hit, but still counts in `returned`
    gone = shas[0]
    with index.catalog.transaction() as sql:
        sql.execute("DELETE FROM segments WHERE sha256=?", (gone,))
    again = index.store.query_segments(vector, 50)
    assert gone not in again.by_image()[0] and len(again.returned) == len(sims)
