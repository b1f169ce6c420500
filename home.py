"""The home page: a search box, what the index holds, links to the other pages (app.py lists the pages)."""

import streamlit as st

import views

idx = views.page("irs — image retrieval with segments")
st.markdown(
    "Point irs at a folder: it segments every image, embeds the whole image and every segment with CLIP, "
    "and answers text queries — positional ones too (*a red car on the left*, *a dog left of a bicycle*) — "
    "with the matching segment drawn over each result."
)
with st.form("home-search", border=False):
    query = st.text_input("Search", placeholder=views.examples(idx)[0])
    if st.form_submit_button("Search", type="primary") and query.strip():
        st.switch_page("app_pages/2_search.py", query_params={"q": query})
stats = idx.stats()
cols = st.columns(4)
cols[0].metric("Images", stats.images)
cols[1].metric("Segments", stats.segments)
cols[2].metric("Not indexed", stats.errors)
cols[3].metric("On disk", f"{stats.disk_bytes / 1e6:.1f} MB")
st.caption(f"Database {idx.settings.db} · model {stats.model} · segmenter {stats.segmenter}")
st.page_link("app_pages/1_index.py", label="Build or update the index", icon=":material/folder_open:")
st.page_link("app_pages/2_search.py", label="Search", icon=":material/search:")
st.page_link("app_pages/3_browse.py", label="Browse images and segments", icon=":material/photo_library:")
st.page_link("app_pages/4_annotate.py", label="Annotate and evaluate", icon=":material/rule:")
