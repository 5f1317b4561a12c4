from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.streams_events import escalation, prediction
from tutorloop.streams.events import (
    MAX_TEXT_CHARS,
    InvalidEventError,
    decode_escalation,
    decode_prediction,
    json_schemas,
)

CANARY = "Jane Canary jane.canary@example.com 4111 1111 1111 1111"


def _prediction(**overrides: Any) -> dict[str, Any]:
    event = prediction(
        confidence=0.42, second=0.40, text=CANARY, label="card_lost", request_id="r-1"
    )
    data: dict[str, Any] = json.loads(event.model_dump_json())
    data.update(overrides)
    return data


def _raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_valid_prediction_round_trips() -> None:
    data = _prediction()
    event = decode_prediction(_raw(data))
    assert event.text == CANARY
    assert event.margin == pytest.approx(0.02)
    assert decode_prediction(event.to_bytes()) == event
    assert event.key == b"acme/u-1"


def _without(key: str) -> dict[str, Any]:
    data = _prediction()
    del data[key]
    return data


BAD = [
    ("not json", b"{not json", "not JSON"),
    ("array", b"[1, 2]", "JSON list"),
    ("missing field", _raw(_without("user_id")), "user_id: Field required"),
    ("wrong type", _raw(_prediction(confidence="high")), "confidence"),
    ("unknown version", _raw(_prediction(schema_version=7)), "unknown schema_version 7"),
    ("empty text", _raw(_prediction(text="")), "text"),
    ("blank text", _raw(_prediction(text="   ")), "text is blank"),
    ("huge text", _raw(_prediction(text="x" * 1_000_000)), "text"),
    ("invalid utf-8", b'{"text": "\xff\xfe"}', "not valid UTF-8"),
    (
        "nan confidence",
        _raw(_prediction()).replace(b'"confidence": 0.42', b'"confidence": NaN'),
        "not JSON",
    ),
    ("negative confidence", _raw(_prediction(confidence=-0.1)), "confidence"),
    (
        "probability above one",
        _raw(_prediction(top_k=[{"label": "a", "probability": 1.5}])),
        "top_k",
    ),
    ("v1 pairs in a v2 event", _raw(_prediction(top_k=[["a", 0.5]])), "v2: top_k.0"),
    ("naive timestamp", _raw(_prediction(ts="2026-11-28T10:00:00")), "ts"),
    ("bad uuid", _raw(_prediction(event_id="nope")), "event_id"),
    ("missing consent", _raw(_without("consent")), "consent"),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [(r, e) for _, r, e in BAD], ids=[name for name, _, _ in BAD]
)
def test_bad_input_is_rejected_with_a_reason_that_holds_no_text(raw: bytes, expected: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        decode_prediction(raw)
    err = info.value
    assert expected in err.reason
    assert "Canary" not in err.reason and "4111" not in err.reason
    assert len(err.payload_sha256) == 64


def test_reason_keeps_event_id_when_readable() -> None:
    data = _prediction(confidence=2)
    with pytest.raises(InvalidEventError) as info:
        decode_prediction(_raw(data))
    assert info.value.event_id == data["event_id"]


def test_escalation_contract() -> None:
    event = escalation("r-1", "card_lost")
    assert decode_escalation(event.to_bytes()) == event
    with pytest.raises(InvalidEventError, match="actor"):
        decode_escalation(_raw({**json.loads(event.to_bytes()), "actor": ""}))


def test_json_schema_describes_the_contract() -> None:
    schemas = json_schemas()
    pred = schemas["predictions"]
    assert set(pred["required"]) >= {
        "event_id",
        "ts",
        "tenant_id",
        "user_id",
        "request_id",
        "model_version",
        "label",
        "confidence",
        "consent",
    }
    # Text is optional on both: serving sends it only where capture needs it.
    assert "text" not in pred["required"]
    assert "text" not in schemas["escalations"]["required"]
    [text_schema, _null] = pred["properties"]["text"]["anyOf"]
    assert text_schema["maxLength"] == MAX_TEXT_CHARS
    assert pred["additionalProperties"] is False
    assert "human_label" in schemas["escalations"]["properties"]


def test_schemas_cli_prints_and_writes(tmp_path: Path) -> None:
    printed = run_cli("schemas", "--topic", "predictions", "--version", "2")
    assert printed.returncode == 0, printed.stderr
    schema = json.loads(printed.stdout)
    assert schema["x-kafka-topic"] == "predictions" and schema["x-schema-version"] == 2
    every = json.loads(run_cli("schemas").stdout)
    assert every["current_version"] == 2 and every["readable_versions"] == [1, 2]
    assert set(every["schemas"]["escalations"]) == {"v1", "v2"}
    written = run_cli("schemas", "--out", str(tmp_path / "s"))
    assert written.returncode == 0, written.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "escalations.v1.schema.json",
        "escalations.v2.schema.json",
        "predictions.v1.schema.json",
        "predictions.v2.schema.json",
    ]
    for args, message in [
        (("--topic", "nope"), "unknown topic"),
        (("--version", "3"), "no contract version 3"),
    ]:
        bad = run_cli("schemas", *args)
        assert bad.returncode == 2 and message in bad.stderr


