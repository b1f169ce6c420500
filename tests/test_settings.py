import pytest

from irs.settings import Settings, SettingsError, load_settings


def test_defaults(tmp_path):
    s = load_settings({"db": str(tmp_path)}, environ={})
    assert s.clip_model == Settings.clip_model and s.profile == "default"


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


def test_extensions_from_environment(tmp_path):
    s = load_settings({"db": str(tmp_path)}, environ={"IRS_EXTENSIONS": ".PNG, .jpg"})
    assert s.extensions == (".png", ".jpg")


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
