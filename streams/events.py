"""Event contracts for the Kafka topics (JSON values, versioned).

Producers in other languages get the same contract from ``tutorloop schemas``. Decoding raw
bytes goes through :func:`decode_prediction` / :func:`decode_escalation`, which turn every kind
of bad input into an :class:`InvalidEventError` whose reason never contains the event's text.

Compatibility window: a worker reads the current contract version and the previous one. An
event of the previous version is validated against *that* version's contract and upgraded to
the current one (``event.upgraded_from`` says so), so producers upgrade at their own pace
until the next breaking change. Version 2 (breaking): ``top_k`` entries are objects
``{"label", "probability"}`` instead of ``[label, probability]`` pairs (tuple arrays need
JSON Schema's ``prefixItems``, which many languages' validators and code generators lack), and
``schema_version`` is required (a version-1 event without it was version 1 by default).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from tutorloop.infra.hashing import fingerprint
from tutorloop.infra.tables import DEFAULT_TENANT

SCHEMA_VERSION: Literal[2] = 2
#: The version before the current one: still read, and upgraded (the compatibility window).
PREVIOUS_VERSION: Literal[1] = 1
READABLE_VERSIONS = (PREVIOUS_VERSION, SCHEMA_VERSION)
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

    event_id: UUID = Field(description="unique per event; the sink deduplicates on it")
    ts: AwareDatetime = Field(description="event time, RFC 3339 with a timezone")
    # The contract version this event arrived in, when older than the current one.
    _upgraded_from: int | None = PrivateAttr(default=None)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @property
    def upgraded_from(self) -> int | None:
        """The previous contract version this event was read in and upgraded from, if any."""
        return self._upgraded_from


_CURRENT = Field(default=SCHEMA_VERSION, description="contract version; bumped on breaking change")
_PREVIOUS = Field(default=PREVIOUS_VERSION, description="contract version (previous)")


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    training: bool = Field(description="the user agreed that this text may train models")


class _PredictionFields(_Event):
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
    consent: Consent
    answered_by: Literal["student", "fallback", "nobody"] | None = Field(
        default=None,
        description="who answered the caller: the student, the fallback (a teacher) after the "
        "student abstained, or nobody (an abstention); absent from older producers",
    )
    served_label: _ID | None = Field(
        default=None,
        description="the label returned to the caller (the fallback's when it answered); "
        "null for an abstention; ``label`` stays the student's top label",
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text is blank")
        return value

    @property
    def key(self) -> bytes:
        return f"{self.tenant_id}/{self.user_id}".encode()


class TopK(BaseModel):
    """One of the student's top labels with its probability."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: _ID
    probability: _Prob

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, float]]) -> list[TopK]:
        """``[(label, probability), ...]`` as the contract's entries."""
        return [cls(label=label, probability=p) for label, p in pairs]


class PredictionEvent(_PredictionFields):
    """One prediction served by the student (topic ``predictions``, key tenant/user)."""

    schema_version: Literal[2] = _CURRENT
    top_k: list[TopK] = Field(default_factory=list, max_length=100)

    def without_text(self) -> PredictionEvent:
        """The same event, metadata only."""
        return self.model_copy(update={"text": None})

    @property
    def margin(self) -> float | None:
        """Top-1 minus top-2 probability, when top_k holds at least two entries."""
        probs = sorted((t.probability for t in self.top_k), reverse=True)
        return probs[0] - probs[1] if len(probs) >= 2 else None


class _PredictionV1(_PredictionFields):
    """``predictions`` in contract version 1 (read and upgraded during the window)."""

    schema_version: Literal[1] = _PREVIOUS
    top_k: list[tuple[_ID, _Prob]] = Field(
        default_factory=list, max_length=100, description="[[label, probability], ...]"
    )

    def upgraded(self) -> PredictionEvent:
        fields = self.model_dump(exclude={"schema_version", "top_k"})
        top_k = TopK.from_pairs(self.top_k)
        return _mark(PredictionEvent(**fields, top_k=top_k), PREVIOUS_VERSION)


class _EscalationFields(_Event):
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