def test_a_newer_producers_extra_field_is_set_aside_or_rejected_by_setting() -> None:
    # A producer one minor version ahead adds an optional field; this (v1) worker reads on.
    raw = _raw(_prediction(channel="mobile", note="Canary Person 4111"))
    event = decode_prediction(raw)
    assert event.model_extra == {"channel": "mobile", "note": "Canary Person 4111"}
    with pytest.raises(InvalidEventError) as info:
        decode_prediction(raw, unknown="reject")
    assert "unknown field(s) channel, note" in info.value.reason
    assert "Canary" not in info.value.reason and "mobile" not in info.value.reason
    assert json_schemas()["predictions"]["additionalProperties"] is False  # producers: closed


def _as_version_1(data: dict[str, Any]) -> dict[str, Any]:
    pairs = [[t["label"], t["probability"]] for t in data["top_k"]]
    return {**data, "schema_version": 1, "top_k": pairs}


def test_a_previous_version_producer_is_read_and_upgraded_during_the_window() -> None:
    current = _prediction()
    old = _as_version_1(current)
    event = decode_prediction(_raw(old))
    assert event.upgraded_from == 1 and event.schema_version == 2
    assert event.top_k == decode_prediction(_raw(current)).top_k
    assert event.margin == pytest.approx(0.02)
    assert decode_prediction(_raw(current)).upgraded_from is None
    # Version 1 made schema_version optional: without it, an event is read as version 1.
    del old["schema_version"]
    assert decode_prediction(_raw(old)).upgraded_from == 1
    # An invalid version-1 event is judged by the version-1 contract.
    with pytest.raises(InvalidEventError, match=r"v1: top_k\.0\.1"):
        decode_prediction(_raw({**old, "top_k": [["a", 1.5]]}))
    older = json.loads(escalation("r-1", "card_lost").to_bytes())
    assert decode_escalation(_raw({**older, "schema_version": 1})).upgraded_from == 1


def test_the_published_schemas_hold_for_an_independent_validator() -> None:
    """Producers in other languages validate with their own tools: the schemas must accept
    the events we send and reject the other version's shape."""
    from jsonschema import Draft202012Validator

    validators = {
        version: {
            topic: Draft202012Validator(schema) for topic, schema in json_schemas(version).items()
        }
        for version in (1, 2)
    }
    for by_topic in validators.values():
        for validator in by_topic.values():
            Draft202012Validator.check_schema(validator.schema)
    current, old = _prediction(), _as_version_1(_prediction())
    assert validators[2]["predictions"].is_valid(current)
    assert validators[1]["predictions"].is_valid(old)
    assert not validators[1]["predictions"].is_valid(current)
    assert not validators[2]["predictions"].is_valid(old)
    assert not validators[2]["predictions"].is_valid(
        {k: v for k, v in current.items() if k != "schema_version"}
    )
    assert not validators[2]["predictions"].is_valid({**current, "confidence": 1.5})
    esc = json.loads(escalation("r-1", "card_lost").to_bytes())
    assert validators[2]["escalations"].is_valid(esc)
    assert validators[1]["escalations"].is_valid({**esc, "schema_version": 1})
