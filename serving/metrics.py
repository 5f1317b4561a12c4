"""What ``GET /metrics`` exports, in Prometheus text format (one registry per server).

Counters and histograms follow Prometheus conventions (rates are computed by the scraper);
the rates of the last live window are also gauges, for dashboards without PromQL.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tutorloop.serving.prediction import Prediction

_NS = "tutorloop_serving"
_LATENCY = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_CONFIDENCE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class ServingMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.latency = Histogram(f"{_NS}_request_seconds", "request latency, end to end in the "
                                 "server", ["route"], registry=r, buckets=_LATENCY)  # fmt: skip
        self.requests = Counter(f"{_NS}_requests", "requests by route and status",
                                ["route", "status"], registry=r)  # fmt: skip
        self.in_flight = Gauge(f"{_NS}_in_flight", "requests being served", registry=r)
        self.rejected = Counter(f"{_NS}_rejected", "requests refused before scoring",
                                ["reason"], registry=r)  # fmt: skip
        self.predictions = Counter(f"{_NS}_predictions", "predictions by who answered",
                                   ["answered_by"], registry=r)  # fmt: skip
        self.abstentions = Counter(f"{_NS}_abstentions", "student below abstain_below",
                                   registry=r)  # fmt: skip
        self.fallbacks = Gauge(f"{_NS}_fallbacks", "fallback asks by outcome (a count)",
                               ["outcome"], registry=r)  # fmt: skip
        self.confidence = Histogram(f"{_NS}_confidence", "student confidence",
                                    registry=r, buckets=_CONFIDENCE)  # fmt: skip
        self.labels = Counter(f"{_NS}_label", "predictions per top-1 label", ["label"],
                              registry=r)  # fmt: skip
        self.model = Gauge(f"{_NS}_model_info", "served versions (1 = loaded)",
                           ["version", "role"], registry=r)  # fmt: skip
        self.window = Gauge(f"{_NS}_window", "last live window: abstention_rate, "
                            "fallback_rate, confidence_psi, label_psi, confidence_ks, "
                            "rollout_agreement", ["measure"], registry=r)  # fmt: skip
        self.drift_breach = Gauge(f"{_NS}_drift_breach", "1 when the last window drifted",
                                  registry=r)  # fmt: skip

    def observe(self, prediction: Prediction) -> None:
        self.predictions.labels(prediction.answered_by).inc()
        if prediction.abstained:
            self.abstentions.inc()
        self.confidence.observe(prediction.confidence)
        self.labels.labels(prediction.top_k[0][0]).inc()

    def gauge_from(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge read at scrape time (the emitter's queue depth and drops)."""
        Gauge(f"{_NS}_{name}", doc, registry=self.registry).set_function(read)

    def set_models(self, roles: dict[str, str | None]) -> None:
        self.model.clear()
        for role, version in roles.items():
            if version:
                self.model.labels(version, role).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
