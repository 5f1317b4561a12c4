"""Client-chosen request ids join escalations to predictions only with the same tenant and user.

Each test sends the same request id from two users (or two tenants), as independent clients
do, on DuckDB and on a real PostgreSQL server.
"""

from __future__ import annotations

import json

import pytest

from tests.streams_events import escalation, prediction
from tests.warehouse_cases import regex_sink
from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.erasure import forget
from tutorloop.streams.batch import RawRecord
from tutorloop.streams.escalation_owner import AMBIGUOUS, MISMATCH
from tutorloop.streams.sink import CaptureSink

SHARED = "order-1001"  # the request id both clients chose


class _Log:
    def __init__(self) -> None:
        self.records: dict[tuple[int, int], bytes] = {}

    def fetch(self, partition: int, offset: int) -> bytes | None:
        return self.records.get((partition, offset))


def _records(*events: object, log: _Log | None = None, start: int = 0) -> list[RawRecord]:
    out = []
    for i, ev in enumerate(events, start):
        raw = ev.to_bytes()  # type: ignore[attr-defined]
        out.append(RawRecord(raw, 0, i))
        if log is not None:
            log.records[(0, i)] = raw
    return out


@pytest.fixture
def predictions_log() -> _Log:
    return _Log()


@pytest.fixture
def escalations_log() -> _Log:
    return _Log()


@pytest.fixture
def sink(any_warehouse: Warehouse, predictions_log: _Log, escalations_log: _Log) -> CaptureSink:
    return regex_sink(any_warehouse, fetcher=predictions_log, escalation_fetcher=escalations_log)


def _labels(warehouse: Warehouse) -> list[tuple[str, str, str]]:
    return sorted(
        (str(t), str(u), str(label))
        for t, u, label in warehouse.query(
            "SELECT c.tenant_id, c.user_id, l.label FROM labels l JOIN cases c USING (case_id)"
            " WHERE l.source = 'human'"
        )
    )


def test_a_human_label_lands_on_its_own_users_case_only(
    sink: CaptureSink, any_warehouse: Warehouse
) -> None:
    acme = prediction(confidence=0.2, request_id=SHARED, user_id="ann", tenant_id="acme")
    globex = prediction(confidence=0.2, request_id=SHARED, user_id="ann", tenant_id="globex")
    sink.write_predictions(_records(acme, globex))
    out = sink.write_escalations(
        _records(escalation(SHARED, "card_lost", tenant_id="globex", user_id="ann"))
    )
    assert out.human_labels == 1 and not out.dead_letters
    assert _labels(any_warehouse) == [("globex", "ann", "card_lost")]


def test_an_escalation_naming_nobody_is_dead_lettered_when_the_request_id_is_shared(
    sink: CaptureSink, any_warehouse: Warehouse
) -> None:
    ann = prediction(confidence=0.2, request_id=SHARED, user_id="ann")
    bob = prediction(confidence=0.2, request_id=SHARED, user_id="bob")
    sink.write_predictions(_records(ann, bob))
    out = sink.write_escalations(_records(escalation(SHARED, "card_lost")))
    assert [d.reason for d in out.dead_letters] == [AMBIGUOUS]
    assert SHARED not in out.dead_letters[0].to_bytes().decode()
    assert _labels(any_warehouse) == []
    assert any_warehouse.query("SELECT count(*) FROM escalations") == [(0,)]


def test_an_escalation_whose_user_does_not_match_its_prediction_is_dead_lettered(
    sink: CaptureSink, any_warehouse: Warehouse
) -> None:
    sink.write_predictions(_records(prediction(confidence=0.2, request_id=SHARED, user_id="ann")))
    wrong = escalation(SHARED, "card_lost", tenant_id="acme", user_id="mallory")
    out = sink.write_escalations(_records(wrong))
    [letter] = out.dead_letters
    assert letter.reason == MISMATCH and letter.event_id == str(wrong.event_id)
    assert _labels(any_warehouse) == []
    assert any_warehouse.query("SELECT count(*) FROM escalations") == [(0,)]


def test_a_text_less_prediction_never_takes_another_users_escalation_text(
    sink: CaptureSink, any_warehouse: Warehouse, escalations_log: _Log
) -> None:
    # Ann escalates first, with her text; Bob's text-less prediction of the same request id
    # arrives, then Ann's.
    lent = escalation(
        SHARED, "card_lost", text="Anncanary lost card", tenant_id="acme", user_id="ann"
    )
    sink.write_escalations(_records(lent, log=escalations_log))
    bob = prediction(confidence=0.99, request_id=SHARED, user_id="bob").without_text()
    assert sink.write_predictions(_records(bob)).human_labels == 0
    assert any_warehouse.query("SELECT count(*) FROM cases") == [(0,)]
    ann = prediction(confidence=0.99, request_id=SHARED, user_id="ann").without_text()
    out = sink.write_predictions(_records(ann, start=1))
    assert out.human_labels == 1
    cases = any_warehouse.query("SELECT user_id, text FROM cases")
    assert [(str(user), str(text)[:9]) for user, text in cases] == [("ann", "Anncanary")]


def test_an_erased_users_request_id_does_not_suppress_another_users_escalation(
    sink: CaptureSink, any_warehouse: Warehouse, predictions_log: _Log
) -> None:
    carol = prediction(confidence=0.99, request_id=SHARED, user_id="carol", text="Carolcanary")
    dave = prediction(confidence=0.99, request_id=SHARED, user_id="dave", text="Davecanary")
    sink.write_predictions(_records(carol, dave, log=predictions_log))
    forget(any_warehouse, "carol", actor="dpo", tenant_id="acme")
    out = sink.write_escalations(
        _records(
            escalation(SHARED, "card_lost", tenant_id="acme", user_id="dave"),
            escalation(SHARED, "close_account", tenant_id="acme", user_id="carol"),
        )
    )
    assert out.erased == 1 and out.human_labels == 1 and not out.dead_letters
    assert _labels(any_warehouse) == [("acme", "dave", "card_lost")]
    dump = json.dumps(any_warehouse.query("SELECT * FROM cases"), default=str)
    assert "Carolcanary" not in dump and "Davecanary" in dump


def test_an_early_escalation_of_a_user_erased_before_their_prediction_arrives_is_deleted(
    sink: CaptureSink, any_warehouse: Warehouse
) -> None:
    carol = prediction(confidence=0.99, request_id=SHARED, user_id="carol", text="Carolcanary")
    sink.write_escalations(_records(escalation(SHARED, "close_account")))  # names nobody
    forget(any_warehouse, "carol", actor="dpo", tenant_id="acme")
    sink.write_predictions(_records(carol))  # her (replayed) prediction arrives late
    assert any_warehouse.query("SELECT count(*) FROM escalations") == [(0,)]
    assert _labels(any_warehouse) == []
