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
    ("probability above one", _raw(_prediction(top_k=[["a", 1.5]])), "top_k"),
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
    printed = run_cli("schemas", "--topic", "predictions")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["x-kafka-topic"] == "predictions"
    written = run_cli("schemas", "--out", str(tmp_path / "s"))
    assert written.returncode == 0, written.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "escalations.v1.schema.json",
        "predictions.v1.schema.json",
    ]
    bad = run_cli("schemas", "--topic", "nope")
    assert bad.returncode == 2
    assert "unknown topic" in bad.stderr


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
