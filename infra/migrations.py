"""Forward-only warehouse migrations.

Each migration is applied once, in order, inside one transaction, and recorded in
``schema_version``. Never edit a released migration: add a new one. A file whose version is
newer than the last migration here was written by a newer tutorloop and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.schema_v1 import LINEAGE_V1
from tutorloop.infra.schema_v13 import ROLLOUTS_V13
from tutorloop.infra.sql_dialect import execute_schema_change


class SchemaTooNewError(TutorloopError):
    """The warehouse file was migrated by a newer tutorloop than this one."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


_V2_REVIEW = """
CREATE TABLE escalations (
    event_id          VARCHAR PRIMARY KEY,
    ts                TIMESTAMPTZ NOT NULL,
    request_id        VARCHAR NOT NULL,
    reason            VARCHAR NOT NULL,
    human_label       VARCHAR,
    actor             VARCHAR NOT NULL,
    ingested_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
CREATE INDEX escalations_request ON escalations (request_id);

CREATE TABLE review_queue (
    item_id           VARCHAR PRIMARY KEY,
    case_id           VARCHAR NOT NULL,
    reason            VARCHAR NOT NULL,
    teacher_label     VARCHAR,
    teacher_confidence DOUBLE,
    human_label       VARCHAR,
    status            VARCHAR NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolved_label    VARCHAR,
    resolved_by       VARCHAR,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    resolved_at       TIMESTAMPTZ
);
CREATE INDEX review_queue_case ON review_queue (case_id);
"""

# Where each prediction sits in Kafka: an escalation that arrives for a prediction that was
# not captured re-reads it from the topic (the warehouse never held its text).
_V3_KAFKA_POSITION = """
ALTER TABLE predictions_audit ADD COLUMN kafka_partition INTEGER;
ALTER TABLE predictions_audit ADD COLUMN kafka_offset BIGINT;
ALTER TABLE escalations ADD COLUMN case_id VARCHAR;
"""

# A teacher's answer is cached by (teacher id, text hash) so that no paid call is ever made
# twice for the same text, across reruns and interruptions. The cache holds no text.
# Failed answers are kept per case and attempt, so that errors are counted and explained.
_V4_TEACHER = """
CREATE TABLE teacher_cache (
    teacher_id        VARCHAR NOT NULL,
    text_hash         VARCHAR NOT NULL,
    teacher_version   VARCHAR NOT NULL,
    label             VARCHAR NOT NULL,
    soft_targets      JSON NOT NULL,
    confidence        DOUBLE NOT NULL,
    rationale         VARCHAR,
    cost_usd          DOUBLE NOT NULL DEFAULT 0,
    tokens            BIGINT NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (teacher_id, text_hash)
);

CREATE TABLE teacher_errors (
    error_id          VARCHAR PRIMARY KEY,
    case_id           VARCHAR NOT NULL,
    teacher_id        VARCHAR NOT NULL,
    kind              VARCHAR NOT NULL,
    message           VARCHAR NOT NULL,
    cost_usd          DOUBLE NOT NULL DEFAULT 0,
    tokens            BIGINT NOT NULL DEFAULT 0,
    ts                TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
CREATE INDEX teacher_errors_case ON teacher_errors (case_id);
"""

# The scheduler claims each window here before it trains: one run per window, across
# restarts and between two schedulers.
_V5_SCHEDULE = """
CREATE TABLE schedule_runs (
    window_id         VARCHAR PRIMARY KEY,
    trigger           VARCHAR NOT NULL CHECK (trigger IN ('cron', 'labels', 'installed')),
    claimed_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ,
    status            VARCHAR NOT NULL
                      CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    host              VARCHAR NOT NULL,
    pid               INTEGER NOT NULL,
    version           VARCHAR,
    error             VARCHAR
);
"""

