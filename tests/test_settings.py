from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from tutorloop.infra.settings import ConfigError, load_settings


def test_no_file_gives_single_machine_defaults() -> None:
    s = load_settings()
    assert s.broker.embedded
    assert s.data_dir == Path("tutorloop-data")
    assert s.warehouse_path == Path("tutorloop-data/warehouse.duckdb")
    assert s.topic("predictions") == "predictions"


def test_toml_file_in_cwd_is_read(tmp_path: Path) -> None:
    (tmp_path / "tutorloop.toml").write_text(
        'data_dir = "/srv/tl"\n[broker]\npartitions = 6\ntopic_prefix = "prod."\n'
    )
    s = load_settings()
    assert s.data_dir == Path("/srv/tl")
    assert s.broker.partitions == 6
    assert s.topic("predictions.dlq") == "prod.predictions.dlq"


def test_environment_overrides_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text("[broker]\npartitions = 6\nport = 20000\n")
    monkeypatch.setenv("TUTORLOOP_CONFIG", str(cfg))
    monkeypatch.setenv("TUTORLOOP_BROKER__PARTITIONS", "9")
    s = load_settings()
    assert s.broker.partitions == 9  # from the environment
    assert s.broker.port == 20000  # the file's other key survives


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[broker]\nport = 'abc'\n", "invalid setting 'broker.port' (config file)"),
        ("[broker]\npartitions = 0\n", "'broker.partitions' (config file)"),
        ("[broker]\nstorage = 'disk'\n", "'broker.storage'"),
        ("[broker]\nprt = 1\n", "unknown setting 'broker.prt'"),
        ("log_level = 'LOUD'\n", "'log_level'"),
        ("[broker\n", "is not valid TOML"),
    ],
)
def test_wrong_file_value_is_one_line_naming_the_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    (tmp_path / "tutorloop.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_wrong_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUTORLOOP_WAREHOUSE__LOCK_TIMEOUT_S", "-1")
    with pytest.raises(ConfigError, match="TUTORLOOP_WAREHOUSE__LOCK_TIMEOUT_S"):
        load_settings()


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_cli_rejects_bad_config_with_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "tutorloop.toml").write_text("[warehouse]\nlock_timeout_s = 'soon'\n")
    result = run_cli("config", "check")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "warehouse.lock_timeout_s" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_config_show_reflects_env(tmp_path: Path) -> None:
    result = run_cli("config", "show", "--json", env={"TUTORLOOP_BROKER__PARTITIONS": "7"})
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    assert data["broker"]["partitions"] == 7
    assert data["_resolved"]["config_file"] == "(none: defaults)"


def test_serving_keys_moved_from_registry_still_work_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "tutorloop.toml").write_text(
        "[registry]\nserve_port = 9000\nabstain_below = 0.3\nmin_accuracy = 0.7\n"
        "[serving]\nabstain_below = 0.4\n"
    )
    monkeypatch.setenv("TUTORLOOP_REGISTRY__SERVE_THREADS", "2")
    with caplog.at_level("WARNING"):
        s = load_settings()
    assert s.serving.port == 9000 and s.serving.threads == 2
    assert s.serving.abstain_below == 0.4  # the new key wins over the old one
    assert s.registry.min_accuracy == 0.7
    warned = caplog.text
    assert "registry.serve_port is deprecated" in warned and "use serving.port" in warned
    assert "registry.serve_threads is deprecated" in warned


def test_defaults_serve_on_loopback() -> None:
    s = load_settings()
    assert (s.serving.host, s.serving.port, s.serving.abstain_below) == ("127.0.0.1", 8080, 0.5)


def test_a_secret_in_a_setting_is_never_echoed() -> None:
    key = "sk-live-51Habc123XYZ456def789"
    with pytest.raises(ConfigError) as err:
        load_settings(teacher={"openai": {"api_key_env": key}})
    message = str(err.value)
    assert "teacher.openai.api_key_env" in message and "not shown" in message
    assert key not in message and "51Habc" not in message
    with pytest.raises(ConfigError) as plain:
        load_settings(broker={"partitions": "many"})
    assert "got 'many'" in str(plain.value)  # ordinary values are still shown
