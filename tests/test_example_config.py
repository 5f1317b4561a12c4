from __future__ import annotations

from tests.conftest import REPO
from tutorloop.infra.settings import load_settings


def test_shipped_example_config_is_valid() -> None:
    settings = load_settings(REPO / "tutorloop.example.toml")
    assert settings.broker.partitions == 3