# Lineage views for compliance: plain SQL over the DuckDB file (documented in the README).
_V6_LINEAGE_VIEWS = """
CREATE VIEW lineage_predictions AS
SELECT p.event_id, p.ts, p.tenant_id, p.user_id, p.request_id, p.model_version, p.label,
       p.confidence, p.consent_training, p.captured, p.capture_reason, p.policy_version,
       m.status AS model_status, m.run_id, r.dataset_hash, r.base_model, r.quantization,
       r.git_commit, r.started_at AS trained_at, l.epsilon AS dp_epsilon
FROM predictions_audit p
LEFT JOIN model_versions m ON m.version = p.model_version
LEFT JOIN training_runs r ON r.run_id = m.run_id
LEFT JOIN privacy_ledger l ON l.run_id = m.run_id;

CREATE VIEW lineage_user_data AS
SELECT c.user_id, c.tenant_id, c.case_id, c.ts, c.capture_reason, c.consent_training,
       dm.dataset_hash, dm.split, dm.label AS dataset_label, dm.label_source,
       m.version AS model_version, m.status AS model_status
FROM cases c
LEFT JOIN dataset_members dm ON dm.case_id = c.case_id
LEFT JOIN training_runs r ON r.dataset_hash = dm.dataset_hash
LEFT JOIN model_versions m ON m.run_id = r.run_id;

CREATE VIEW lineage_models AS
SELECT m.version, m.status, m.created_at, m.run_id, r.dataset_hash, r.base_model,
       r.quantization, r.fallback_reason, r.seed, r.git_commit, r.started_at, r.finished_at,
       d.n_train, d.n_validation, d.n_eval, d.counts AS dataset_counts,
       l.epsilon AS dp_epsilon, l.delta AS dp_delta,
       (SELECT min(ts) FROM promotions p WHERE p.to_version = m.version) AS first_champion_at
FROM model_versions m
LEFT JOIN training_runs r ON r.run_id = m.run_id
LEFT JOIN dataset_versions d ON d.dataset_hash = r.dataset_hash
LEFT JOIN privacy_ledger l ON l.run_id = m.run_id;
"""

# Gates carry n, an interval, the contract clause and a three-way verdict; gate results,
# promotions and the lineage view say which contract (and evaluation set) judged a model.
_V7_CONTRACT = """
ALTER TABLE gate_results ADD COLUMN n BIGINT;
ALTER TABLE gate_results ADD COLUMN ci_lower DOUBLE;
ALTER TABLE gate_results ADD COLUMN ci_upper DOUBLE;
ALTER TABLE gate_results ADD COLUMN clause VARCHAR;
ALTER TABLE gate_results ADD COLUMN verdict VARCHAR;
ALTER TABLE gate_results ADD COLUMN contract_hash VARCHAR;
ALTER TABLE gate_results ADD COLUMN eval_hash VARCHAR;
ALTER TABLE promotions ADD COLUMN contract_hash VARCHAR;
"""

# User-level DP: the most rows one user gave a run, and the group-privacy guarantee it implies.
_V8_USER_DP = """
ALTER TABLE privacy_ledger ADD COLUMN rows_per_user BIGINT;
ALTER TABLE privacy_ledger ADD COLUMN user_epsilon DOUBLE;
ALTER TABLE privacy_ledger ADD COLUMN user_delta DOUBLE;
"""

# The time by which the broker's retention drops an erased user's raw events.
_V9_ERASURE_BROKER = """
ALTER TABLE erasures ADD COLUMN broker_expires_at TIMESTAMPTZ;
"""

# Escalations' Kafka positions: one that arrives before its text-less prediction is re-read.
_V10_ESCALATION_POSITION = """
ALTER TABLE escalations ADD COLUMN kafka_partition INTEGER;
ALTER TABLE escalations ADD COLUMN kafka_offset BIGINT;
"""

# Escalated predictions Kafka could not give back yet (a broker hiccup): retried until they
# are read, or until the topic's retention has certainly dropped them.
_V11_PARKED = """
CREATE TABLE parked_escalations (
    prediction_event_id VARCHAR PRIMARY KEY,
    request_id          VARCHAR NOT NULL,
    kafka_partition     INTEGER NOT NULL,
    kafka_offset        BIGINT NOT NULL,
    parked_at           TIMESTAMPTZ NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_retry_at       TIMESTAMPTZ NOT NULL,
    status              VARCHAR NOT NULL CHECK (status IN ('parked', 'expired'))
);
"""

# DP spends epsilon on private rows only: the ledger says how many of each a run trained on.
_V12_DP_ROWS = """
ALTER TABLE privacy_ledger ADD COLUMN public_rows BIGINT;
ALTER TABLE privacy_ledger ADD COLUMN private_rows BIGINT;
ALTER TABLE privacy_ledger ADD COLUMN replayed_private_rows BIGINT;
"""

# Review items name the teacher whose answer they are about: spot-check agreement is per teacher.
_V14_REVIEW_TEACHER = """
ALTER TABLE review_queue ADD COLUMN teacher_id VARCHAR;
"""

# Paraphrases and contrast edits an LLM teacher wrote from captured cases (#16): their lineage.
_V15_SYNTHETIC = """
CREATE TABLE synthetic_cases (
    case_id           VARCHAR PRIMARY KEY,
    source_case_id    VARCHAR NOT NULL,
    kind              VARCHAR NOT NULL CHECK (kind IN ('paraphrase', 'contrast')),
    intended_label    VARCHAR NOT NULL,
    generator_id      VARCHAR NOT NULL,
    prompt_hash       VARCHAR NOT NULL,
    cost_usd          DOUBLE NOT NULL DEFAULT 0,
    tokens            BIGINT NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
CREATE INDEX synthetic_cases_source ON synthetic_cases (source_case_id);
"""

