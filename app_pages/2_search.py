import streamlit as st

import views
from irs.confidence import GOOD
from irs.load import check_image_path

idx = views.page("Search")
s = idx.settings

K = 12  # results shown unless the address says otherwise
UPLOADS = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]

query = views.query_box(idx, "query")
k = st.slider("Results", 4, 48, max(4, round(views.from_address("k", K, 4, 48) / 4) * 4), step=4)
with st.expander("Fusion weights and advanced options"):
    columns = st.columns(3)
    weights: dict[str, float] = {
        name: columns[col].slider(label, low, high, views.from_address(name, getattr(s, name), low, high), step)
        for name, label, low, high, step, col in views.WEIGHTS
    }
    for name, label, low, high in views.POOLS:
        start = int(views.from_address(name, getattr(s, name), low, high))
        weights[name] = columns[2].number_input(label, low, high, start, 10)
    st.caption(
        "fused = whole image × image similarity + best segments × (similarity − position and relation "
        "penalties) − negative terms. See the README for the exact formula."
    )
# the object's own colours stay visible by default: an outline and a tag, no fill over what was asked for
d1, d2, d3 = st.columns(3)
fill = d1.checkbox("Fill", value=False, help="Tint each matched segment faintly in its phrase's colour")
outline = d2.checkbox("Outline", value=True)
box = d3.checkbox("Box", value=False)

upload = st.file_uploader("…or search by image (mixed with the query text, if any)", type=UPLOADS)
image_path = st.text_input(
    "…or by an image file on this computer",
    st.query_params.get("image", ""),
    placeholder="/path/to/photo.jpg",
    key="image_path",
)
# an indexed image (or one of its segments) chosen with "Similar": ?like=SHA256&segment=N
like = st.query_params.get("like", "")
like_path = next(iter(idx.paths_of(like)), "") if like else ""
like_segment = st.query_params.get("segment")
like_segment = int(like_segment) if like_segment and like_segment.isdigit() else None
if like_path:
    left, right = st.columns([4, 1])
    if like_segment is not None:  # a segment's vector alone: the query text does not mix in
        left.caption(f"Images with a segment like #{like_segment} of {idx.relative_path(like_path)}")
    else:
        left.caption(f"Images like {idx.relative_path(like_path)}" + (f" and “{query}”" if query.strip() else ""))
    if right.button("Clear image", key="clear-like"):
        st.query_params.pop("like", None)
        st.query_params.pop("segment", None)
        st.rerun()

views.require_images(idx)  # after the controls, so the page looks the same before and after indexing
image_path = image_path.strip()
if image_path:
    problem = check_image_path(image_path, s.allowed_roots)
    if problem:
        st.error(problem)
        st.stop()
if not query.strip() and upload is None and not image_path and not like_path:
    st.info("Type what you are looking for, e.g. *a red circle on the left* or *a dog left of a bicycle*.")
    st.stop()
# the page's address now reproduces this search: the query, k, and every weight and pool not at its default
# (an uploaded image cannot be: it lives in this browser session only)
views.to_address(
    {"q": query, "k": k, "image": image_path, **weights},
    {"q": "", "k": K, "image": "", **{name: getattr(s, name) for name in weights}},
)

# the image searched by: one chosen with "Similar" (the latest click wins until cleared), else an upload,
# else a path
image: str | bytes | None = like_path or (upload.getvalue() if upload is not None else image_path) or None
image_id = (like_path, like_segment) if like_path else upload.file_id if upload is not None else image_path
key = (query, k, tuple(sorted(weights.items())), image_id)
if st.session_state.get("search_key") != key:  # search once per change, not on every rerun
    st.session_state["search_key"] = key
    if like_path and like_segment is not None:
        st.session_state["results"] = views.similar(idx, like, like_segment, k)
    elif image is not None:
        st.session_state["results"] = views.search_image(idx, image, query, k, s.replace(**weights))
    else:
        st.session_state["results"] = views.search(idx, query, k, s.replace(**weights))
results = st.session_state["results"]

if not results:
    st.warning(f"Nothing found for “{query}”.")
    st.stop()
parsed = results[0].parsed
if not results[0].confidence >= GOOD:  # NaN (not computable) counts as weak too
    st.warning(
        f"No good match for “{query}”: even the best result is weak ({views.confidence_text(results[0].confidence)}; "
        "0.5 is the line between a good and a weak match). What you asked for may not be in these images."
    )
st.markdown(
    f"**Parsed:** {parsed.describe()}<br>{views.legend([p.text for p in parsed.phrases], fill)}",
    unsafe_allow_html=True,
)

views.export_buttons(idx, results, "irs-results")

for n, result, column in views.grid(results, 4):
    with column:
        image = views.overlay(idx, result, views.THUMB, fill, outline, box)
        if image is not None:
            st.image(image, width="stretch")
        st.markdown(
            f"**{n + 1}. {result.score:.3f}** · {idx.relative_path(result.path)} · "
            f"{views.confidence_text(result.confidence)}"
        )
        st.caption(views.parts_text({k: v for k, v in result.parts.items() if k != "fused"}))
        left, right = st.columns(2)
        views.details_button(result, left)
        if right.button("Similar", key=f"like-{result.sha256}", help="Images like this one"):
            views.find_similar(result.sha256)
views.open_details(idx, results, fill, outline, box)
