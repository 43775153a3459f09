-- Retention: a run that ended longer ago than its client's retention (RETENTION_DAYS) moves to
-- the archive (one compressed object per run in R2, `ARCHIVE`), and only this slim row stays in
-- D1, so that the runs list still finds it and its page still opens. Everything else of the run
-- (its row, steps, attempts, events) is deleted in the transaction that writes this row.
CREATE TABLE archived_runs (
    run_id             TEXT PRIMARY KEY,
    client_id          TEXT NOT NULL,
    kind               TEXT NOT NULL,
    website_id         TEXT NOT NULL,
    domain             TEXT NOT NULL,
    plan_id            TEXT NOT NULL,
    status             TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER NOT NULL,
    completed_at       INTEGER,
    -- The run summary's step counts: completed, failed, timeout, skipped, total.
    services_completed INTEGER NOT NULL,
    services_failed    INTEGER NOT NULL,
    services_timeout   INTEGER NOT NULL,
    services_skipped   INTEGER NOT NULL,
    services_total     INTEGER NOT NULL,
    diagnosis_event_id TEXT,
    error              TEXT,
    archived_at        INTEGER NOT NULL,
    -- The archive object's size (compressed), as written and verified.
    object_bytes       INTEGER NOT NULL
) WITHOUT ROWID;
-- A client's archived runs newest first, as the runs list pages them (status and plan filters
-- read the same index: archived runs have ended).
CREATE INDEX archived_runs_by_client ON archived_runs (client_id, created_at DESC, run_id DESC);

-- The way into runs due for the archive: ended runs by when they ended. A run retried after it
-- ended (completed_at back to NULL) leaves the index until it ends again.
CREATE INDEX runs_ended ON runs (completed_at) WHERE completed_at IS NOT NULL;

-- What archived (or deleted) runs contributed to `GET /metrics`, folded in as each leaves D1,
-- so the counters never go down: (metric, label) -> value. Metrics: `runs` (label: status),
-- `steps` (status), `attempts`, `retries` (service), and for each histogram (`run_ms`,
-- `fan_in_ms`, `attempt_ms`) `…:le:{bound in ms}` (observations at most that bound, cumulative),
-- `…:count` and `…:sum`.
CREATE TABLE metric_totals (
    metric TEXT NOT NULL,
    label  TEXT NOT NULL,
    value  INTEGER NOT NULL,
    PRIMARY KEY (metric, label)
) WITHOUT ROWID;
