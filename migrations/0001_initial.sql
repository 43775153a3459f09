-- Baton schema. D1 is the source of truth; KV only mirrors (job:{traceId}) and holds config.
-- Times are integer milliseconds since the Unix epoch (UTC).

-- One row per run. Diagnostic runs (POST /api/orchestration/run) and pipeline executions
-- (POST /execute) share this table: an execution is a run whose plan was compiled from a template.
CREATE TABLE runs (
    run_id             TEXT PRIMARY KEY,
    kind               TEXT NOT NULL CHECK (kind IN ('diagnostic', 'pipeline')),
    client_id          TEXT NOT NULL,
    website_id         TEXT NOT NULL,
    domain             TEXT NOT NULL,
    plan_id            TEXT NOT NULL,
    plan_name          TEXT NOT NULL,
    plan_json          TEXT NOT NULL,          -- the plan as it was when the run started
    parameters         TEXT NOT NULL DEFAULT '{}',
    idempotency_key    TEXT,                   -- idempotency_key (runs) or request_id (executions)
    status             TEXT NOT NULL,
    priority           INTEGER NOT NULL DEFAULT 1,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER NOT NULL,
    deadline_at        INTEGER NOT NULL,       -- the run's own deadline (plan max duration, job timeout)
    -- When the poller must look at this run next. NULL once terminal, so the poller's
    -- due-work query (due_at <= now) never reads finished history.
    due_at             INTEGER,
    claimed_at         INTEGER,                -- fan-in claim (running -> aggregating)
    completed_at       INTEGER,
    partial            INTEGER,
    missing            TEXT,                   -- JSON array of services that did not complete
    diagnosis_event_id TEXT,
    synthesis_error    TEXT,
    error              TEXT
);
CREATE UNIQUE INDEX runs_by_idempotency ON runs (client_id, kind, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_due ON runs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX runs_by_status_deadline ON runs (status, deadline_at);
CREATE INDEX runs_by_client ON runs (client_id, created_at DESC, run_id DESC);
CREATE INDEX runs_by_website ON runs (client_id, website_id, created_at DESC, run_id DESC);

-- One row per step (service) of a run: the stage executions of a pipeline.
CREATE TABLE steps (
    run_id          TEXT NOT NULL,
    service         TEXT NOT NULL,
    position        INTEGER NOT NULL,          -- order in the plan
    wave            INTEGER NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    started_at      INTEGER,                   -- first dispatch
    claimed_at      INTEGER,                   -- a consumer claimed the current attempt (NULL until then)
    finished_at     INTEGER,
    deadline_at     INTEGER,                   -- this attempt's timeout
    next_attempt_at INTEGER,                   -- retry backoff
    duration_ms     INTEGER,
    error           TEXT,
    error_kind      TEXT,
    output          TEXT,                      -- JSON result reported by the service
    usage           TEXT,                      -- JSON usage (tokens, ...) reported by the service
    progress        TEXT,                      -- JSON progress reported by a long-running service
    PRIMARY KEY (run_id, service)
) WITHOUT ROWID;
-- The poller's ways into steps: running attempts past their timeout, retries whose backoff
-- elapsed. Partial indexes hold only the rows in those states, never history.
CREATE INDEX steps_running_deadline ON steps (deadline_at) WHERE status = 'running';
CREATE INDEX steps_retry_due ON steps (next_attempt_at) WHERE status = 'retrying';

-- Knowledge-base events: lifecycle events (run_status), service results, the diagnosis.
CREATE TABLE kbase_events (
    id          TEXT PRIMARY KEY,
    website_id  TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    service     TEXT NOT NULL,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    -- Makes "write once" events idempotent: run:{id}:start, run:{id}:finish, run:{id}:diagnosis.
    dedupe_key  TEXT UNIQUE
);
CREATE INDEX kbase_events_by_website ON kbase_events (website_id, service, type, created_at);
CREATE INDEX kbase_events_by_run ON kbase_events (run_id, created_at);

-- Pipeline executions waiting for resources, leaving by priority, then age.
CREATE TABLE execution_queue (
    run_id      TEXT PRIMARY KEY,
    priority    INTEGER NOT NULL,              -- 0 low, 1 normal, 2 high, 3 critical
    enqueued_at INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'admitted')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try_at INTEGER NOT NULL,
    last_error  TEXT
);
CREATE INDEX execution_queue_order ON execution_queue (status, priority DESC, enqueued_at, run_id);

-- Custom plans created through POST /api/orchestration/plans.
CREATE TABLE custom_plans (
    plan_id    TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    plan_json  TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Outputs a pipeline produced.
CREATE TABLE deliverables (
    id         TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL,
    service    TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (run_id, service)
);

-- What each step used, for estimation from history and cost reporting.
CREATE TABLE resource_usage (
    run_id      TEXT NOT NULL,
    service     TEXT NOT NULL,
    resource    TEXT NOT NULL,
    quantity    INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, service, resource)
) WITHOUT ROWID;
CREATE INDEX resource_usage_by_service ON resource_usage (service, resource);

-- Running averages per service, so estimation reads one row instead of all history.
CREATE TABLE resource_stats (
    service  TEXT NOT NULL,
    resource TEXT NOT NULL,
    samples  INTEGER NOT NULL,
    total    INTEGER NOT NULL,
    PRIMARY KEY (service, resource)
) WITHOUT ROWID;

-- Simple counters with limits; a reservation is a guarded increment.
CREATE TABLE resource_pools (
    resource TEXT PRIMARY KEY,
    capacity INTEGER NOT NULL,
    in_use   INTEGER NOT NULL DEFAULT 0 CHECK (in_use >= 0)
);

CREATE TABLE resource_allocations (
    run_id     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    quantity   INTEGER NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('held', 'released')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, resource)
) WITHOUT ROWID;
CREATE INDEX resource_allocations_expiry ON resource_allocations (status, expires_at);

-- Running attempts of services that report progress (the poller polls them).
CREATE INDEX steps_progress ON steps (deadline_at) WHERE status = 'running' AND progress IS NOT NULL;
