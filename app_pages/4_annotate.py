"""Annotate & evaluate: judge results at the speed of a keyboard, score the judged queries, compare settings fairly.

Keys in the judging view: j next, k previous, 1 relevant, 0 not relevant, o right object, w wrong object
(Streamlit reserves r and c). Every judgment is saved the moment it is made."""

import dataclasses
from collections.abc import Callable

import streamlit as st

import views
from irs import Index
from irs.judgments import (
    Comparison,
    Judgments,
    Localisation,
    Rankings,
    SearchSettings,
    Shown,
    Verdict,
    awaits_segment,
    compare,
    matched_segment,
    rank,
    score,
    settings_json,
)
from irs.records import SearchResult
from irs.settings import Settings

PER_ROW = 8  # thumbnails per row in the judging strip
CURRENT = "current"  # the setting the query's own results are shown under
# the judging view's buttons: key, label, keyboard shortcut
KEYS = {
    "previous": ("Previous", "k"),
    "next": ("Next", "j"),
    "relevant": ("Relevant", "1"),
    "not-relevant": ("Not relevant", "0"),
    "right-object": ("Right object", "o"),
    "wrong-object": ("Wrong object", "w"),
}

idx = views.page("Annotate & evaluate", needs_images=True)
store = views.judgments()
base = SearchSettings.of(idx.settings)
presets = {p.name: p for p in store.presets(base)}


def search(query: str, settings: Settings, k: int) -> list[SearchResult]:
    return views.search(idx, query, k, settings)


# the settings being judged --------------------------------------------------------------------------------
def apply_preset() -> None:
    chosen = presets.get(st.session_state.get("preset") or "")
    if chosen is not None:
        for name, value in dataclasses.asdict(chosen.settings).items():
            st.session_state[f"set-{name}"] = value


def save_preset(settings: SearchSettings) -> None:
    """Save before the page is drawn again, so the preset pickers list it at once."""
    name = st.session_state["preset_name"].strip()
    try:
        store.save_preset(name, settings)
    except ValueError as err:
        st.session_state["preset_message"] = ("error", str(err))
    else:
        st.session_state["preset_message"] = ("success", f"Saved preset “{name}”.")


for name, value in dataclasses.asdict(base).items():
    st.session_state.setdefault(f"set-{name}", value)  # the widgets take their value from here, presets too

annotator = st.text_input("Annotator", key="annotator", placeholder="your name").strip()
query = views.query_box(idx, "judge_query", "Query to judge").strip()
k = st.slider("Results to judge (k)", 4, 40, 12, 4, key="judge_k")
with st.expander("Search settings (every weight and pool is stored with each judgment)"):
    st.selectbox("Start from a preset", list(presets), index=None, key="preset", on_change=apply_preset)
    columns = st.columns(3)
    for n, (name, label, low, high, step, _) in enumerate(views.WEIGHTS):
        columns[n % 2].slider(label, low, high, step=step, key=f"set-{name}")
    for name, label, low, high in views.POOLS:
        columns[2].number_input(label, low, high, step=10, key=f"set-{name}")
    current = SearchSettings(**{f.name: st.session_state[f"set-{f.name}"] for f in dataclasses.fields(SearchSettings)})
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    preset_name = left.text_input(
        "Save the current settings as a preset", key="preset_name", placeholder="name"
    ).strip()
    right.button("Save preset", key="save-preset", on_click=save_preset, args=(current,), disabled=not preset_name)
    if "preset_message" in st.session_state:
        kind, message = st.session_state.pop("preset_message")
        (st.success if kind == "success" else st.error)(message)
    saved = [p.name for p in presets.values() if not p.builtin]
    st.caption("Presets: " + ", ".join([*(f"{n} (built in)" for n, p in presets.items() if p.builtin), *saved]))
settings = current.apply(idx.settings)

