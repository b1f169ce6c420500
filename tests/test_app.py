"""Every page through Streamlit's AppTest, with the test profile's tiny models."""

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from streamlit.testing.v1 import AppTest

from irs.index import Index
from irs.settings import load_settings
from irs.synthetic import write_folder

TIMEOUT = 120
PAGES = {"index": "1_index", "search": "2_search", "browse": "3_browse", "annotate": "4_annotate"}


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    db = tmp_path / "db"
    monkeypatch.setenv("IRS_DB", str(db))
    monkeypatch.setenv("IRS_PROFILE", "test")
    monkeypatch.chdir(REPO)
    return db


@pytest.fixture
def indexed(app_env, scenes_folder):
    with Index(load_settings()) as index:
        index.add_folder(scenes_folder)
    return app_env


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update(query)
    at.run()
    at.switch_page(f"app_pages/{PAGES[name]}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for kind in ("markdown", "caption", "info", "warning", "success", "error") for m in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def test_home_shows_stats(indexed):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.metric[0].label == "Images" and at.metric[0].value == "8"
    assert at.metric[1].label == "Segments" and int(at.metric[1].value) >= 8
    assert "Test profile" in texts(at)


def test_index_page_builds_the_index_in_the_background(app_env, scenes_folder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(scenes_folder, folder)
    at = page("index")
    at.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert "no such folder" in texts(at)
    at.text_input[0].set_value(str(folder)).run()
    at.button[0].click().run()  # Start / resume
    import views

    views.job().join(TIMEOUT)
    at.run()
    assert not at.exception
    assert "Done: 8 files, 8 embedded" in texts(at)
    assert at.metric[0].value == "8"
    assert str(folder.resolve()) in at.selectbox[0].options  # remembered as a recent folder


def test_index_page_refuses_folders_outside_allowed_roots(app_env, scenes_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("IRS_ALLOWED_ROOTS", str(tmp_path / "elsewhere"))
    at = page("index")
    at.text_input[0].set_value(str(scenes_folder)).run()
    assert "outside the allowed folders" in texts(at)
    assert at.button[0].disabled


def test_search_page_reads_the_query_from_the_address(indexed):
    at = page("search", q="a red circle on the left")
    results = at.session_state["results"]
    assert len(results) == 8  # k defaults to 12, the index holds 8
    assert results[0].parsed.describe() == "object: a red circle · position: left"
    assert "Parsed:" in texts(at) and "position" in texts(at)
    assert len(at.get("image")) >= 8
    assert "a red circle on the left" in at.query_params["q"]


def test_search_page_messages(app_env, indexed):
    at = page("search")
    assert "Type what you are looking for" in texts(at)


def test_search_page_on_an_empty_index(app_env):
    at = page("search", q="anything")
    assert "The index is empty" in texts(at)
    assert at.text_input[0].value == "anything"  # the controls stay above the message


@pytest.mark.parametrize("name, title", [("browse", "Browse"), ("annotate", "Annotate & evaluate")])
def test_pages_that_need_images_stop_on_an_empty_index(app_env, name, title):
    at = page(name)
    assert [t.value for t in at.title] == [title]
    assert [w.value for w in at.warning] == [
        "Test profile: tiny random models. Rankings mean nothing.",
        "The index is empty: add a folder on the Index page first.",
    ]
    assert not at.text_input and not at.button  # nothing below the message


def test_search_page_tags_the_phrases_and_keeps_the_object_colours_by_default(indexed):
    at = page("search", q="a blue square left of a red circle")
    assert "① a blue square · ② a red circle" in texts(at)  # the legend uses the pictures' tags
    assert [c.label for c in at.checkbox] == ["Fill", "Outline", "Box"]
    assert [c.value for c in at.checkbox] == [False, True, False]  # outline only: no colour over the objects
    at.checkbox[0].check().run()  # fill on: the legend also shows the fill colours
    assert not at.exception and "rgb" in texts(at) and "① a blue square" in texts(at)


def test_search_results_are_laid_out_row_by_row(indexed):
    at = page("search", q="a red circle")
    ranks = [int(m.group(1)) for m in (re.match(r"\*\*(\d+)\. ", str(md.value)) for md in at.markdown) if m]
    assert ranks == list(range(1, 9))  # the page's order is rank order, not column by column


def test_browse_page_segments_and_find_similar(indexed):
    at = page("browse")
    at.button[0].click().run()  # open the first image
    sha = at.session_state["browse"][0]
    similar = [b for b in at.button if b.label == "Find similar images"][0]
    similar.click().run()
    label, results = at.session_state["similar"]
    assert label == "the whole image" and len(results) == 8
    assert results[0].sha256 == sha  # an image is most similar to itself
    selector = at.radio(key=f"segment-{sha}")
    assert len(selector.options) >= 1 and all(o.startswith("#") and "IoU" in o for o in selector.options)
    first = selector.value
    [b for b in at.button if b.label == f"Find similar to segment #{first}"][0].click().run()
    assert at.session_state["similar"][0] == f"segment #{first}"


def test_browse_page_draws_only_the_selected_segment(indexed):
    at = page("browse")
    at.button[0].click().run()
    sha = at.session_state["browse"][0]
    selector = at.radio(key=f"segment-{sha}")
    assert len(selector.options) >= 2  # the scenes' colour segmenter finds each shape and the background
    assert selector.value == int(selector.options[0][1:].split(" ")[0])  # the best segment first
    before = _pictures(at)
    assert before
    second = int(selector.options[1][1:].split(" ")[0])
    selector.set_value(second).run()
    assert not at.exception
    assert at.radio(key=f"segment-{sha}").value == second
    assert [b for b in at.button if b.label == f"Find similar to segment #{second}"]
    assert _pictures(at) != before  # the large view now outlines the other segment


def _pictures(at: AppTest) -> list[str]:
    """What the page's images show (their media addresses change with their bytes)."""
    return [str(image.proto) for image in at.get("image")]


@pytest.fixture
def demo_indexed(tmp_path, monkeypatch):
    """The demo profile (the small CLIP trained on these shapes) over 8 scenes, and the scenes drawn."""
    scenes = write_folder(tmp_path / "scenes", 8, seed=3, side=128)
    monkeypatch.setenv("IRS_DB", str(tmp_path / "db"))
    monkeypatch.setenv("IRS_PROFILE", "demo")
    monkeypatch.chdir(REPO)
    with Index(load_settings()) as index:
        index.add_folder(tmp_path / "scenes")
    return scenes


def test_search_says_when_nothing_matches_well(demo_indexed):
    at = page("search", q="quarterly tax invoice from 1987")
    warnings = " ".join(w.value for w in at.warning)
    assert "No good match for “quarterly tax invoice from 1987”" in warnings
    assert "weak match" in texts(at)  # each weak result is marked too

    present = demo_indexed[0].objects[0].a_name  # e.g. "a red circle": it is in the first scene
    at = page("search", q=present)
    assert "No good match" not in " ".join(w.value for w in at.warning)
    first = next(m.value for m in at.markdown if m.value.startswith("**1. "))
    assert "confidence" in first and "weak match" not in first


def test_the_address_reproduces_the_whole_search(indexed):
    at = page("search", q="a red circle", k="8", weight_image="0.3", segment_pool="50", weight_relation="oops")
    sliders = {s.label: s.value for s in at.slider}
    assert sliders["Results"] == 8 and sliders["Whole image"] == pytest.approx(0.3)
    assert sliders["Relation penalty"] == pytest.approx(load_settings().weight_relation)  # malformed: default
    assert {n.label: n.value for n in at.number_input}["Segment candidates"] == 50
    assert len([m for m in at.markdown if re.match(r"\*\*\d+\. ", m.value)]) == 8

    next(s for s in at.slider if s.label == "Position penalty").set_value(1.5).run()
    address = dict(at.query_params)
    assert address["q"] in ("a red circle", ["a red circle"])
    flat = {k: v[0] if isinstance(v, list) else v for k, v in address.items()}
    assert flat["k"] == "8" and flat["weight_image"] == "0.3" and flat["weight_position"] == "1.5"
    assert flat["segment_pool"] == "50" and "weight_relation" not in flat  # defaults stay out of the address


def test_the_home_page_searches_and_the_examples_fill_the_query(indexed):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.text_input[0].set_value("a blue square")
    at.button[0].click().run()
    assert not at.exception
    assert at.text_input(key="query").value == "a blue square"  # now on the search page, query filled in
    assert len([m for m in at.markdown if re.match(r"\*\*\d+\. ", m.value)]) == 8

    example = at.button_group[0]
    assert example.options[0] == "a red car on the left"  # the test profile: examples for real CLIP
    example.set_value("a dog to the left of a bicycle").run()
    assert at.text_input(key="query").value == "a dog to the left of a bicycle"
    assert "relation" in texts(at)


def test_the_demo_profile_suggests_queries_it_can_answer(demo_indexed):
    at = page("search")
    assert at.text_input(key="query").placeholder == "a red circle"
    assert "a blue square on the left" in at.button_group[0].options


def test_similar_on_a_result_searches_by_that_image(indexed):
    at = page("search", q="a red circle")
    first = next(m.value for m in at.markdown if re.match(r"\*\*1\. ", m.value))
    name = re.search(r"(scene_\d+\.png)", first).group(1)
    sha = next(b.key for b in at.button if b.key and b.key.startswith("like-")).removeprefix("like-")
    at.button(key=f"like-{sha}").click().run()
    assert not at.exception
    assert f"Images like {name} and “a red circle”" in texts(at)

    at = page("search", like=sha)  # the address alone reproduces an image search
    top = next(m.value for m in at.markdown if re.match(r"\*\*1\. ", m.value))
    assert name in top and "**1. 1.000**" in top  # the image itself, whole-image vectors compared

    at = page("search", like="f" * 64)  # not an indexed image: nothing to search for yet
    assert "Type what you are looking for" in texts(at)


def _first_result(at: AppTest) -> str:
    return next(m.value for m in at.markdown if re.match(r"\*\*1\. ", m.value))


def test_details_opens_a_dialog_with_the_matches_and_similar_buttons(indexed, scenes_folder):
    at = page("search", q="a blue square left of a red circle")
    assert not any(b.key == "details-like" for b in at.button)  # nothing of the dialog until asked for
    results = at.session_state["results"]
    at.button(key=f"details-{results[0].sha256}").click().run()
    assert not at.exception
    dialog = at.get("dialog")
    assert len(dialog) == 1
    shown = "\n".join(str(m.value) for m in dialog[0].markdown)
    assert "① **a blue square**" in shown and "② **a red circle**" in shown and "confidence" in shown
    assert Path(results[0].path).name in shown and str(scenes_folder) not in shown  # relative to the folder
    assert [b.label for b in dialog[0].get("download_button")] == ["Open the original"]
    assert len(dialog[0].get("image")) == 1  # the larger view

    at.run()  # a rerun (any widget) keeps it open until dismissed
    assert len(at.get("dialog")) == 1
    matched = results[0].matches[0].segment
    assert matched is not None  # the test profile stores segments for every scene
    # find images with a segment like the one matched for the first phrase
    next(b for b in at.get("dialog")[0].button if b.key == "details-like-0").click().run()
    assert not at.exception and not at.get("dialog")  # the dialog closed, the search changed
    assert at.query_params["like"] in (results[0].sha256, [results[0].sha256])
    assert at.query_params["segment"] in (str(matched.index), [str(matched.index)])
    assert f"Images with a segment like #{matched.index} of {Path(results[0].path).name}" in texts(at)
    found = {r.sha256: r for r in at.session_state["results"]}
    own = found[results[0].sha256]  # the segment's own image, matched by that very segment
    assert own.matches[0].segment.index == matched.index and own.matches[0].parts["similarity"] > 0.999


def test_search_by_an_image_path_and_the_address_keeps_it(indexed, scenes_folder):
    target = sorted(scenes_folder.glob("*.png"))[3]
    at = page("search")
    at.text_input(key="image_path").set_value(str(target)).run()
    assert not at.exception
    top = _first_result(at)
    assert target.name in top and "**1. 1.000**" in top  # the file itself first, as indexed
    assert at.query_params["image"] in (str(target), [str(target)])

    at = page("search", image=str(target.with_name("missing.png")))
    assert "no such file" in " ".join(e.value for e in at.error)


def test_search_by_path_reads_only_under_the_allowed_folders(indexed, scenes_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("IRS_ALLOWED_ROOTS", str(tmp_path / "elsewhere"))  # set before the app opens the index
    at = page("search", image=str(sorted(scenes_folder.glob("*.png"))[0]))
    assert "outside the allowed folders" in " ".join(e.value for e in at.error)
    assert "results" not in at.session_state


def test_results_can_be_exported_from_the_page(indexed):
    at = page("search", q="a red circle")
    labels = [b.label for b in at.get("download_button")]
    assert labels[:3] == ["Export CSV", "Export JSON", "Export COCO masks"]


def test_results_show_paths_relative_to_their_folder(app_env, scenes_folder, tmp_path):
    # two folders holding different pictures under the same names: the page must tell them apart
    for name, seed in (("trip-a", 5), ("trip-b", 6)):
        write_folder(tmp_path / "photos" / name, 2, seed=seed, side=128)
    with Index(load_settings()) as index:
        index.add_folder(tmp_path / "photos")
    at = page("search", q="a red circle")
    shown = [m.value for m in at.markdown if re.match(r"\*\*\d+\. ", m.value)]
    assert any("trip-a/scene_00000.png" in m for m in shown) and any("trip-b/scene_00000.png" in m for m in shown)
    assert not any(str(tmp_path) in m for m in shown)
