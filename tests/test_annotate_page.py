"""The Annotate & evaluate page through Streamlit's AppTest: keyboard judging with autosave, image and segment
judgments, presets, metrics, and the fair (pooled) comparison of two settings.

AppTest cannot press keys: the tests check that each button carries its shortcut, then click it."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from streamlit.testing.v1 import AppTest

from irs.index import Index
from irs.judgments import SearchSettings
from irs.settings import INDEX_FIELDS, load_settings

TIMEOUT = 120
QUERY = "a blue square"
SHORTCUTS = {
    "judge-next": "j",
    "judge-previous": "k",
    "judge-relevant": "1",
    "judge-not-relevant": "0",
    "judge-right-object": "o",
    "judge-wrong-object": "w",
}


@pytest.fixture(scope="module")
def built(scenes_folder, tmp_path_factory) -> Path:
    """The eight scenes indexed once for the module (the test profile); each test judges in its own copy."""
    db = tmp_path_factory.mktemp("annotate") / "db"
    with Index(load_settings({"profile": "test", "db": str(db)}, environ={})) as index:
        index.add_folder(scenes_folder)
    return db


@pytest.fixture
def indexed(built, tmp_path, monkeypatch) -> Path:
    # a copy per test: the app caches the index and judgment store by path, so a fresh path is a fresh store
    db = tmp_path / "db"
    shutil.copytree(built, db)
    monkeypatch.setenv("IRS_DB", str(db))
    monkeypatch.setenv("IRS_PROFILE", "test")
    monkeypatch.chdir(REPO)
    return db


def annotate(annotator: str = "ada", query: str = QUERY) -> AppTest:
    """The Annotate page with an annotator and a query typed in."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/4_annotate.py").run()
    at.text_input(key="annotator").set_value(annotator)
    at.text_input(key="judge_query").set_value(query).run()
    assert not at.exception, at.exception
    return at


