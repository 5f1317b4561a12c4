"""Migration 13's schema change, kept out of ``migrations`` for its length."""

# Shadow and canary rollouts (registry) and the live windows serving writes about them and
# about drift; promotions learn the actions that end a rollout without a new champion, and the
# schedule a drift trigger (DuckDB cannot alter a CHECK constraint: those two tables are
# rebuilt, their rows and columns unchanged).
ROLLOUTS_V13 = """
CREATE TABLE promotions_v13 (
    promotion_id      VARCHAR PRIMARY KEY,
    ts                TIMESTAMPTZ NOT NULL,
    action            VARCHAR NOT NULL CHECK (action IN
                      ('promote', 'rollback', 'rollout_rollback', 'rollout_abort')),
    from_version      VARCHAR,
    to_version        VARCHAR NOT NULL,
    actor             VARCHAR NOT NULL,
    reason            VARCHAR,
    forced            BOOLEAN NOT NULL DEFAULT false,
    contract_hash     VARCHAR
);
INSERT INTO promotions_v13 SELECT promotion_id, ts, action, from_version, to_version, actor,
    reason, forced, contract_hash FROM promotions;
DROP TABLE promotions;
ALTER TABLE promotions_v13 RENAME TO promotions;

CREATE TABLE schedule_runs_v13 (
    window_id         VARCHAR PRIMARY KEY,
    trigger           VARCHAR NOT NULL
                      CHECK (trigger IN ('cron', 'labels', 'installed', 'drift')),
    claimed_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ,
    status            VARCHAR NOT NULL
                      CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    host              VARCHAR NOT NULL,
    pid               INTEGER NOT NULL,
    version           VARCHAR,
    error             VARCHAR
);
INSERT INTO schedule_runs_v13 SELECT window_id, trigger, claimed_at, finished_at, status, host,
    pid, version, error FROM schedule_runs;
DROP TABLE schedule_runs;
ALTER TABLE schedule_runs_v13 RENAME TO schedule_runs;

-- Who answered each prediction (the student, the teacher fallback, or nobody) and with what.
ALTER TABLE predictions_audit ADD COLUMN answered_by VARCHAR;
ALTER TABLE predictions_audit ADD COLUMN served_label VARCHAR;

CREATE OR REPLACE VIEW lineage_predictions AS
SELECT p.event_id, p.ts, p.tenant_id, p.user_id, p.request_id, p.model_version, p.label,
       p.confidence, p.consent_training, p.captured, p.capture_reason, p.policy_version,
       p.answered_by, p.served_label,
       m.status AS model_status, m.run_id, r.dataset_hash, r.base_model, r.quantization,
       r.git_commit, r.started_at AS trained_at, l.epsilon AS dp_epsilon
FROM predictions_audit p
LEFT JOIN model_versions m ON m.version = p.model_version
LEFT JOIN training_runs r ON r.run_id = m.run_id
LEFT JOIN privacy_ledger l ON l.run_id = m.run_id;

CREATE TABLE rollouts (
    rollout_id           VARCHAR PRIMARY KEY,
    version              VARCHAR NOT NULL,
    champion             VARCHAR NOT NULL,
    mode                 VARCHAR NOT NULL CHECK (mode IN ('shadow', 'canary')),
    percent              DOUBLE NOT NULL,
    auto_promote_after_s DOUBLE,
    started_at           TIMESTAMPTZ NOT NULL,
    actor                VARCHAR NOT NULL,
    reason               VARCHAR,
    forced               BOOLEAN NOT NULL DEFAULT false,
    contract_hash        VARCHAR NOT NULL,
    ended_at             TIMESTAMPTZ,
    outcome              VARCHAR CHECK (outcome IN ('promoted', 'rolled_back', 'aborted')),
    end_reason           VARCHAR
);

CREATE TABLE rollout_windows (
    window_id             VARCHAR PRIMARY KEY,
    rollout_id            VARCHAR NOT NULL,
    replica               VARCHAR NOT NULL,
    window_start          TIMESTAMPTZ NOT NULL,
    window_end            TIMESTAMPTZ NOT NULL,
    requests              BIGINT NOT NULL,
    challenger_answered   BIGINT NOT NULL,
    agreement             DOUBLE,
    champion_confidence   DOUBLE,
    challenger_confidence DOUBLE,
    champion_abstention   DOUBLE,
    challenger_abstention DOUBLE,
    champion_p95_ms       DOUBLE,
    challenger_p95_ms     DOUBLE,
    errors                BIGINT NOT NULL
);

CREATE TABLE drift_windows (
    window_id        VARCHAR PRIMARY KEY,
    replica          VARCHAR NOT NULL,
    model_version    VARCHAR NOT NULL,
    window_start     TIMESTAMPTZ NOT NULL,
    window_end       TIMESTAMPTZ NOT NULL,
    requests         BIGINT NOT NULL,
    mean_confidence  DOUBLE,
    abstention_rate  DOUBLE,
    confidence_psi   DOUBLE,
    confidence_psi_null DOUBLE,
    confidence_ks    DOUBLE,
    confidence_ks_p  DOUBLE,
    label_psi        DOUBLE,
    label_psi_null   DOUBLE,
    breached         BOOLEAN NOT NULL
);
"""
