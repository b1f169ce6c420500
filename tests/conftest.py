"""Shared fixtures: the test profile (tiny random models), synthetic folders, an opened index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from irs.index import Index
from irs.settings import load_settings
from irs.synthetic import write_folder

# Never reach for a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def scenes_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight synthetic scenes (read-only: copy before changing)."""
    folder = tmp_path_factory.mktemp("scenes")
    write_folder(folder, 8, seed=3, side=192)
    return folder


@pytest.fixture
def test_settings(tmp_path: Path):
    return load_settings({"profile": "test", "db": str(tmp_path / "db")}, environ={})


@pytest.fixture
def index(test_settings):
    idx = Index(test_settings)
    yield idx
    idx.close()


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: the test profile, no hub access."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRS_")}
    env.update({"IRS_PROFILE": "test", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}, **extra)
    return env
