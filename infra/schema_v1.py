"""The first version of the warehouse schema: the lineage tables (migration 1).

Its own module only for size: :mod:`tutorloop.infra.migrations` applies it.
"""

# Text of captured cases is stored only after scrubbing; predictions_audit never holds text.
LINEAGE_V1 = """
CREATE TABLE predictions_audit (
    event_id          VARCHAR PRIMARY KEY,
    ts                TIMESTAMPTZ NOT NULL,
    tenant_id         VARCHAR NOT NULL,
    user_id           VARCHAR NOT NULL,
    request_id        VARCHAR NOT NULL,
    model_version     VARCHAR NOT NULL,
    label             VARCHAR NOT NULL,
    confidence        DOUBLE NOT NULL,
    margin            DOUBLE,
    consent_training  BOOLEAN NOT NULL,
    captured          BOOLEAN NOT NULL,
    capture_reason    VARCHAR,
    policy_version    VARCHAR NOT NULL,
    ingested_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
CREATE INDEX predictions_audit_request ON predictions_audit (request_id);

CREATE TABLE cases (
    case_id           VARCHAR PRIMARY KEY,
    request_id        VARCHAR NOT NULL,
    prediction_event_id VARCHAR,
    ts                TIMESTAMPTZ NOT NULL,
    tenant_id         VARCHAR NOT NULL,
    user_id           VARCHAR NOT NULL,
    model_version     VARCHAR,
    text              VARCHAR NOT NULL,
    text_hash         VARCHAR NOT NULL,
    predicted_label   VARCHAR,
    confidence        DOUBLE,
    capture_reason    VARCHAR NOT NULL,
    consent_training  BOOLEAN NOT NULL,
    scrub_findings    JSON NOT NULL,
    scrub_policy_version VARCHAR NOT NULL,
    captured_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
CREATE INDEX cases_request ON cases (request_id);
CREATE INDEX cases_user ON cases (user_id);

CREATE TABLE labels (
    label_id          VARCHAR PRIMARY KEY,
    case_id           VARCHAR NOT NULL,
    source            VARCHAR NOT NULL CHECK (source IN ('teacher', 'human')),
    label             VARCHAR NOT NULL,
    soft_targets      JSON,
    confidence        DOUBLE,
    teacher_id        VARCHAR,
    teacher_version   VARCHAR,
    actor             VARCHAR,
    rationale         VARCHAR,
    cost_usd          DOUBLE NOT NULL DEFAULT 0,
    tokens            BIGINT NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
CREATE INDEX labels_case ON labels (case_id);

CREATE TABLE dataset_versions (
    dataset_hash      VARCHAR PRIMARY KEY,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    spec              JSON NOT NULL,
    counts            JSON NOT NULL,
    n_train           BIGINT NOT NULL,
    n_validation      BIGINT NOT NULL,
    n_eval            BIGINT NOT NULL,
    path              VARCHAR NOT NULL
);

CREATE TABLE dataset_members (
    dataset_hash      VARCHAR NOT NULL,
    case_id           VARCHAR NOT NULL,
    split             VARCHAR NOT NULL CHECK (split IN ('train', 'validation', 'eval')),
    label             VARCHAR NOT NULL,
    label_source      VARCHAR NOT NULL,
    PRIMARY KEY (dataset_hash, case_id)
);
CREATE INDEX dataset_members_case ON dataset_members (case_id);

CREATE TABLE training_runs (
    run_id            VARCHAR PRIMARY KEY,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ,
    status            VARCHAR NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    dataset_hash      VARCHAR,
    base_model        VARCHAR NOT NULL,
    quantization      VARCHAR NOT NULL,
    fallback_reason   VARCHAR,
    config            JSON NOT NULL,
    seed              BIGINT NOT NULL,
    package_versions  JSON NOT NULL,
    git_commit        VARCHAR,
    hardware          JSON NOT NULL,
    metrics           JSON,
    error             VARCHAR
);

CREATE TABLE model_versions (
    version           VARCHAR PRIMARY KEY,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    run_id            VARCHAR,
    status            VARCHAR NOT NULL
                      CHECK (status IN ('candidate', 'rejected', 'champion', 'retired')),
    artifact_dir      VARCHAR NOT NULL,
    label_set         JSON NOT NULL,
    card              JSON NOT NULL
);

CREATE TABLE gate_results (
    version           VARCHAR NOT NULL,
    gate              VARCHAR NOT NULL,
    value             DOUBLE,
    threshold         DOUBLE,
    comparator        VARCHAR NOT NULL,
    passed            BOOLEAN NOT NULL,
    detail            VARCHAR,
    evaluated_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (version, gate)
);

CREATE TABLE promotions (
    promotion_id      VARCHAR PRIMARY KEY,
    ts                TIMESTAMPTZ NOT NULL,
    action            VARCHAR NOT NULL CHECK (action IN ('promote', 'rollback')),
    from_version      VARCHAR,
    to_version        VARCHAR NOT NULL,
    actor             VARCHAR NOT NULL,
    reason            VARCHAR,
    forced            BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE privacy_ledger (
    run_id            VARCHAR PRIMARY KEY,
    ts                TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    window_start      TIMESTAMPTZ,
    window_end        TIMESTAMPTZ,
    epsilon           DOUBLE NOT NULL,
    delta             DOUBLE NOT NULL,
    noise_multiplier  DOUBLE NOT NULL,
    sample_rate       DOUBLE NOT NULL,
    steps             BIGINT NOT NULL,
    max_grad_norm     DOUBLE,
    accountant        VARCHAR NOT NULL
);

CREATE TABLE erasures (
    erasure_id        VARCHAR PRIMARY KEY,
    ts                TIMESTAMPTZ NOT NULL,
    user_id           VARCHAR NOT NULL,
    actor             VARCHAR NOT NULL,
    cases_deleted     BIGINT NOT NULL,
    labels_deleted    BIGINT NOT NULL,
    dataset_versions  JSON NOT NULL,
    model_versions    JSON NOT NULL
);
"""

# Escalations may arrive before their prediction, so they are kept on their own and joined
# to cases by request_id; reviewers work from the queue.
