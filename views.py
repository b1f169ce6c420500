"""What every Streamlit page shares: the cached index and job, the demo notice, thumbnails with overlays.

The pages (app.py lists them: home.py and app_pages/) stay thin; the work is in the irs library, which never
imports Streamlit.
"""

from __future__ import annotations

import html
import io
import math
import mimetypes
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from irs import Index, load_settings
from irs.confidence import GOOD
from irs.export import export_text
from irs.jobs import IndexJob
from irs.judgments import Judgments, JudgmentsError
from irs.load import LoadError, read_file
from irs.locks import DatabaseBusy
from irs.models import WeightsError
from irs.overlay import PALETTE, draw_segments, tag, thumbnail
from irs.records import SearchResult
from irs.settings import Settings, SettingsError
from irs.store import ManifestMismatch, StoreError

THUMB = 384  # grid thumbnails
# example queries that suit the models in use: the demo CLIP knows only the synthetic shapes and colours
EXAMPLES = {
    "demo": (
        "a red circle",
        "a blue square on the left",
        "a green star above a yellow heart",
        "a pink ring and a black cross",
    ),
    "": ("a red car on the left", "a dog to the left of a bicycle", "a person in the centre", "cat -dog"),
}
LARGE = 1024  # the expanded view: never the full-size original
# the search controls of the Search and Annotate pages: setting, label, range, step, column of three
WEIGHTS = [
    ("weight_image", "Whole image", 0.0, 1.0, 0.05, 0),
    ("weight_segment", "Best segments", 0.0, 1.0, 0.05, 0),
    ("weight_position", "Position penalty", 0.0, 2.0, 0.05, 1),
    ("weight_relation", "Relation penalty", 0.0, 2.0, 0.05, 1),
    ("weight_negative", "Negative terms", 0.0, 2.0, 0.05, 1),
    ("weight_all", "Every phrase must match (soft AND)", 0.0, 1.0, 0.05, 2),
]
POOLS = [("image_pool", "Image candidates", 10, 10_000), ("segment_pool", "Segment candidates", 10, 50_000)]
# what the results can be downloaded as: label, irs.export format, MIME type
EXPORTS = (
    ("Export CSV", ".csv", "text/csv"),
    ("Export JSON", ".json", "application/json"),
    ("Export COCO masks", ".coco.json", "application/json"),
)

T = TypeVar("T")


def _setup() -> None:
    """Streamlit's page configuration; must come before anything else is drawn."""
    st.set_page_config(page_title="irs: image retrieval with segments", layout="wide")


def page(title: str, needs_images: bool = False) -> Index:
    """What every page starts with: configuration, the open index, the title, the profile notice.

    With `needs_images`, an empty index ends the page with a pointer to the Index page."""
    _setup()
    idx = _index()
    st.title(title)
    _demo_notice(idx)
    if needs_images:
        require_images(idx)
    return idx


def require_images(idx: Index) -> None:
    """Stop the page with a pointer to the Index page when nothing is indexed yet."""
    if idx.image_count() == 0:
        st.warning("The index is empty: add a folder on the Index page first.")
        st.stop()


@st.cache_resource(show_spinner="Opening the index…")
def _open(db: str) -> Index:
    return Index.open(db)


@st.cache_resource
def _job(db: str) -> IndexJob:
    return IndexJob(_open(db))


@st.cache_resource
def _judgments(db: str) -> Judgments:
    return Judgments(db)


def database() -> str:
    """The database the app opens: IRS_DB, or the default under the user's data folder."""
    return load_settings().db


def _index() -> Index:
    """The open index, or a clear message and a stopped page."""
    try:
        idx = _open(database())
    except (SettingsError, ManifestMismatch, WeightsError, StoreError) as err:
        st.error(f"The index at {database()} cannot be opened: {err}")
        st.stop()
    if idx.problem:  # vectors lost: never let that look like "nothing found"
        st.warning(idx.problem)
    return idx


def search(idx: Index, query: str, k: int, settings: Settings | None = None) -> list[SearchResult]:
    """Index.search, or the reason it cannot run (an empty query, bad weights, no GPU) and a stopped page."""
    return _or_stop(lambda: idx.search(query, k, settings=settings))


def search_image(idx: Index, image: str | bytes, text: str, k: int, settings: Settings) -> list[SearchResult]:
    """Index.search_image (text mixed in when given), or the reason it cannot run and a stopped page."""
    return _or_stop(lambda: idx.search_image(image, text.strip() or None, k, settings=settings))


def _or_stop(run: Callable[[], list[SearchResult]]) -> list[SearchResult]:
    """The results of a search, or its refusal (an unreadable image, an empty query, bad weights, no GPU, a
    busy or unreachable store) shown as an error that ends the page."""
    try:
        return run()
    except (LoadError, ValueError, WeightsError, StoreError, DatabaseBusy) as err:
        st.error(str(err))
        st.stop()


def job() -> IndexJob:
    """The app's one background indexing job for the database (call after `page`, which opens the index)."""
    return _job(database())


