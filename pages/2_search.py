from pathlib import Path

import streamlit as st

import views
from irs.overlay import PALETTE

idx = views.page("Search")
s = idx.settings

query = st.text_input("Query", value=st.query_params.get("q", ""), placeholder="a red car on the left")
k = st.slider("Results", min_value=4, max_value=48, value=12, step=4)
with st.expander("Fusion weights and advanced options"):
    c1, c2, c3 = st.columns(3)
    weights = {
        "weight_image": c1.slider("Whole image", 0.0, 1.0, s.weight_image, 0.05),
        "weight_segment": c1.slider("Best segments", 0.0, 1.0, s.weight_segment, 0.05),
        "weight_position": c2.slider("Position penalty", 0.0, 2.0, s.weight_position, 0.05),
        "weight_relation": c2.slider("Relation penalty", 0.0, 2.0, s.weight_relation, 0.05),
        "weight_negative": c2.slider("Negative terms", 0.0, 2.0, s.weight_negative, 0.05),
        "image_pool": c3.number_input("Image candidates", 10, 10_000, s.image_pool, 10),
        "segment_pool": c3.number_input("Segment candidates", 10, 50_000, s.segment_pool, 10),
    }
    st.caption(
        "fused = whole image × image similarity + best segments × (similarity − position and relation "
        "penalties) − negative terms. See the README for the exact formula."
    )
d1, d2, d3 = st.columns(3)
opacity = d1.slider("Mask opacity", 0.0, 1.0, 0.45, 0.05)
outline = d2.checkbox("Outline", value=True)
box = d3.checkbox("Box", value=True)

views.require_images(idx)  # after the controls, so the page looks the same before and after indexing
if not query.strip():
    st.info("Type what you are looking for, e.g. *a red circle on the left* or *a dog left of a bicycle*.")
    st.stop()
if st.query_params.get("q") != query:
    st.query_params["q"] = query  # the page's address now reproduces this search

key = (query, k, tuple(sorted(weights.items())))
if st.session_state.get("search_key") != key:  # search once per change, not on every rerun
    st.session_state["search_key"] = key
    st.session_state["results"] = views.search(idx, query, k, s.replace(**weights))
results = st.session_state["results"]

if not results:
    st.warning(f"Nothing found for “{query}”.")
    st.stop()
parsed = results[0].parsed
legend = " ".join(
    f"<span style='color:rgb{PALETTE[i % len(PALETTE)]}'>■</span> {p.text}" for i, p in enumerate(parsed.phrases)
)
st.markdown(f"**Parsed:** {parsed.describe()}<br>{legend}", unsafe_allow_html=True)

columns = st.columns(4)
for rank, result in enumerate(results, 1):
    with columns[(rank - 1) % 4]:
        image = views.overlay(idx, result, views.THUMB, opacity, outline, box)
        if image is not None:
            st.image(image, width="stretch")
        st.markdown(f"**{rank}. {result.score:.3f}** · {Path(result.path).name}")
        st.caption(views.parts_text({k: v for k, v in result.parts.items() if k != "fused"}))
        with st.expander("Details"):
            large = views.overlay(idx, result, views.LARGE, opacity, outline, box)
            if large is not None:
                st.image(large, width="stretch")
            st.caption(result.path)
            for i, match in enumerate(result.matches):
                where = (
                    "whole image"
                    if match.segment is None
                    else "box " + ", ".join(f"{v:.2f}" for v in match.segment.bbox)
                )
                st.markdown(
                    f"<span style='color:rgb{PALETTE[i % len(PALETTE)]}'>■</span> **{match.phrase}** — "
                    f"{where} — {views.parts_text(match.parts)}",
                    unsafe_allow_html=True,
                )
            if len(result.paths) > 1:
                st.caption("Same picture also at: " + ", ".join(result.paths[1:]))