class EscalationEvent(_EscalationFields):
    """A case escalated by the product or a person (topic ``escalations``)."""

    schema_version: Literal[2] = _CURRENT
    tenant_id: _ID | None = Field(
        default=None,
        description="the tenant the escalated prediction was served to (default: 'default' "
        "when user_id is given); with user_id it scopes the client-chosen request id",
    )
    user_id: _ID | None = Field(
        default=None,
        description="the user the escalated prediction was served to; needed when request ids "
        "are not unique across users (an escalation naming none is matched only to the one "
        "user whose prediction carries its request id, else dead-lettered)",
    )

    def to_bytes(self) -> bytes:
        # An escalation that names no owner is, on the wire, one of the previous version too.
        unnamed = {name for name in ("tenant_id", "user_id") if getattr(self, name) is None}
        return self.model_dump_json(exclude=unnamed).encode()

    @property
    def owner(self) -> tuple[str | None, str | None]:
        """The (tenant, user) this escalation names, as far as it names them."""
        if self.user_id is not None and self.tenant_id is None:
            return DEFAULT_TENANT, self.user_id
        return self.tenant_id, self.user_id


class _EscalationV1(_EscalationFields):
    """``escalations`` in contract version 1: the same fields."""

    schema_version: Literal[1] = _PREVIOUS

    def upgraded(self) -> EscalationEvent:
        fields = self.model_dump(exclude={"schema_version"})
        return _mark(EscalationEvent(**fields), PREVIOUS_VERSION)


_Upgraded = TypeVar("_Upgraded", bound=_Event)


def _mark(event: _Upgraded, version: int) -> _Upgraded:
    event._upgraded_from = version
    return event


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


def _decode(raw: bytes, model: type[E], previous: type[_PredictionV1 | _EscalationV1]) -> E:
    # Fast path: pydantic parses and validates the JSON in one pass (no NaN); then the
    # previous version's contract, for producers that have not upgraded yet.
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        pass
    try:
        return previous.model_validate_json(raw).upgraded()  # type: ignore[return-value]
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
    # Version 1 made schema_version optional (defaulting to 1); version 2 requires it.
    version = data.get("schema_version", PREVIOUS_VERSION)
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        # Only echo a number: any other value could be arbitrary producer text.
        shown = repr(version) if isinstance(version, int) else f"of type {type(version).__name__}"
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise fail(f"unknown schema_version {shown}; this consumer reads {readable}", event_id)
    try:
        (model if version == SCHEMA_VERSION else previous).model_validate(data)
    except ValidationError as exc:
        raise fail(f"v{version}: {_reason(exc)}", event_id) from None
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
    return _known_only(_decode(raw, PredictionEvent, _PredictionV1), raw, unknown)


def decode_escalation(raw: bytes, *, unknown: UnknownFields = "drop") -> EscalationEvent:
    """Parse and validate an ``escalations`` value (unknown fields as for predictions)."""
    return _known_only(_decode(raw, EscalationEvent, _EscalationV1), raw, unknown)


EVENT_TYPES: dict[str, type[_Event]] = {
    "predictions": PredictionEvent,
    "escalations": EscalationEvent,
}
_CONTRACTS: dict[int, dict[str, type[_Event]]] = {
    PREVIOUS_VERSION: {"predictions": _PredictionV1, "escalations": _EscalationV1},
    SCHEMA_VERSION: EVENT_TYPES,
}


def json_schemas(version: int = SCHEMA_VERSION) -> dict[str, dict[str, Any]]:
    """JSON Schema of every event type in one readable contract version, keyed by topic."""
    if version not in _CONTRACTS:
        raise KeyError(f"no contract version {version}; readable: {list(_CONTRACTS)}")
    schemas = {}
    for topic, model in _CONTRACTS[version].items():
        schema = model.model_json_schema()
        schema["title"] = EVENT_TYPES[topic].__name__
        schema["$id"] = f"https://tutorloop.dev/schemas/{topic}/v{version}.json"
        schema["x-kafka-topic"] = topic
        schema["x-schema-version"] = version
        if version >= 2:  # producers must say which version they send
            schema["required"] = ["schema_version", *schema.get("required", [])]
        schemas[topic] = schema
    return schemas


def now_utc() -> datetime:
    """The current time with a timezone, as the contract's ``ts`` requires."""
    return datetime.now(UTC)