# Erasures name the tenant they were scoped to; NULL (every record before this) erased the
# user id in every tenant.
_V16_ERASURE_TENANT = """
ALTER TABLE erasures ADD COLUMN tenant_id VARCHAR;
"""

# Escalations name the (tenant, user) whose prediction they are about: request ids are chosen by
# clients, so only the three together join an escalation to its prediction. Existing rows take
# the one owner the audit knows for their request id; a request id several users sent stays
# without one (it never joins again). Human labels and case links made through a request id
# alone that reach another owner's case are undone.
_V17_OWNER = """
ALTER TABLE escalations ADD COLUMN tenant_id VARCHAR;
ALTER TABLE escalations ADD COLUMN user_id VARCHAR;
UPDATE escalations SET tenant_id = owner.tenant_id, user_id = owner.user_id
FROM (
    SELECT request_id, min(tenant_id) AS tenant_id, min(user_id) AS user_id
    FROM predictions_audit GROUP BY request_id
    HAVING count(DISTINCT tenant_id) = 1 AND count(DISTINCT user_id) = 1
) AS owner
WHERE escalations.request_id = owner.request_id;
DELETE FROM labels WHERE source = 'human' AND EXISTS (
    SELECT 1 FROM escalations e JOIN cases c ON c.case_id = labels.case_id
    WHERE labels.label_id = 'human:' || e.event_id || ':' || labels.case_id
    AND (e.user_id IS NULL OR e.tenant_id <> c.tenant_id OR e.user_id <> c.user_id)
);
UPDATE escalations SET case_id = NULL WHERE case_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM cases c WHERE c.case_id = escalations.case_id
    AND c.tenant_id = escalations.tenant_id AND c.user_id = escalations.user_id
);
"""

# The lifetime privacy ledger: how many rows of each user (tenant, subject hash of the id) each
# DP run could sample; with the run's mechanism in privacy_ledger, a user's lifetime epsilon.
_V18_USER_ROWS = """
CREATE TABLE privacy_user_rows (
    run_id            VARCHAR NOT NULL,
    tenant_id         VARCHAR NOT NULL,
    subject           VARCHAR NOT NULL,
    n_rows            BIGINT NOT NULL,
    PRIMARY KEY (run_id, tenant_id, subject)
);
CREATE INDEX privacy_user_rows_subject ON privacy_user_rows (subject);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "lineage tables", LINEAGE_V1),
    Migration(2, "escalations and review queue", _V2_REVIEW),
    Migration(3, "kafka positions of predictions; escalation to case link", _V3_KAFKA_POSITION),
    Migration(4, "teacher answer cache and teacher errors", _V4_TEACHER),
    Migration(5, "scheduler windows", _V5_SCHEDULE),
    Migration(6, "lineage views", _V6_LINEAGE_VIEWS),
    Migration(7, "model contract: gate intervals, verdicts and contract hashes", _V7_CONTRACT),
    Migration(8, "user-level DP accounting in the privacy ledger", _V8_USER_DP),
    Migration(9, "erasure records state when the broker's copy expires", _V9_ERASURE_BROKER),
    Migration(10, "kafka positions of escalations", _V10_ESCALATION_POSITION),
    Migration(11, "escalated predictions waiting to be read back", _V11_PARKED),
    Migration(12, "public and private row counts of DP runs", _V12_DP_ROWS),
    Migration(13, "shadow and canary rollouts; live rollout and drift windows", ROLLOUTS_V13),
    Migration(14, "review items name their teacher (spot-check agreement)", _V14_REVIEW_TEACHER),
    Migration(15, "lineage of synthetic cases (paraphrases, contrast edits)", _V15_SYNTHETIC),
    Migration(16, "erasures name their tenant (NULL: every tenant)", _V16_ERASURE_TENANT),
    Migration(17, "escalations name the tenant and user of their predictions", _V17_OWNER),
    Migration(18, "the lifetime privacy ledger: rows of each user per DP run", _V18_USER_ROWS),
)

LATEST_VERSION = MIGRATIONS[-1].version

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description VARCHAR NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
)
"""


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version of an open warehouse (0 for a fresh file)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()
    if not exists or exists[0] == 0:
        return 0
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(
    con: duckdb.DuckDBPyConnection,
    target: int = LATEST_VERSION,
    *,
    source: str = "warehouse",
) -> list[int]:
    """Apply pending migrations up to ``target``; return the versions applied."""
    con.execute(_VERSION_TABLE)
    have = current_version(con)
    if have > LATEST_VERSION:
        raise SchemaTooNewError(
            f"{source} has schema version {have} but this tutorloop knows up to "
            f"{LATEST_VERSION}; upgrade tutorloop to open it"
        )
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version <= have or migration.version > target:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            execute_schema_change(con, migration.sql)
            con.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)",
                [migration.version, migration.description],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    return applied
