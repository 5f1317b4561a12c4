"""Builders of contract-valid events for the stream tests."""

from __future__ import annotations

import uuid
from typing import Any

from tutorloop.streams.events import Consent, EscalationEvent, PredictionEvent, TopK, now_utc


def prediction(
    *,
    confidence: float = 0.95,
    second: float = 0.01,
    consent: bool = True,
    text: str = "how do I top up my card?",
    request_id: str | None = None,
    user_id: str = "u-1",
    label: str = "top_up",
    **kwargs: Any,
) -> PredictionEvent:
    return PredictionEvent(
        event_id=kwargs.pop("event_id", uuid.uuid4()),
        ts=now_utc(),
        tenant_id=kwargs.pop("tenant_id", "acme"),
        user_id=user_id,
        request_id=request_id or f"req-{uuid.uuid4().hex[:12]}",
        model_version="v1",
        text=text,
        label=label,
        confidence=confidence,
        top_k=TopK.from_pairs([(label, confidence), ("other", second)]),
        consent=Consent(training=consent),
        **kwargs,
    )


def escalation(
    request_id: str,
    human_label: str | None = "card_lost",
    *,
    text: str | None = None,
    tenant_id: str | None = None,
    user_id: str | None = None,
) -> EscalationEvent:
    return EscalationEvent(
        event_id=uuid.uuid4(),
        ts=now_utc(),
        request_id=request_id,
        reason="customer_complaint",
        human_label=human_label,
        actor="agent-7",
        text=text,
        tenant_id=tenant_id,
        user_id=user_id,
    )
