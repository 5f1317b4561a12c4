from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.conftest import run_cli
from tutorloop.infra.migrations import LATEST_VERSION, SchemaTooNewError, current_version, migrate
from tutorloop.infra.warehouse import Warehouse

LINEAGE_TABLES = {
    "predictions_audit",
    "cases",
    "labels",
    "dataset_versions",
    "dataset_members",
    "training_runs",
    "model_versions",
    "gate_results",
    "promotions",
    "privacy_ledger",
    "erasures",
    "review_queue",
    "escalations",
}


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall()
    return {r[0] for r in rows}


def test_fresh_file_gets_every_lineage_table(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    with wh.connect() as con:
        assert current_version(con) == LATEST_VERSION
        assert _tables(con) >= LINEAGE_TABLES


def test_older_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    assert migrate(con, target=1) == [1]
    con.execute(
        "INSERT INTO erasures (erasure_id, ts, user_id, actor, cases_deleted, labels_deleted,"
        " dataset_versions, model_versions) VALUES ('e1', now(), 'u1', 'ops', 3, 2, '[]', '[]')"
    )
    assert "review_queue" not in _tables(con)
    con.close()

    wh = Warehouse(path)
    with wh.connect() as con:
        assert current_version(con) == LATEST_VERSION
        assert "review_queue" in _tables(con)
        assert con.execute("SELECT cases_deleted FROM erasures").fetchall() == [(3,)]
        versions = con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
        assert [v for (v,) in versions] == list(range(1, LATEST_VERSION + 1))


def test_existing_escalations_take_the_one_owner_of_their_request_id(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, target=16)
    audit = [
        ("p1", "acme", "ann", "r-own"),
        ("p2", "acme", "ann", "r-shared"),
        ("p3", "globex", "bob", "r-shared"),
    ]
    for event_id, tenant, user, request in audit:
        con.execute(
            "INSERT INTO predictions_audit (event_id, ts, tenant_id, user_id, request_id,"
            " model_version, label, confidence, consent_training, captured, policy_version)"
            " VALUES (?, now(), ?, ?, ?, 'v1', 'top_up', 0.9, true, false, 'p1')",
            [event_id, tenant, user, request],
        )
    for event_id, request in [("e1", "r-own"), ("e2", "r-shared"), ("e3", "r-unknown")]:
        con.execute(
            "INSERT INTO escalations (event_id, ts, request_id, reason, actor)"
            " VALUES (?, now(), ?, 'complaint', 'agent')",
            [event_id, request],
        )
    # Joined by request id alone before: e2's label reached both users' cases.
    for case_id, tenant, user in [("p2", "acme", "ann"), ("p3", "globex", "bob")]:
        con.execute(
            "INSERT INTO cases (case_id, request_id, ts, tenant_id, user_id, model_version, text,"
            " text_hash, capture_reason, consent_training, scrub_findings, scrub_policy_version)"
            " VALUES (?, 'r-shared', now(), ?, ?, 'v1', 't', 'h' || ?, 'low_confidence', true,"
            " '{}', 'p')",
            [case_id, tenant, user, case_id],
        )
        con.execute(
            "INSERT INTO labels (label_id, case_id, source, label, confidence, actor, created_at)"
            " VALUES ('human:e2:' || ?, ?, 'human', 'top_up', 1.0, 'agent', now())",
            [case_id, case_id],
        )
    con.execute("UPDATE escalations SET case_id = 'p2' WHERE event_id = 'e2'")
    con.close()
    with Warehouse(path).connect() as con:
        owners = con.execute(
            "SELECT event_id, tenant_id, user_id FROM escalations ORDER BY 1"
        ).fetchall()
    assert owners == [("e1", "acme", "ann"), ("e2", None, None), ("e3", None, None)]
    with Warehouse(path).connect() as con:
        assert con.execute("SELECT count(*) FROM labels").fetchall() == [(0,)]
        assert con.execute("SELECT case_id FROM escalations WHERE event_id = 'e2'").fetchall() == [
            (None,)
        ]


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with Warehouse(path).connect():
        pass
    con = duckdb.connect(str(path))
    assert migrate(con) == []
    con.close()


def _newer_file(path: Path) -> None:
    con = duckdb.connect(str(path))
    migrate(con)
    con.execute(
        "INSERT INTO schema_version (version, description) VALUES (?, 'from the future')",
        [LATEST_VERSION + 5],
    )
    con.close()


def test_newer_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    _newer_file(path)
    with (
        pytest.raises(SchemaTooNewError, match=f"schema version {LATEST_VERSION + 5}"),
        Warehouse(path).connect(),
    ):
        pass


def test_cli_on_newer_file_fails_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    _newer_file(path)
    result = run_cli("warehouse", "status", env={"TUTORLOOP_WAREHOUSE__PATH": str(path)})
    assert result.returncode == 1
    assert "upgrade tutorloop" in result.stderr
    assert "Traceback" not in result.stderr


def test_primary_keys_make_inserts_idempotent(warehouse: Warehouse) -> None:
    row = ("ev-1", "t", "u", "r", "v1", "card_lost", 0.4, False, False, "p1")
    sql = (
        "INSERT INTO predictions_audit (event_id, ts, tenant_id, user_id, request_id, "
        "model_version, label, confidence, consent_training, captured, policy_version) "
        "VALUES (?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    )
    for _ in range(3):
        with warehouse.transaction() as con:
            con.execute(sql, row)
    assert warehouse.query("SELECT count(*) FROM predictions_audit") == [(1,)]
    with pytest.raises(duckdb.ConstraintException), warehouse.transaction() as con:
        con.execute(sql.replace(" ON CONFLICT DO NOTHING", ""), row)


def test_failed_transaction_rolls_back(warehouse: Warehouse) -> None:
    with pytest.raises(RuntimeError), warehouse.transaction() as con:
        con.execute(
            "INSERT INTO erasures (erasure_id, ts, user_id, actor, cases_deleted, labels_deleted,"
            " dataset_versions, model_versions)"
            " VALUES ('e1', now(), 'u1', 'ops', 1, 1, '[]', '[]')"
        )
        raise RuntimeError("boom")
    assert warehouse.query("SELECT count(*) FROM erasures") == [(0,)]
