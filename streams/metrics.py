"""Per-agent counters: Prometheus text on an optional port and a periodic log line."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tutorloop.streams.batch import BatchOutcome

log = logging.getLogger(__name__)


class StreamMetrics:
    """Counters of one worker process, labelled by agent."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ns = "tutorloop_streams"

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"{ns}_{name}", doc, ["agent", *labels], registry=self.registry)

        self._consumed = counter("consumed", "records read")
        self._audited = counter("audited", "predictions audited")
        self._captured = counter("captured", "cases captured", "reason")
        self._dead = counter("dead_lettered", "records sent to the DLQ")
        self._dupes = counter("duplicates", "records already in the warehouse")
        self._escalations = counter("escalations", "escalations stored")
        self._human = counter("human_labels", "gold labels from escalations")
        self._erased = counter("erased_skipped", "content of erased users not stored again")
        self._unrecoverable = counter(
            "unrecoverable", "escalated predictions whose text could not be read back"
        )
        self._no_text = counter("no_text", "capturable predictions that serving sent without text")
        self._unknown = counter("unknown_fields", "events with fields this worker does not know")
        self._parked = counter("parked", "escalated predictions Kafka could not give back yet")
        self._transient = counter(
            "transient_retries", "batch writes retried because the warehouse was busy"
        )
        self._previous = counter(
            "previous_version", "events read in the previous contract version (upgraded)"
        )
        self._latency = Histogram(
            f"{ns}_batch_seconds",
            "batch processing time (decode to commit)",
            ["agent"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._lag = Gauge(
            f"{ns}_lag",
            "records behind the high watermark, where the broker reports it",
            ["topic", "partition"],
            registry=self.registry,
        )
        self._prefix = f"{ns}_"

    def record(self, agent: str, outcome: BatchOutcome, seconds: float) -> None:
        self._consumed.labels(agent).inc(outcome.consumed)
        self._audited.labels(agent).inc(outcome.audited)
        for reason, n in outcome.captured.items():
            self._captured.labels(agent, reason).inc(n)
        self._dead.labels(agent).inc(len(outcome.dead_letters))
        self._dupes.labels(agent).inc(outcome.duplicates)
        self._escalations.labels(agent).inc(outcome.escalations)
        self._human.labels(agent).inc(outcome.human_labels)
        self._erased.labels(agent).inc(outcome.erased)
        self._unrecoverable.labels(agent).inc(outcome.unrecoverable)
        self._no_text.labels(agent).inc(outcome.no_text)
        self._unknown.labels(agent).inc(outcome.unknown_fields)
        self._parked.labels(agent).inc(outcome.parked)
        self._previous.labels(agent).inc(outcome.previous_version)
        self._latency.labels(agent).observe(seconds)

    def transient(self, agent: str) -> None:
        """One retry of a batch after a transient failure (the warehouse held elsewhere)."""
        self._transient.labels(agent).inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self._lag.labels(topic, str(partition)).set(lag)

    def totals(self) -> dict[str, int]:
        """Each counter summed over its labels (e.g. ``{"consumed": 400, ...}``)."""
        totals: dict[str, int] = {}
        for family in self.registry.collect():
            if family.type != "counter":
                continue
            samples = [s.value for s in family.samples if s.name.endswith("_total")]
            if samples:
                totals[family.name.removeprefix(self._prefix)] = int(sum(samples))
        return totals

    def log_line(self) -> None:
        totals = self.totals()
        log.info("streams: %s", " ".join(f"{k}={v}" for k, v in sorted(totals.items())) or "idle")

    def serve(self, port: int) -> Any:
        """Expose the counters as Prometheus text on 127.0.0.1:PORT."""
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        return server
