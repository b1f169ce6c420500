import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from irs.settings import _RULES, INDEX_FIELDS, PROFILES, Settings, SettingsError, load_settings

NO_FILE = {"IRS_CONFIG": "/nonexistent-irs-settings-test/irs.toml"}


def load_env(tmp_path, **env):
    return load_settings({"db": str(tmp_path)}, environ={**NO_FILE, **env})


def test_defaults(tmp_path):
    s = load_settings({"db": str(tmp_path)}, environ={})
    assert s.clip_model == Settings.clip_model and s.profile == "default"


def test_every_field_has_a_rule_and_the_defaults_pass_them():
    assert set(_RULES) == {f.name for f in dataclasses.fields(Settings)}
    Settings()  # checks every default
    for profile in PROFILES:
        load_settings({"profile": profile}, environ=NO_FILE)


def test_precedence_profile_file_env_override(tmp_path):
    (tmp_path / "irs.toml").write_text('profile = "test"\nbatch_size = 7\nmax_segments = 5\nimage_pool = 11\n')
    env = {"IRS_MAX_SEGMENTS": "6", "IRS_IMAGE_POOL": "12"}
    s = load_settings({"db": str(tmp_path), "image_pool": 13}, environ=env)
    assert s.profile == "test"
    assert s.clip_model == "irs-tiny"  # from the profile
    assert s.batch_size == 7  # file beats default
    assert s.max_segments == 6  # environment beats file
    assert s.image_pool == 13  # explicit override beats all


def test_config_file_named_by_environment(tmp_path):
    cfg = tmp_path / "custom.toml"
    cfg.write_text("weight_image = 0.25\n")
    s = load_settings({"db": str(tmp_path / "db")}, environ={"IRS_CONFIG": str(cfg)})
    assert s.weight_image == 0.25


def test_the_reported_examples_from_the_environment(tmp_path):
    cases = {
        "IRS_SEGMENT_BACKGROUND": ("pink", "setting 'segment_background': 'pink' is not one of grey, blur, keep"),
        "IRS_WEIGHT_IMAGE": ("-3", "setting 'weight_image': -3.0 is not allowed (must be a finite number >= 0)"),
        "IRS_DEVICE": ("gpu", "setting 'device': 'gpu' is not one of auto, cpu, cuda, cuda:N, mps"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(SettingsError) as err:
            load_env(tmp_path, **{key: value})
        assert str(err.value) == f"{message} (from environment {key})"


def test_paths_keep_their_case(tmp_path):
    s = load_env(tmp_path, IRS_ALLOWED_ROOTS=" /Data/Photos , ~/My Pics,")
    assert s.allowed_roots == ("/Data/Photos", "~/My Pics")
    (tmp_path / "irs.toml").write_text('allowed_roots = ["/Data/Photos", "/Mnt/X"]\n')
    assert load_settings({"db": str(tmp_path)}, environ={}).allowed_roots == ("/Data/Photos", "/Mnt/X")
    (tmp_path / "irs.toml").write_text('allowed_roots = "/Data/Photos"\n')
    assert load_settings({"db": str(tmp_path)}, environ={}).allowed_roots == ("/Data/Photos",)


def test_extensions_are_lowercased_and_dotted(tmp_path):
    assert load_env(tmp_path, IRS_EXTENSIONS=".PNG, jpg").extensions == (".png", ".jpg")
    for bad in ("", " , ", ".", ".tar.gz", "a b"):
        with pytest.raises(
            SettingsError, match=r"^setting 'extensions': .* \(must be a non-empty list of file suffixes"
        ):
            load_env(tmp_path, IRS_EXTENSIONS=bad)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("profile", "nope"),
        ("segment_background", "pink"),
        ("segmenter", "sam2"),
        ("sam_model_type", "vit_xl"),
        ("sam_generator", "fast"),
        ("device", "cuda:x"),
    ],
)
def test_choices(tmp_path, name, bad):
    with pytest.raises(SettingsError, match=rf"^setting '{name}': '{bad}' is not one of \w"):
        load_env(tmp_path, **{f"IRS_{name.upper()}": bad})


def test_choices_accept_what_irs_uses():
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert Settings(device=device).device == device
    for segmenter in ("sam", "components", "none", "oracle"):  # oracle: the benchmark passes its own
        Settings(segmenter=segmenter)


