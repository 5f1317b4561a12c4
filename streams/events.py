"""Event contracts for the Kafka topics (JSON values, versioned).

Producers in other languages get the same contract from ``tutorloop schemas``. Decoding raw
bytes goes through :func:`decode_prediction` / :func:`decode_escalation`, which turn every kind
of bad input into an :class:`InvalidEventError` whose reason never contains the event's text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from tutorloop.infra.hashing import fingerprint

SCHEMA_VERSION: Literal[1] = 1
MAX_TEXT_CHARS = 8192
_ID = Annotated[str, Field(min_length=1, max_length=256)]
_Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
_Prob = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Event(BaseModel):
    # Fields a newer producer added are accepted and set aside (``model_extra``): a worker
    # decides to drop or reject them (``streams.unknown_fields``). The published schema stays
    # closed: a producer sends the fields of the version it targets.
    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        str_strip_whitespace=False,
        json_schema_extra={"additionalProperties": False},
    )

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, description="contract version; bumped on breaking change"
    )
    event_id: UUID = Field(description="unique per event; the sink deduplicates on it")
    ts: AwareDatetime = Field(description="event time, RFC 3339 with a timezone")

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    training: bool = Field(description="the user agreed that this text may train models")


class PredictionEvent(_Event):
    """One prediction served by the student (topic ``predictions``, key tenant/user)."""

    tenant_id: _ID
    user_id: _ID = Field(description="pseudonymous user id, never an email or a name")
    request_id: _ID
    model_version: _ID
    text: _Text | None = Field(
        default=None,
        description="the query as served; absent when the event cannot become a training case "
        "(no consent, or the capture policy would not keep it): the audit row needs no text",
    )
    label: _ID
    confidence: _Prob
    top_k: list[tuple[_ID, _Prob]] = Field(
        default_factory=list, max_length=100, description="[[label, probability], ...]"
    )
    consent: Consent

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text is blank")
        return value

    def without_text(self) -> PredictionEvent:
        """The same event, metadata only."""
        return self.model_copy(update={"text": None})

    @property
    def margin(self) -> float | None:
        """Top-1 minus top-2 probability, when top_k holds at least two entries."""
        probs = sorted((p for _, p in self.top_k), reverse=True)
        return probs[0] - probs[1] if len(probs) >= 2 else None

    @property
    def key(self) -> bytes:
        return f"{self.tenant_id}/{self.user_id}".encode()


class EscalationEvent(_Event):
    """A case escalated by the product or a person (topic ``escalations``)."""

    request_id: _ID
    reason: Annotated[str, Field(min_length=1, max_length=256)]
    human_label: _ID | None = Field(default=None, description="gold label, when a human gave one")
    actor: _ID = Field(description="who escalated: a service name or a reviewer id")
    text: _Text | None = Field(
        default=None,
        description="the escalated query, for a prediction whose event carried no text "
        "(serving sends text only for events its capture policy keeps); never stored raw",
    )

    @property
    def key(self) -> bytes:
        return self.request_id.encode()


class InvalidEventError(ValueError):
    """Raw bytes that are not a valid event. ``reason`` is safe to log: it holds no text."""

    def __init__(self, reason: str, *, event_id: str | None, payload_sha256: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.payload_sha256 = payload_sha256


E = TypeVar("E", bound=_Event)


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        # Field names come from the producer: cap their length so no text rides along.
        field = ".".join(str(p)[:64] for p in err["loc"]) or "<root>"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _decode(raw: bytes, model: type[E]) -> E:
    # Fast path: pydantic parses and validates the JSON in one pass (no NaN).
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        pass
    # Slow path, only for bad input: find the most useful reason to report.
    digest = fingerprint(raw)

    def fail(reason: str, event_id: str | None = None) -> InvalidEventError:
        return InvalidEventError(reason, event_id=event_id, payload_sha256=digest)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"payload is not valid UTF-8 (byte {exc.start})") from None
    try:
        data: Any = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise fail(f"payload is not JSON: {type(exc).__name__} at char {_pos(exc)}") from None
    if not isinstance(data, dict):
        raise fail(f"payload is a JSON {type(data).__name__}, expected an object")
    event_id = _readable_id(data.get("event_id"))
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        # Only echo a number: any other value could be arbitrary producer text.
        shown = repr(version) if isinstance(version, int) else f"of type {type(version).__name__}"
        raise fail(
            f"unknown schema_version {shown}; this consumer reads {SCHEMA_VERSION}", event_id
        )
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise fail(_reason(exc), event_id) from None
    # Valid as a Python object but not as JSON (e.g. a value only JSON mode rejects).
    raise fail("payload failed JSON validation", event_id)


def _readable_id(value: Any) -> str | None:
    """The event id when it is a UUID; anything else might be text and is not echoed."""
    if not isinstance(value, str):
        return None
    try:
        return str(UUID(value))
    except ValueError:
        return None


def _pos(exc: ValueError) -> str:
    pos = getattr(exc, "pos", None)
    return str(pos) if pos is not None else "?"


UnknownFields = Literal["drop", "reject"]


def _known_only(event: E, raw: bytes, unknown: UnknownFields) -> E:
    if unknown == "reject" and event.model_extra:
        # Names only, cut short: a value (or a long name) could be text.
        names = ", ".join(sorted(name[:64] for name in event.model_extra)[:5])
        raise InvalidEventError(
            f"unknown field(s) {names}; this worker rejects them (streams.unknown_fields)",
            event_id=str(event.event_id),
            payload_sha256=fingerprint(raw),
        )
    return event


def decode_prediction(raw: bytes, *, unknown: UnknownFields = "drop") -> PredictionEvent:
    """Parse and validate a ``predictions`` value, or raise :class:`InvalidEventError`.

    Fields this version does not know are set aside (``event.model_extra``) or, with
    ``unknown="reject"``, make the event invalid."""
    return _known_only(_decode(raw, PredictionEvent), raw, unknown)


def decode_escalation(raw: bytes, *, unknown: UnknownFields = "drop") -> EscalationEvent:
    """Parse and validate an ``escalations`` value (unknown fields as for predictions)."""
    return _known_only(_decode(raw, EscalationEvent), raw, unknown)


EVENT_TYPES: dict[str, type[_Event]] = {
    "predictions": PredictionEvent,
    "escalations": EscalationEvent,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event type, keyed by topic."""
    schemas = {}
    for topic, model in EVENT_TYPES.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://tutorloop.dev/schemas/{topic}/v{SCHEMA_VERSION}.json"
        schema["x-kafka-topic"] = topic
        schemas[topic] = schema
    return schemas


def now_utc() -> datetime:
    """The current time with a timezone, as the contract's ``ts`` requires."""
    return datetime.now(UTC)
