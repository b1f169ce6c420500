from pathlib import Path

import streamlit as st

import views
from irs.overlay import PALETTE, draw_segments

PAGE = 12

idx = views.page("Browse", needs_images=True)
total = idx.image_count()

pages = max(1, -(-total // PAGE))
page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1)
columns = st.columns(6)
for i, row in enumerate(idx.image_page((page - 1) * PAGE, PAGE)):
    sha, path = row.sha256, row.path
    with columns[i % 6]:
        image = views.picture(idx, path, sha, 256)
        if image is not None:
            st.image(image, width="stretch")
        if st.button(Path(path).name, key=f"open-{sha}", width="stretch"):
            st.session_state["browse"] = (sha, path)
            st.session_state.pop("similar", None)

chosen = st.session_state.get("browse")
if chosen:
    sha, path = chosen
    st.divider()
    st.subheader(Path(path).name)
    segments = idx.segments_of(sha)
    left, right = st.columns([2, 1])
    with left:
        image = views.picture(idx, path, sha, views.LARGE)
        if image is not None:
            coloured = [(seg, PALETTE[j % len(PALETTE)]) for j, seg in enumerate(segments)]
            st.image(draw_segments(image, coloured, 0.35), width="stretch")
    with right:
        st.caption(f"{len(segments)} segments · {path}")
        if st.button("Find similar images", key="similar-image", type="primary"):
            st.session_state["similar"] = ("the whole image", idx.similar(sha, None, 12))
    st.markdown("**Segments**")
    small = views.picture(idx, path, sha, 256)
    seg_columns = st.columns(6)
    for j, seg in enumerate(segments):
        with seg_columns[j % 6]:
            if small is not None:
                st.image(draw_segments(small, [(seg, PALETTE[j % len(PALETTE)])], 0.5), width="stretch")
            st.caption(f"#{seg.index} · area {seg.area:.1%} · IoU {seg.predicted_iou:.2f}")
            if st.button("Find similar", key=f"similar-{j}"):
                st.session_state["similar"] = (f"segment #{seg.index}", idx.similar(sha, seg.index, 12))

    similar = st.session_state.get("similar")
    if similar:
        label, results = similar
        st.markdown(f"**Similar to {label}**")
        sim_columns = st.columns(6)
        for n, result in enumerate(results):
            with sim_columns[n % 6]:
                image = views.overlay(idx, result, 256, 0.45, True, True)
                if image is not None:
                    st.image(image, width="stretch")
                st.caption(f"{n + 1}. {result.score:.3f} · {Path(result.path).name}")
