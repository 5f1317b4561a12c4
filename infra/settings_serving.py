"""The ``[serving]`` section: the HTTP server, its limits and security, the fallback, and the
live windows (rollouts and drift)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tutorloop.infra.settings_sections import _Section


class ServingSettings(_Section):
    """How the champion is served (``tutorloop serve``, the Python API, the latency gate)."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=0, le=65535)
    threads: int = Field(default=1, ge=0, description="ONNX Runtime threads per model call")
    abstain_below: float = Field(
        default=0.5, ge=0, le=1, description="serving abstains below this confidence"
    )
    open_set: bool = Field(
        default=False,
        description="also abstain when the model's open-set scorer calls the input unknown "
        "(off: measured on Banking77, it costs known intents as much as max-softmax does)",
    )
    open_set_max_accuracy_drop: float = Field(
        default=0.02, ge=0, le=1,
        description="the open-set threshold: validation accuracy abstaining may cost",
    )  # fmt: skip
    retrieval: bool = Field(
        default=False,
        description="mix the model's retrieval memory into its predictions (serving, gates, "
        "demo), where its export found that it helps the validation rows; off: measured +3 "
        "points on a fixed student, but not yet shown to help the loop",
    )
    reload_poll_s: float = Field(default=1.0, gt=0, description="champion pointer check period")
    max_text_chars: int = Field(default=8192, ge=1)
    batch_max: int = Field(
        default=2, ge=1, le=1024, description="requests scored together when they queue up"
    )
    scorers: int = Field(
        default=0, ge=0, le=64, description="threads scoring in parallel; 0 = one per core"
    )
    max_concurrency: int = Field(
        default=64, ge=1, description="requests in flight; beyond: 503 with Retry-After"
    )
    header_timeout_s: float = Field(
        default=5.0, gt=0, description="a connection must send its request headers within this"
    )
    body_timeout_s: float = Field(default=5.0, gt=0, description="... and its body within this")
    keep_alive_s: float = Field(default=5.0, gt=0, description="idle keep-alive connections")
    shutdown_timeout_s: float = Field(
        default=10.0, gt=0, description="graceful shutdown: in-flight requests finish within this"
    )
    auth_token_env: str = Field(
        default="",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$|^$",
        description="name of the environment variable holding the bearer token; empty: no auth",
    )
    tls_certfile: Path | None = Field(default=None, description="PEM certificate: serve HTTPS")
    tls_keyfile: Path | None = Field(default=None, description="PEM private key of tls_certfile")
    access_log: bool = Field(default=True, description="one JSON line per request (no text/ids)")
    fallback: Literal["none", "teacher"] = Field(
        default="none", description="who answers when the student abstains"
    )
    fallback_timeout_s: float = Field(default=2.0, gt=0, description="then: abstain")
    fallback_max_concurrent: int = Field(default=4, ge=1)
    fallback_budget_per_hour: int = Field(default=1000, ge=0)
    window_s: float = Field(
        default=60.0, gt=0, description="live window for rollout comparison and drift"
    )
    drift_reference_size: int = Field(
        default=1000, ge=10, description="first predictions of a champion: the drift reference"
    )
    drift_min_window: int = Field(
        default=200, ge=10, description="fewer predictions in a window: drift not judged"
    )
    drift_psi_max: float = Field(
        default=0.2, gt=0, description="PSI of confidence or labels above this: a drift breach"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ServingSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: set both or neither")
        return self


# Keys that moved from [registry] to [serving]: still read for one release, with a warning.
MOVED_TO_SERVING = {
    "abstain_below": "abstain_below",
    "serve_host": "host",
    "serve_port": "port",
    "serve_threads": "threads",
    "reload_poll_s": "reload_poll_s",
    "max_text_chars": "max_text_chars",
}