def judgments() -> Judgments:
    """The judgment store of the database, or a clear message and a stopped page when it cannot be opened
    (written by a newer irs, damaged)."""
    try:
        return _judgments(database())
    except (JudgmentsError, sqlite3.Error) as err:
        st.error(f"The judgments in {Path(database()) / 'judgments.sqlite'} cannot be opened: {err}")
        st.stop()


def _demo_notice(idx: Index) -> None:
    """Say when the models are the demo or test ones, so nobody takes their rankings for real CLIP's."""
    if idx.settings.profile == "demo":
        st.info(
            "Demo model: a small CLIP trained in this repository on synthetic coloured shapes, with the "
            "weight-free colour segmenter. It understands shapes, colours and positions, nothing else. "
            "Set IRS_PROFILE=default for real CLIP and Segment Anything weights.",
            icon=":material/science:",
        )
    elif idx.settings.profile == "test":
        st.warning("Test profile: tiny random models. Rankings mean nothing.", icon=":material/bug_report:")


def picture(idx: Index, path: str, sha256: str, size: int) -> Image.Image | None:
    """A cached thumbnail, or None (with a note) when the file cannot be read any more."""
    try:
        return thumbnail(path, sha256, size, Path(idx.settings.db) / "thumbs", idx.settings.max_pixels)
    except Exception as err:  # a file moved or broken since indexing
        st.caption(f"{Path(path).name}: cannot show ({err})")
        return None


def overlay(
    idx: Index, result: SearchResult, size: int, fill: bool = False, outline: bool = True, box: bool = False
) -> bytes | None:
    """The result's picture with the segment of each query phrase outlined and tagged 1, 2, … in phrase
    order, as the legend's ① ② … (JPEG bytes).

    Drawn once per result and look, then cached: reruns (every widget change) only send it again."""
    indices = tuple(m.segment.index if m.segment is not None else -1 for m in result.matches)
    if not result.matches and result.segment is not None:
        indices = (result.segment.index,)
    picture = _overlay_jpeg(idx.settings.db, result.path, result.sha256, size, indices, fill, outline, box)
    if picture is None:
        st.caption(f"{Path(result.path).name}: cannot show (moved or unreadable since indexing)")
    return picture


@st.cache_data(max_entries=512, show_spinner=False)
def _overlay_jpeg(
    db: str, path: str, sha256: str, size: int, indices: tuple[int, ...], fill: bool, outline: bool, box: bool
) -> bytes | None:
    idx = _open(db)
    try:
        image = thumbnail(path, sha256, size, Path(db) / "thumbs", idx.settings.max_pixels)
    except Exception:  # a file moved or broken since indexing
        return None
    # a phrase matched by the whole image keeps its place (None), so tags and fill colours stay the phrases'
    segments = [(idx.segment(sha256, i) if i >= 0 else None, str(n)) for n, i in enumerate(indices, 1)]
    out = io.BytesIO()
    draw_segments(image, segments, fill, outline, box).save(out, "JPEG", quality=90)
    return out.getvalue()


DETAILS = "details"  # session key: the sha256 of the result whose Details dialog is open


def details_button(result: SearchResult, column: DeltaGenerator) -> None:
    """A result's Details button: it opens the dialog, which stays open across reruns until dismissed."""
    if column.button("Details", key=f"details-{result.sha256}", help="The larger view, every match, the file"):
        st.session_state[DETAILS] = result.sha256


def open_details(idx: Index, results: list[SearchResult], fill: bool, outline: bool, box: bool) -> None:
    """Show the Details dialog of the result chosen with its button, if any (built only while open)."""
    chosen = st.session_state.get(DETAILS)
    result = next((r for r in results if r.sha256 == chosen), None)
    if result is not None:
        _details_dialog(idx, result, fill, outline, box)


def _close_details() -> None:
    st.session_state.pop(DETAILS, None)


@st.dialog("Details", width="large", on_dismiss=_close_details)
def _details_dialog(idx: Index, result: SearchResult, fill: bool, outline: bool, box: bool) -> None:
    # the picture beside its facts, so both fit one screen whatever the picture's shape
    picture, facts = st.columns([3, 2])
    large = overlay(idx, result, LARGE, fill, outline, box)
    if large is not None:
        picture.image(large, width="stretch")
    facts.markdown(
        f"**{html.escape(idx.relative_path(result.path))}**  \nscore {result.score:.3f} · "
        f"{confidence_text(result.confidence)}"
    )
    facts.caption(f"{result.path} · {_size_text(idx, result.sha256)}")
    for i, match in enumerate(result.matches):
        where = "whole image" if match.segment is None else "box " + ", ".join(f"{v:.2f}" for v in match.segment.bbox)
        facts.markdown(
            f"{tag(i)} **{html.escape(match.phrase)}** — {where}  \n{confidence_text(match.confidence)} · "
            f"{parts_text(match.parts)}"
        )
        if match.segment is not None and facts.button(
            f"Find images with a segment like {tag(i)}", key=f"details-like-{i}", help="Compares segment vectors"
        ):
            find_similar(result.sha256, match.segment.index)
    if len(result.paths) > 1:
        facts.caption("Same picture also at: " + ", ".join(idx.relative_path(p) for p in result.paths[1:]))
    if facts.button("Find similar images", key="details-like", type="primary", help="Compares whole-image vectors"):
        find_similar(result.sha256)
    here = os.path.isfile(result.path)  # moved or deleted since indexing: nothing to open
    facts.download_button(
        "Open the original" if here else "Original moved or deleted",
        data=lambda: read_file(result.path) if here else b"",
        disabled=not here,
        file_name=Path(result.path).name,
        mime=mimetypes.guess_type(result.path)[0] or "application/octet-stream",
        on_click="ignore",
        help="The file as indexed, full size",
    )


