"""irs, the Streamlit app: `streamlit run app.py`. The pages, with their titles in the sidebar and their
addresses (/index, /search, /browse, /annotate); the home page is home.py."""

import streamlit as st

PAGES = [
    st.Page("home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/1_index.py", title="Index", icon=":material/folder_open:", url_path="index"),
    st.Page("app_pages/2_search.py", title="Search", icon=":material/search:", url_path="search"),
    st.Page("app_pages/3_browse.py", title="Browse", icon=":material/photo_library:", url_path="browse"),
    st.Page("app_pages/4_annotate.py", title="Annotate & evaluate", icon=":material/rule:", url_path="annotate"),
]
st.navigation(PAGES).run()