def press(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for kind in ("markdown", "caption", "info", "warning", "success", "error") for m in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def store():
    import views  # the app's own cached store of the database under test

    return views.judgments()


def current(at: AppTest):
    return at.session_state["queue"][at.session_state["pos"]]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_annotate_page_judges_scores_and_compares(indexed):
    at = annotate()
    results = [shown.result for shown in at.session_state["queue"]]
    assert at.session_state["pos"] == 0
    press(at, "judge-relevant")
    press(at, "judge-right-object")  # now on the second result
    press(at, "judge-not-relevant")
    assert store().for_query(QUERY) == {results[0].sha256: True, results[1].sha256: False}
    shown = metrics(at)
    assert shown["P@12"] == f"{1 / 12:.3f}" and shown["AP"] == "1.000"  # the one relevant image is ranked first
    assert shown["Localisation"] == "1.000" and shown["Unjudged"] == str(len(results) - 2)
    assert "1 of 1 relevant results with a judged segment matched the right object" in texts(at)
    assert "Mean P@12 · MAP · localisation" in shown
    csv = store().export_csv()
    assert csv.splitlines()[0] == "query,sha256,path,relevant,annotator,at,settings,segment,right_object"
    assert "ada" in csv
    press(at, "compare")
    rows = at.session_state["comparison"].rows
    assert rows[0].query == QUERY and set(rows[0].scores) == {"A: current", "B: whole_image"}


def test_buttons_carry_their_keyboard_shortcuts_and_j_k_move(indexed):
    at = annotate()
    assert {key: at.button(key=key).proto.shortcut for key in SHORTCUTS} == SHORTCUTS
    first, large = current(at), at.get("image")[0].proto
    press(at, "judge-next")
    assert at.session_state["pos"] == 1 and current(at) != first
    assert at.get("image")[0].proto != large  # the large view shows the next result
    press(at, "judge-next")
    press(at, "judge-previous")
    assert at.session_state["pos"] == 1
    assert at.button(key="judge-previous").disabled is False
    press(at, "judge-previous")
    assert at.session_state["pos"] == 0 and at.button(key="judge-previous").disabled
    # the strip under the large view: one button per result, in rank order, the current one highlighted
    strip = [b for b in at.button if b.key and b.key.startswith("goto-")]
    assert [b.key for b in strip] == [f"goto-{n}" for n in range(len(at.session_state["queue"]))]
    assert strip[0].proto.type == "primary" and strip[1].proto.type == "secondary"
    press(at, "goto-3")
    assert at.session_state["pos"] == 3


def test_judging_image_and_segment_autosaves_with_every_weight_and_pool(indexed):
    at = annotate()
    at.slider(key="set-weight_image").set_value(0.3).run()  # a new setting: the queue is searched again
    first = current(at)
    assert at.button(key="judge-right-object").disabled  # the segment is judged after the image
    press(at, "judge-relevant")
    saved = store().get(QUERY, first.result.sha256, "ada")
    assert saved is not None and saved.relevant and saved.right_object is None
    settings = json.loads(saved.settings)
    assert set(SearchSettings.__dataclass_fields__) | set(INDEX_FIELDS) <= set(settings)
    assert settings["weight_image"] == pytest.approx(0.3)
    assert current(at) == first  # a relevant image with a segment waits for o / w
    press(at, "judge-wrong-object")
    saved = store().get(QUERY, first.result.sha256, "ada")
    assert saved.relevant and saved.right_object is False and saved.segment == first.result.segment.index
    assert at.session_state["pos"] == 1
    assert metrics(at)["Localisation"] == "0.000"
    press(at, "judge-not-relevant")  # not relevant: on to the next at once
    assert at.session_state["pos"] == 2
    assert len(store().all()) == 2
    assert "relevant · wrong object" in texts(at) and "not relevant" in texts(at)


def test_judging_needs_a_name(indexed):
    at = annotate(annotator="")
    assert at.button(key="judge-relevant").disabled and at.button(key="judge-rest").disabled
    assert "Type your name" in texts(at)


def test_mark_the_rest_not_relevant(indexed):
    at = annotate()
    first = current(at)
    press(at, "judge-relevant")
    press(at, "judge-rest")
    judged = store().for_query(QUERY)
    assert len(judged) == len(at.session_state["queue"])
    assert judged.pop(first.result.sha256) is True and not any(judged.values())
    assert metrics(at)["Unjudged"] == "0"


def test_presets_are_saved_listed_and_applied(indexed):
    at = annotate()
    at.slider(key="set-weight_position").set_value(1.5).run()
    at.text_input(key="preset_name").set_value("strict positions").run()
    press(at, "save-preset")
    assert "Saved preset “strict positions”" in texts(at)
    base = SearchSettings.of(load_settings())
    presets = {p.name: p for p in store().presets(base)}
    assert presets["strict positions"].settings.weight_position == pytest.approx(1.5)
    assert not presets["strict positions"].builtin and presets["whole_image"].builtin
    options = at.selectbox(key="preset").options
    assert {"whole_image", "segments", "segments_positions", "strict positions"} <= set(options)
    assert "strict positions" in at.selectbox(key="compare_with").options

    at.selectbox(key="preset").set_value("whole_image").run()  # a preset sets every control
    assert at.slider(key="set-weight_segment").value == 0.0 and at.slider(key="set-weight_image").value == 1.0
    at.text_input(key="preset_name").set_value("whole_image").run()
    press(at, "save-preset")
    assert "built-in preset" in texts(at)  # the built-in modes are read-only


def test_fair_compare_pools_counts_unjudged_and_judging_them_reduces_it(indexed):
    at = annotate()
    press(at, "judge-relevant")
    press(at, "judge-right-object")
    press(at, "judge-not-relevant")
    at.selectbox(key="compare_with").set_value("whole_image")
    press(at, "compare")
    comparison = at.session_state["comparison"]
    (row,) = comparison.rows
    assert row.unjudged == row.pooled - 2 > 0  # the pool is every result of both settings' top 12
    assert f"{row.unjudged} results in the pooled top 12 are unjudged — judge them" in texts(at)

    press(at, "judge-pooled")  # the unjudged results become the judging queue
    queue = at.session_state["queue"]
    assert len(queue) == row.unjudged and at.session_state["queue_label"] == "pooled"
    assert f"{row.unjudged} of {row.unjudged} images still unjudged" in texts(at)
    press(at, "judge-not-relevant")
    left = at.session_state["comparison"].rows[0].unjudged
    assert left == row.unjudged - 1
    assert f"{left} results in the pooled top 12 are unjudged" in texts(at)
    press(at, "judge-rest")
    assert at.session_state["comparison"].unjudged == 0
    assert "Every result in the pooled top 12 is judged" in texts(at)
    # a judgment made from the pool records the setting that showed the result
    assert all(json.loads(j.settings)["weight_image"] > 0 for j in store().all())

    press(at, "back")
    assert at.session_state["queue_label"] == "current"


def test_side_by_side_shows_one_query_under_both_settings(indexed):
    at = annotate()
    press(at, "judge-relevant")
    press(at, "compare")
    heads = [m.value for m in at.markdown if m.value.startswith("**A: ") or m.value.startswith("**B: ")]
    assert heads[0].startswith("**A: current** · P@12") and heads[1].startswith("**B: whole_image** · P@12")
    rankings = at.session_state["rankings"].ranked[QUERY]
    captions = [c.value for c in at.caption if c.value[:1].isdigit() and ". scene_" in c.value]
    assert len(captions) == len(rankings["A: current"]) + len(rankings["B: whole_image"])
    assert captions[0].startswith("1. ") and captions[1].startswith("1. ") and captions[2].startswith("2. ")
    first = rankings["A: current"][0]
    assert captions[0] == f"1. {Path(first.path).name} · relevant · object unjudged"
