import streamlit as st

import views
from irs.overlay import draw_segments

PAGE = 12

idx = views.page("Browse", needs_images=True)
total = idx.image_count()

pages = max(1, -(-total // PAGE))
page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1)
for _, row, column in views.grid(idx.image_page((page - 1) * PAGE, PAGE), 6):
    sha, path = row.sha256, row.path
    with column:
        image = views.picture(idx, path, sha, 256)
        if image is not None:
            st.image(image, width="stretch")
        if st.button(idx.relative_path(path), key=f"open-{sha}", width="stretch"):
            st.session_state["browse"] = (sha, path)
            st.session_state.pop("similar", None)

chosen = st.session_state.get("browse")
if chosen:
    sha, path = chosen
    st.divider()
    st.subheader(idx.relative_path(path))
    segments = {seg.index: seg for seg in idx.segments_of(sha)}
    left, right = st.columns([2, 1])
    with right:
        st.caption(f"{len(segments)} segments · {path}")
        if st.button("Find similar images", key="similar-image", type="primary"):
            st.session_state["similar"] = ("the whole image", idx.similar(sha, None, 12))
        # one segment at a time: thirty masks drawn together hide each other and the picture
        selected = st.radio(
            "Segment",
            list(segments),
            format_func=lambda i: f"#{i} · area {segments[i].area:.1%} · IoU {segments[i].predicted_iou:.2f}",
            key=f"segment-{sha}",
        )
        if selected is None:
            st.caption("No segments stored for this image.")
        elif st.button(f"Find similar to segment #{selected}", key="similar-segment"):
            st.session_state["similar"] = (f"segment #{selected}", idx.similar(sha, selected, 12))
    with left:
        image = views.picture(idx, path, sha, views.LARGE)
        if image is not None:
            shown = [(segments[selected], f"#{selected}")] if selected is not None else []
            st.image(draw_segments(image, shown), width="stretch")

    similar = st.session_state.get("similar")
    if similar:
        label, results = similar
        st.markdown(f"**Similar to {label}**")
        for n, result, column in views.grid(results, 6):
            with column:
                image = views.overlay(idx, result, 256)
                if image is not None:
                    st.image(image, width="stretch")
                st.caption(f"{n + 1}. {result.score:.3f} · {idx.relative_path(result.path)}")