# the query's results become the judging queue, unless a comparison's unjudged results were loaded into it
source = (query, k, current)
if st.session_state.get("queue_source") != source:
    st.session_state["queue_source"] = source
    results = search(query, settings, k) if query else []
    shown_with = settings_json(settings)
    st.session_state["queue"] = [Shown(query, r, CURRENT, shown_with, n) for n, r in enumerate(results, 1)]
    st.session_state["queue_label"] = CURRENT
    st.session_state["pos"] = 0


# the judging view: a fragment, so a judgment reruns only this part of the page --------------------------------
def queue() -> list[Shown]:
    return st.session_state["queue"]


def move(step: int) -> None:
    st.session_state["pos"] = max(0, min(len(queue()) - 1, st.session_state["pos"] + step))


def go(n: int) -> None:
    st.session_state["pos"] = n


def judge_image(relevant: bool) -> None:
    """Save the image judgment, then move on, unless a relevant image's matched segment is still to be judged."""
    judgment = store.judge_image(queue()[st.session_state["pos"]], annotator, relevant)
    if not awaits_segment(judgment, queue()[st.session_state["pos"]].result):
        move(1)


def judge_segment(right: bool) -> None:
    """Save whether the matched segment (①) is the object asked for, then move on."""
    if store.judge_segment(queue()[st.session_state["pos"]], annotator, right) is not None:
        move(1)


def mark_rest() -> None:
    store.mark_rest_not_relevant(queue(), annotator)


def state(verdict: Verdict | None, result: SearchResult) -> str:
    """An item's judgment in words: the image's, then its matched segment's."""
    if verdict is None:
        return "unjudged"
    words = "relevant" if verdict.relevant else "not relevant"
    if verdict.right_object is not None and verdict.segment == matched_segment(result):
        words += " · right object" if verdict.right_object else " · wrong object"
    elif verdict.relevant and matched_segment(result) is not None:
        words += " · object unjudged"
    return words


def localisation_text(loc: Localisation) -> str:
    return "—" if loc.accuracy is None else f"{loc.accuracy:.3f} ({loc.right}/{loc.judged})"


