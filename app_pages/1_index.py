import streamlit as st

import views
from irs.load import check_folder

idx = views.page("Index")
job = views.job()
s = idx.settings

with st.expander("Model settings", expanded=False):
    st.table(
        {
            "setting": [
                "database",
                "CLIP model",
                "CLIP weights",
                "segmenter",
                "SAM model",
                "points per side",
                "device",
                "max segments per image",
            ],
            "value": [
                s.db,
                s.clip_model,
                s.clip_pretrained or "random",
                s.segmenter,
                s.sam_model_type,
                str(s.points_per_side),
                s.device,
                str(s.max_segments),
            ],
        }
    )

recent = idx.recent_folders()
picked = st.selectbox("Recent folders", ["—"] + recent, index=0)
folder = st.text_input("Folder to index", value="" if picked == "—" else picked, placeholder="/home/me/Pictures")
problem = check_folder(folder, s.allowed_roots) if folder else None
if problem:
    st.error(problem)
segment = st.checkbox("Segment images (the slow part; whole images are searchable first)", value=True)

state = job.snapshot()
left, right = st.columns(2)
if left.button("Start / resume", type="primary", disabled=job.running or not folder or bool(problem)):
    job.start(folder, segment)
    st.rerun()
if right.button("Stop", disabled=not job.running):
    job.stop()
    st.toast("Stopping after the current batch; start again to resume.")


@st.fragment(run_every=1.0 if job.running else None)
def progress() -> None:
    state = job.snapshot()
    if state.stage == "idle":
        return
    fraction = state.done / state.total if state.total else 0.0
    eta = f"{state.eta:.0f} s" if state.eta is not None else "—"
    label = f"{state.stage}: {state.done} / {state.total} images · {state.rate:.1f} images/s · ETA {eta}"
    st.progress(min(fraction, 1.0), text=label)
    if not state.running:
        if state.error:
            st.error(f"Indexing {state.folder} failed: {state.error}")
        elif state.report:
            r = state.report
            verb = "Stopped" if r.stopped else "Done"
            st.success(
                f"{verb}: {r.found} files, {r.added} embedded, {r.reused} reused, {r.unchanged} unchanged, "
                f"{r.removed} removed, {r.segmented} segmented, {len(r.failed)} failed."
            )
        if job.running is False and state.running is False and st.session_state.get("was_running"):
            st.session_state["was_running"] = False
            st.rerun()
    else:
        st.session_state["was_running"] = True


progress()

stats = idx.stats()
st.subheader("Index")
cols = st.columns(4)
cols[0].metric("Images", stats.images)
cols[1].metric("Segments", stats.segments)
cols[2].metric("Disk", f"{stats.disk_bytes / 1e6:.1f} MB")
cols[3].metric("Model", stats.model)

errors = idx.errors()
st.subheader(f"Files not indexed ({len(errors)})")
if errors:
    st.dataframe([{"file": e.path, "reason": e.reason} for e in errors], hide_index=True, width="stretch")
else:
    st.caption("None.")
