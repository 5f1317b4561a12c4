"""The rows the sink writes: Arrow schemas of its own tables and the case row of a captured event.

``case_row`` holds the scrubbed text only; the raw text of the event never leaves the sink.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from tutorloop.infra.hashing import case_text_hash
from tutorloop.privacy.scrubber import ScrubResult
from tutorloop.streams.events import PredictionEvent

NO_CONSENT = "no_consent"
NO_TEXT = "no_text"


def audit_reason(event: PredictionEvent, reason: str | None) -> str | None:
    """The audit's capture_reason for a prediction the policy flagged but did not capture."""
    if reason is None:
        return None
    return NO_CONSENT if not event.consent.training else NO_TEXT


AUDIT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("tenant_id", pa.string()),
        ("user_id", pa.string()),
        ("request_id", pa.string()),
        ("model_version", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float64()),
        ("margin", pa.float64()),
        ("consent_training", pa.bool_()),
        ("captured", pa.bool_()),
        ("capture_reason", pa.string()),
        ("policy_version", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("answered_by", pa.string()),
        ("served_label", pa.string()),
    ]
)

ESCALATION_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("tenant_id", pa.string()),
        ("user_id", pa.string()),
        ("reason", pa.string()),
        ("human_label", pa.string()),
        ("actor", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)


def case_row(event: PredictionEvent, scrubbed: ScrubResult, reason: str) -> dict[str, Any]:
    return {
        "case_id": str(event.event_id),
        "request_id": event.request_id,
        "prediction_event_id": str(event.event_id),
        "ts": event.ts,
        "tenant_id": event.tenant_id,
        "user_id": event.user_id,
        "model_version": event.model_version,
        "text": scrubbed.text,
        "text_hash": case_text_hash(scrubbed.text),
        "predicted_label": event.label,
        "confidence": event.confidence,
        "capture_reason": reason,
        "consent_training": event.consent.training,
        "scrub_findings": json.dumps(scrubbed.findings, sort_keys=True),
        "scrub_policy_version": scrubbed.policy_version,
    }