@st.fragment
def judging(idx: Index, store: Judgments, annotator: str, k: int) -> None:
    items = queue()
    if not items:
        st.info("Type a query to judge its results.")
        return
    verdicts = {q: store.verdicts(q) for q in {i.query for i in items}}  # one read per query, not per item
    pooled = st.session_state["queue_label"] != CURRENT
    if pooled:
        info, update, back = st.columns([4, 1, 1], vertical_alignment="center")
        unjudged = sum(i.result.sha256 not in verdicts[i.query] for i in items)
        info.info(f"Judging the comparison's pooled results: {unjudged} of {len(items)} images still unjudged.")
        # judgments rerun only this view: these redraw the whole page, the comparison's counts included
        if update.button("Update the comparison", key="update", width="stretch"):
            st.rerun()
        if back.button("Back to the query's results", key="back", width="stretch"):
            st.session_state["queue_source"] = None
            st.rerun()
    pos = st.session_state["pos"]
    item = items[pos]
    verdict = verdicts[item.query].get(item.result.sha256)
    own = store.get(item.query, item.result.sha256, annotator) if annotator else None

    large, side = st.columns([5, 4])  # the picture and the strip under it fit one screen
    with large:
        picture = views.overlay(idx, item.result, views.LARGE)
        if picture is not None:
            st.image(picture, width="stretch")
    with side:
        st.markdown(f"**{pos + 1} of {len(items)}** · “{item.query}”")
        st.caption(
            f"rank {item.rank} under {item.setting} · score {item.result.score:.3f} · "
            f"{idx.relative_path(item.result.path)}"
        )
        st.markdown(f"Judged: **{state(verdict, item.result)}**")
        buttons = {}
        for row in (("previous", "next"), ("relevant", "not-relevant"), ("right-object", "wrong-object")):
            for column, key in zip(st.columns(2), row, strict=True):
                label, shortcut = KEYS[key]
                buttons[key] = (column, label, shortcut)  # Streamlit shows the key on the button

        def button(
            key: str,
            on_click: Callable[..., None],
            args: tuple[object, ...],
            disabled: bool = False,
            why: str | None = None,
        ) -> None:
            column, label, shortcut = buttons[key]
            column.button(
                label,
                key=f"judge-{key}",
                shortcut=shortcut,
                on_click=on_click,
                args=args,
                disabled=disabled,
                help=why,
                width="stretch",
            )

        button("previous", move, (-1,), disabled=pos == 0)
        button("next", move, (1,), disabled=pos == len(items) - 1)
        button("relevant", judge_image, (True,), disabled=not annotator)
        button("not-relevant", judge_image, (False,), disabled=not annotator)
        no_segment = matched_segment(item.result) is None
        why = "this result has no matched segment" if no_segment else "judge the image first (1 or 0)"
        for key, right in (("right-object", True), ("wrong-object", False)):
            button(key, judge_segment, (right,), disabled=own is None or no_segment, why=why)
        st.button(
            "Mark the rest not relevant", key="judge-rest", on_click=mark_rest, disabled=not annotator, width="stretch"
        )
        if not annotator:
            st.caption("Type your name (Annotator, above) to judge.")
        st.caption("Each judgment is saved at once. Is ① the object asked for? o right, w wrong.")
    if not pooled:  # the query's scores, under the picture where four columns leave each number room
        scores = score([i.result for i in items], verdicts[item.query], k)
        m = st.columns(4)
        m[0].metric(f"P@{k}", f"{scores.precision:.3f}")
        m[1].metric("AP", f"{scores.ap:.3f}")
        loc = scores.localisation
        m[2].metric("Localisation", "—" if loc.accuracy is None else f"{loc.accuracy:.3f}")
        m[3].metric("Unjudged", scores.unjudged)
        st.caption(
            f"P@{k} counts the {scores.unjudged} unjudged results as not relevant. Localisation: {loc.right} of "
            f"{loc.judged} relevant results with a judged segment matched the right object."
        )

    for n, shown, column in views.grid(items, PER_ROW):
        with column:
            thumb = views.overlay(idx, shown.result, views.THUMB)
            if thumb is not None:
                st.image(thumb, width="stretch")
            here = verdicts[shown.query].get(shown.result.sha256)
            st.button(
                f"{n + 1}",
                key=f"goto-{n}",
                on_click=go,
                args=(n,),
                type="primary" if n == pos else "secondary",
                width="stretch",
            )
            st.caption(state(here, shown.result))


st.subheader("Judge")
judging(idx, store, annotator, k)


# every judged query under the current settings ---------------------------------------------------------
def ranked(queries: list[str], named: dict[str, Settings], key: str) -> Rankings:
    """The rankings of the judged queries under named settings, searched once per change of their inputs."""
    inputs = (tuple(queries), k, tuple((name, s) for name, s in named.items()))
    if st.session_state.get(f"{key}_inputs") != inputs:
        st.session_state[f"{key}_inputs"] = inputs
        st.session_state[key] = rank(lambda q, s: search(q, s, k), queries, named, k)
    return st.session_state[key]


def table(comparison: Comparison) -> list[dict[str, object]]:
    rows = []
    for row in comparison.rows:
        line: dict[str, object] = {"query": row.query, "pooled": row.pooled, "unjudged": row.unjudged}
        for name, s in row.scores.items():
            suffix = f" {name}" if len(comparison.names) > 1 else ""
            line |= {f"P@{k}{suffix}": s.precision, f"AP{suffix}": s.ap}
            line[f"loc.{suffix}"] = s.localisation.accuracy
        rows.append(line)
    return rows


