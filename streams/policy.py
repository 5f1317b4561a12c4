"""The capture policy: which predictions become cases, and why.

Decisions are deterministic functions of the event (the audit sample hashes the event id), so
a batch reprocessed after a crash makes exactly the same choices.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from tutorloop.infra.hashing import fingerprint, stable_unit
from tutorloop.infra.settings_sections import CaptureSettings
from tutorloop.infra.tables import CaptureReason
from tutorloop.streams.events import PredictionEvent


@dataclass(frozen=True)
class CapturePolicy:
    confidence_below: float
    margin_below: float
    audit_sample_rate: float
    always_labels: frozenset[str]

    @classmethod
    def from_settings(cls, cfg: CaptureSettings) -> CapturePolicy:
        return cls(
            confidence_below=cfg.confidence_below,
            margin_below=cfg.margin_below,
            audit_sample_rate=cfg.audit_sample_rate,
            always_labels=frozenset(cfg.always_labels),
        )

    @functools.cached_property
    def version(self) -> str:
        """A content hash of the rules, stored with every audit row."""
        spec = json.dumps(
            {
                "confidence_below": self.confidence_below,
                "margin_below": self.margin_below,
                "audit_sample_rate": self.audit_sample_rate,
                "always_labels": sorted(self.always_labels),
            },
            sort_keys=True,
        )
        return "cap-" + fingerprint(spec, length=10)

    def reason(self, event: PredictionEvent) -> str | None:
        """Why this prediction is captured (the first rule that fires), or None."""
        if event.confidence < self.confidence_below:
            return CaptureReason.LOW_CONFIDENCE
        margin = event.margin
        if margin is not None and margin < self.margin_below:
            return CaptureReason.LOW_MARGIN
        if event.label in self.always_labels:
            return CaptureReason.WATCHED_LABEL
        if self.audit_sample_rate > 0 and stable_unit(str(event.event_id)) < self.audit_sample_rate:
            return CaptureReason.AUDIT_SAMPLE
        return None