def _size_text(idx: Index, sha256: str) -> str:
    """`1920 × 1080 px`, or nothing when the size is not known."""
    size = idx.image_size(sha256)
    return f"{size[0]} × {size[1]} px" if size else ""


def find_similar(sha256: str, segment: int | None = None) -> None:
    """Search by an indexed image (or one of its segments): the address says so (`?like=SHA&segment=N`),
    then the page reruns (closing any dialog)."""
    _close_details()
    st.query_params["like"] = sha256
    if segment is None:
        st.query_params.pop("segment", None)
    else:
        st.query_params["segment"] = str(segment)
    st.rerun()


def similar(idx: Index, sha256: str, segment: int | None, k: int) -> list[SearchResult]:
    """Index.similar, or the reason it cannot run and a stopped page."""
    return _or_stop(lambda: idx.similar(sha256, segment, k))


def export_buttons(idx: Index, results: list[SearchResult], stem: str) -> None:
    """Download buttons for the results as CSV, JSON and COCO run-length masks (each made only when
    clicked); the same files as `irs search --export`."""
    for column, (label, fmt, mime) in zip(st.columns([1] * len(EXPORTS) + [2]), EXPORTS, strict=False):
        column.download_button(
            label,
            data=lambda fmt=fmt: export_text(fmt, results, idx.image_size, idx.relative_path),
            file_name=f"{stem}{fmt}",
            mime=mime,
            on_click="ignore",
            key=f"export{fmt}",
        )


def legend(phrases: list[str], fill: bool = False) -> str:
    """The phrases with the tags the pictures show: `① a blue square · ② a purple heart` (Markdown/HTML);
    with the fill on, each tag also carries the fill's colour."""
    parts = []
    for i, phrase in enumerate(phrases):
        swatch = f"<span style='color:rgb{PALETTE[i % len(PALETTE)]}'>■</span> " if fill else ""
        parts.append(f"{swatch}{tag(i)} {html.escape(phrase)}")  # the query is shown as HTML
    return " · ".join(parts)


def grid(items: Sequence[T], per_row: int) -> Iterator[tuple[int, T, DeltaGenerator]]:
    """Each item with its 0-based position and the column to draw it in: a new row of columns every
    `per_row` items, so the page's order (what the keyboard and screen readers follow) is the items' order."""
    for first in range(0, len(items), per_row):
        row = zip(st.columns(per_row), items[first : first + per_row], strict=False)
        for n, (column, item) in enumerate(row, first):
            yield n, item, column


def examples(idx: Index) -> tuple[str, ...]:
    """Example queries for the active profile (the first is also the query box's placeholder)."""
    return EXAMPLES.get(idx.settings.profile, EXAMPLES[""])


def query_box(idx: Index, key: str, label: str = "Query") -> str:
    """A query box with the active profile's examples as buttons under it; its first value comes from the
    address (`?q=`), so links and the home page's search box land on a filled-in query."""
    if key not in st.session_state:
        st.session_state[key] = st.query_params.get("q", "")
    query = st.text_input(label, key=key, placeholder=examples(idx)[0])
    st.pills("Try", examples(idx), key=f"{key}-example", on_change=_use_example, args=(key,))
    return query


def _use_example(key: str) -> None:
    chosen = st.session_state.get(f"{key}-example")
    if chosen:
        st.session_state[key] = chosen


def from_address(name: str, default: float, low: float, high: float) -> float:
    """A number from the page's address (`?name=value`); `default` when it is absent, malformed or out of range."""
    try:
        value = float(st.query_params.get(name, ""))
    except ValueError:
        return default
    return value if low <= value <= high else default  # NaN fails both comparisons


def to_address(values: dict[str, str | float], defaults: dict[str, str | float]) -> None:
    """Put the values that differ from their defaults in the page's address, so that the address reproduces
    the page; values back at their default leave it (short links)."""
    for name, value in values.items():
        if value == defaults.get(name):
            st.query_params.pop(name, None)
        else:
            text = value if isinstance(value, str) else f"{value:g}"
            if st.query_params.get(name) != text:
                st.query_params[name] = text


def confidence_text(confidence: float) -> str:
    """`confidence 0.93`, with "weak match" below the good/weak line (and when none could be computed)."""
    shown = f"confidence {confidence:.2f}" if math.isfinite(confidence) else "confidence —"
    return shown if confidence >= GOOD else shown + " · **weak match**"


def parts_text(parts: dict[str, float]) -> str:
    """Score parts as one line: `image 0.312 · segment 0.287`."""
    return " · ".join(f"{k} {v:.3f}" for k, v in parts.items())