st.divider()
st.subheader("All judged queries")
queries = store.queries()
if queries:
    overall = compare(ranked(queries, {CURRENT: settings}, "table_rankings"), store)
    st.dataframe(table(overall), hide_index=True, width="stretch")
    mean = overall.mean(CURRENT)
    st.metric(
        f"Mean P@{k} · MAP · localisation",
        f"{mean.precision:.3f} · {mean.ap:.3f} · {localisation_text(mean.localisation)}",
    )
    if overall.unjudged:
        st.caption(f"{overall.unjudged} results in these top {k} are unjudged (counted as not relevant).")
else:
    st.caption("No judgments yet.")

left, right = st.columns(2)
# made only when clicked, not on every rerun of the page
left.download_button("Export CSV", store.export_csv, "judgments.csv", "text/csv", on_click="ignore")
right.download_button("Export JSONL", store.export_jsonl, "judgments.jsonl", "application/jsonl", on_click="ignore")
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


# fair comparison -----------------------------------------------------------------------------------------
def load_queue(items: list[Shown]) -> None:
    st.session_state["queue"], st.session_state["queue_label"], st.session_state["pos"] = items, "pooled", 0


st.divider()
st.subheader("Compare the current settings with a preset")
st.caption(
    f"The top {k} of both settings are pooled for each judged query (as TREC does); unjudged results in the pool "
    "are counted and can be judged here, so neither setting gains from results nobody has looked at."
)
names = list(presets)
other = st.selectbox("B", names, index=names.index("whole_image"), key="compare_with")
a_name, b_name = f"A: {CURRENT}", f"B: {other}"
named = {a_name: settings, b_name: presets[other].settings.apply(idx.settings)}
if st.button("Compare", key="compare", disabled=not queries):
    st.session_state["compare_on"] = True
if st.session_state.get("compare_on") and queries:
    comparison = compare(ranked(queries, named, "rankings"), store)  # searches only when an input changed
    st.session_state["comparison"] = comparison
    st.dataframe(table(comparison), hide_index=True, width="stretch")
    a, b = comparison.mean(a_name), comparison.mean(b_name)
    st.caption(
        f"Means over {len(comparison.rows)} queries: P@{k} A {a.precision:.3f}, B {b.precision:.3f} · "
        f"MAP A {a.ap:.3f}, B {b.ap:.3f} · localisation A {localisation_text(a.localisation)}, "
        f"B {localisation_text(b.localisation)}"
    )
    if comparison.to_judge:
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.warning(
            f"{comparison.unjudged} results in the pooled top {k} are unjudged — judge them "
            f"(and {comparison.segments_unjudged} relevant results whose object is unjudged)."
        )
        right.button("Judge them", key="judge-pooled", on_click=load_queue, args=(comparison.to_judge,))
    else:
        st.success(f"Every result in the pooled top {k} is judged.")

    st.markdown("**One query side by side**")
    chosen = st.selectbox("Query", [row.query for row in comparison.rows], key="side_query")
    verdicts = store.verdicts(chosen)
    by_name = st.session_state["rankings"].ranked[chosen]
    heads = st.columns(2)
    for head, name in zip(heads, (a_name, b_name), strict=True):
        s = next(r.scores[name] for r in comparison.rows if r.query == chosen)
        head.markdown(f"**{name}** · P@{k} {s.precision:.3f} · AP {s.ap:.3f} · unjudged {s.unjudged}")
    pairs: list[SearchResult | None] = []
    for n in range(k):  # interleaved A, B per rank: the grid's rows are the ranks
        pairs += [r[n] if n < len(r) else None for r in (by_name[a_name], by_name[b_name])]
    for n, result, column in views.grid(pairs, 2):
        if result is None:
            continue
        with column:
            thumb = views.overlay(idx, result, views.THUMB)
            if thumb is not None:
                st.image(thumb, width=240)
            st.caption(f"{n // 2 + 1}. {idx.relative_path(result.path)} · {state(verdicts.get(result.sha256), result)}")
