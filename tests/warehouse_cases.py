"""Put captured cases into a test warehouse the way production does: through the capture sink."""

from __future__ import annotations

from collections.abc import Sequence

from tests.streams_events import escalation, prediction
from tutorloop.infra.settings_sections import CaptureSettings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.scrubber import RegexScrubber
from tutorloop.streams.batch import RawRecord, RecordFetcher
from tutorloop.streams.policy import CapturePolicy
from tutorloop.streams.sink import CaptureSink


def regex_sink(
    warehouse: Warehouse,
    scrubber: RegexScrubber | None = None,
    *,
    fetcher: RecordFetcher | None = None,
    escalation_fetcher: RecordFetcher | None = None,
) -> CaptureSink:
    """A sink with the default policy (no audit sample) and the regex scrubber."""
    return CaptureSink(
        warehouse,
        CapturePolicy.from_settings(CaptureSettings(audit_sample_rate=0.0)),
        scrubber or RegexScrubber(),
        predictions_topic="p",
        escalations_topic="e",
        fetcher=fetcher,
        escalation_fetcher=escalation_fetcher,
    )


def capture(
    warehouse: Warehouse,
    texts: Sequence[str],
    *,
    users: Sequence[str] | None = None,
    consent: Sequence[bool] | None = None,
    human_labels: dict[int, str] | None = None,
) -> list[str]:
    """Low-confidence predictions for ``texts`` (all captured, scrubbed); return the case ids.

    ``human_labels`` maps a text's index to the label an escalation gives it.
    """
    sink = regex_sink(warehouse)
    events = [
        prediction(
            text=text,
            confidence=0.3,
            second=0.2,
            user_id=users[i] if users else f"u-{i}",
            consent=consent[i] if consent else True,
        )
        for i, text in enumerate(texts)
    ]
    records = [RawRecord(e.to_bytes(), 0, i) for i, e in enumerate(events)]
    for start in range(0, len(records), 500):
        sink.write_predictions(records[start : start + 500])
    if human_labels:
        escalations = [
            RawRecord(escalation(events[i].request_id, label).to_bytes(), 0, n)
            for n, (i, label) in enumerate(sorted(human_labels.items()))
        ]
        sink.write_escalations(escalations)
    return [str(e.event_id) for e in events]
