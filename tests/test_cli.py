from __future__ import annotations

from tests.conftest import run_cli
from tutorloop.infra.migrations import LATEST_VERSION


def test_help_lists_the_command_groups() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for group in ("broker", "warehouse", "config", "schemas", "doctor"):
        assert group in result.stdout


def test_doctor_round_trips_an_event_through_a_real_broker(broker_bootstrap: str) -> None:
    env = {
        "TUTORLOOP_BROKER__BOOTSTRAP_SERVERS": broker_bootstrap,
        "TUTORLOOP_BROKER__TOPIC_PREFIX": "doctor-test-",
    }
    result = run_cli("doctor", env=env)
    assert result.returncode == 0, result.stderr
    assert "event round trip" in result.stdout
    rows = run_cli("warehouse", "sql", "SELECT count(*) AS n FROM predictions_audit", "--json")
    assert '"n": 0' in rows.stdout  # the doctor's probe row was rolled back


def test_doctor_reports_a_missing_broker() -> None:
    result = run_cli("doctor", env={"TUTORLOOP_BROKER__PORT": "1"})
    assert result.returncode == 1
    assert "broker" in result.stderr


def test_warehouse_sql_is_read_only() -> None:
    assert run_cli("warehouse", "sql", "DELETE FROM schema_version").returncode == 0
    rows = run_cli("warehouse", "sql", "SELECT count(*) AS n FROM schema_version", "--json")
    assert f'"n": {LATEST_VERSION}' in rows.stdout
    bad = run_cli("warehouse", "sql", "SELECT * FROM no_such_table")
    assert bad.returncode == 2
    assert "no_such_table" in bad.stderr