@pytest.mark.parametrize(
    ("name", "bad", "good", "allowed"),
    [
        ("weight_segment", "inf", "2", "a finite number >= 0"),
        ("weight_negative", "nan", "0", "a finite number >= 0"),
        ("pred_iou_thresh", "1.5", "1", "a finite number >= 0 and <= 1"),
        ("box_nms_thresh", "-0.1", "0", "a finite number >= 0 and <= 1"),
        ("min_segment_area", "1", "0.999", "a finite number >= 0 and < 1"),
        ("crop_padding", "11", "10", "a finite number >= 0 and <= 10"),
        ("batch_size", "0", "1", "a whole number >= 1"),
        ("max_pixels", "2.5", "5", "a whole number >= 1"),
        ("load_workers", "-1", "0", "a whole number >= 0"),
        ("image_pool", "-1", "0", "a whole number >= 0"),  # search takes at least k candidates
        ("chroma_port", "65536", "65535", "a whole number >= 1 and <= 65535"),
        ("chroma_ef_search", "0", "1", "a whole number >= 1"),
        ("decode_timeout", "0", "0.5", "a finite number > 0"),
        ("lock_timeout", "-1", "0", "a finite number >= 0"),
    ],
)
def test_ranges(tmp_path, name, bad, good, allowed):
    with pytest.raises(SettingsError, match=rf"^setting '{name}': .* \(must be {allowed}\) \(from environment"):
        load_env(tmp_path, **{f"IRS_{name.upper()}": bad})
    assert getattr(load_env(tmp_path, **{f"IRS_{name.upper()}": good}), name) == float(good)


def test_text_that_must_not_be_empty(tmp_path):
    with pytest.raises(SettingsError, match=r"^setting 'clip_model': '' is not allowed \(must be non-empty text\)"):
        load_env(tmp_path, IRS_CLIP_MODEL="")
    assert load_env(tmp_path, IRS_CHROMA_HOST="").chroma_host == ""


def test_values_of_the_wrong_type_in_the_file(tmp_path):
    path = tmp_path / "irs.toml"
    for line, name in [
        ("weight_image = [0.5]", "weight_image"),
        ("batch_size = true", "batch_size"),
        ("max_segments = 2.5", "max_segments"),
        ('clip_model = ["ViT-B-32"]', "clip_model"),
        ("extensions = [1, 2]", "extensions"),
    ]:
        path.write_text(line + "\n")
        with pytest.raises(SettingsError, match=rf"^setting '{name}': .* is not allowed .* \(from {path}\)$"):
            load_settings({"db": str(tmp_path)}, environ={})
    path.write_text("weight_image = 1\nbatch_size = 8\n")  # an int where a float is due is fine
    s = load_settings({"db": str(tmp_path)}, environ={})
    assert s.weight_image == 1.0 and isinstance(s.weight_image, float)


def test_errors_name_the_profile_and_the_arguments(tmp_path, monkeypatch):
    with pytest.raises(SettingsError, match=r"'image_pool': -1 is not allowed .* \(from arguments\)$"):
        load_settings({"db": str(tmp_path), "image_pool": -1}, environ=NO_FILE)
    monkeypatch.setitem(PROFILES, "test", {**PROFILES["test"], "max_segments": 0})
    with pytest.raises(SettingsError, match=r"'max_segments': 0 is not allowed .* \(from profile test\)$"):
        load_settings({"db": str(tmp_path), "profile": "test"}, environ=NO_FILE)


def test_replace_checks_and_tidies():
    s = Settings()
    with pytest.raises(SettingsError, match=r"^setting 'weight_image': -3.0 is not allowed"):
        s.replace(weight_image=-3)
    with pytest.raises(SettingsError, match="segment_background"):
        s.replace(segment_background="pink")
    tidy = s.replace(weight_image=1, extensions=["PNG"], allowed_roots=["/A/B "])
    assert tidy.weight_image == 1.0 and tidy.extensions == (".png",) and tidy.allowed_roots == ("/A/B",)


def test_new_timeouts():
    s = Settings()
    assert s.decode_timeout == 60.0 and s.lock_timeout == 0.0
    assert "decode_timeout" not in INDEX_FIELDS and "lock_timeout" not in INDEX_FIELDS


def test_bad_value_names_the_field(tmp_path):
    with pytest.raises(SettingsError, match="batch_size"):
        load_settings({"db": str(tmp_path)}, environ={"IRS_BATCH_SIZE": "lots"})


def test_unknown_setting_in_file_is_named(tmp_path):
    (tmp_path / "irs.toml").write_text("batchsize = 3\n")
    with pytest.raises(SettingsError, match="batchsize"):
        load_settings({"db": str(tmp_path)}, environ={})


def test_unknown_profile(tmp_path):
    with pytest.raises(SettingsError, match="profile"):
        load_settings({"db": str(tmp_path), "profile": "nope"}, environ={})


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.sampled_from(["0", "1", "0.5", "-1", "nan", "inf", "cpu", "grey", "test", ".png", "x,y"]),
    st.lists(st.one_of(st.text(), st.integers(), st.floats()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(name=st.sampled_from(sorted(_RULES)), value=ANY_VALUE, from_env=st.booleans())
def test_any_value_loads_or_is_refused_by_name(name, value, from_env):
    if from_env:
        overrides, environ = {}, {**NO_FILE, f"IRS_{name.upper()}": value if isinstance(value, str) else repr(value)}
    else:
        overrides, environ = {name: value}, NO_FILE
    try:
        s = load_settings(overrides, environ=environ)
    except SettingsError as err:
        assert f"setting {name!r}" in str(err)
    else:
        assert s.replace() == s  # what was loaded passes the rules again, unchanged
        for f in dataclasses.fields(Settings):
            assert not isinstance(getattr(s, f.name), float) or math.isfinite(getattr(s, f.name))
