import json
from pathlib import Path

import streamlit as st

import views
from irs.evaluate import MODES
from irs.judgments import Judgment, compare, judged_ap, precision_at

CHOICES = ["unjudged", "relevant", "not relevant"]

idx = views.page("Annotate & evaluate", needs_images=True)
store = views.judgments()

annotator = st.text_input("Annotator", key="annotator", placeholder="your name")
query = views.query_box(idx, "judge_query", "Query to judge")
k = st.slider("Results to judge (k)", 4, 40, 12, 4)

if query.strip():
    key = (query, k)
    if st.session_state.get("judge_key") != key:
        st.session_state["judge_key"] = key
        st.session_state["judge_results"] = views.search(idx, query, k)
    results = st.session_state["judge_results"]
    previous = store.for_query(query)
    columns = st.columns(4)
    for rank, result in enumerate(results, 1):
        with columns[(rank - 1) % 4]:
            image = views.overlay(idx, result, 256)
            if image is not None:
                st.image(image, width="stretch")
            st.caption(f"{rank}. {result.score:.3f} · {Path(result.path).name}")
            before = previous.get(result.sha256)
            default = 0 if before is None else (1 if before else 2)
            st.radio(
                "Judgment",
                CHOICES,
                index=default,
                key=f"judge-{query}-{result.sha256}",
                horizontal=True,
                label_visibility="collapsed",
            )

    if st.button("Save judgments", type="primary", disabled=not annotator.strip()):
        settings = json.dumps(
            {
                **idx.settings.index_fingerprint(),
                "weight_image": idx.settings.weight_image,
                "weight_segment": idx.settings.weight_segment,
            }
        )
        chosen = [
            Judgment(
                query,
                r.sha256,
                r.path,
                st.session_state[f"judge-{query}-{r.sha256}"] == "relevant",
                annotator.strip(),
                settings=settings,
            )
            for r in results
            if st.session_state[f"judge-{query}-{r.sha256}"] != "unjudged"
        ]
        st.success(f"Saved {store.record(chosen)} judgments for “{query}”.")
    if not annotator.strip():
        st.caption("Type your name to save judgments.")

    judged = store.for_query(query)
    ranked = [r.sha256 for r in results]
    if judged:
        c1, c2 = st.columns(2)
        c1.metric(f"P@{k}", f"{precision_at(ranked, judged, k):.3f}")
        c2.metric("AP", f"{judged_ap(ranked, judged):.3f}")

st.divider()
st.subheader("All judged queries")
queries = store.queries()
if queries:
    # one search per judged query: only when the judgments or k change, not on every rerun
    table_key = (k, hash(tuple((j.query, j.sha256, j.relevant, j.at) for j in store.all())))
    if st.session_state.get("table_key") != table_key:
        rows = []
        for q in queries:
            judged = store.for_query(q)
            ranked = [r.sha256 for r in idx.search(q, k)]
            rows.append(
                {
                    "query": q,
                    "judged": len(judged),
                    f"P@{k}": precision_at(ranked, judged, k),
                    "AP": judged_ap(ranked, judged),
                }
            )
        st.session_state["table_key"], st.session_state["table"] = table_key, rows
    rows = st.session_state["table"]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.metric(
        f"Mean P@{k} · MAP",
        f"{sum(r[f'P@{k}'] for r in rows) / len(rows):.3f} · {sum(r['AP'] for r in rows) / len(rows):.3f}",
    )
else:
    st.caption("No judgments yet.")

left, right = st.columns(2)
left.download_button("Export CSV", store.export_csv(), "judgments.csv", "text/csv")
right.download_button("Export JSONL", store.export_jsonl(), "judgments.jsonl", "application/jsonl")
upload = st.file_uploader("Import judgments (CSV or JSONL as exported)", type=["csv", "jsonl"])
if upload is not None and st.session_state.get("imported") != upload.file_id:
    try:
        count = store.import_text(upload.getvalue().decode("utf-8"), "csv" if upload.name.endswith(".csv") else "jsonl")
    except (ValueError, UnicodeDecodeError) as err:
        st.error(f"{upload.name}: {err}")
    else:
        st.session_state["imported"] = upload.file_id
        st.success(f"Imported {count} judgments from {upload.name}.")
        st.rerun()

st.divider()
st.subheader("Compare two settings on the judged queries")
a, b = st.columns(2)
mode_a = a.selectbox("Settings A", list(MODES), index=list(MODES).index("whole_image"))
mode_b = b.selectbox("Settings B", list(MODES), index=list(MODES).index("segments_positions"))
if st.button("Compare", disabled=not queries):

    def ranked_for(q: str, mode: str) -> list[str]:
        return [r.sha256 for r in idx.search(q, k, settings=idx.settings.replace(**MODES[mode]))]

    rows = compare(ranked_for, store, mode_a, mode_b, k)
    st.session_state["comparison"] = rows
if st.session_state.get("comparison"):
    rows = st.session_state["comparison"]
    st.dataframe(rows, hide_index=True, width="stretch")
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in ("P@k A", "P@k B", "AP A", "AP B")}
    st.caption(
        f"Means over {len(rows)} queries: P@{k} A {mean['P@k A']:.3f}, B {mean['P@k B']:.3f} · "
        f"MAP A {mean['AP A']:.3f}, B {mean['AP B']:.3f}"
    )
