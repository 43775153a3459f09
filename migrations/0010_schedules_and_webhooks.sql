-- Schedules: a client's runs started on a cron expression (in a time zone) or an interval.
-- `next_slot` is the first slot not yet handled (NULL: the expression has no further slot); a
-- poller tick claims a slot by moving it, guarded by the value it read (`fire_token` says
-- which tick moved it), so one tick fires each slot.
CREATE TABLE schedules (
    schedule_id      TEXT PRIMARY KEY,
    client_id        TEXT NOT NULL,
    name             TEXT,
    cron             TEXT,
    timezone         TEXT,
    interval_seconds INTEGER,
    missed           TEXT NOT NULL DEFAULT 'skip',
    website_id       TEXT NOT NULL,
    domain           TEXT NOT NULL,
    plan_id          TEXT NOT NULL,
    parameters       TEXT NOT NULL DEFAULT '{}',
    paused           INTEGER NOT NULL DEFAULT 0,
    next_slot        INTEGER,
    fire_token       INTEGER,
    last_slot        INTEGER,
    last_run_id      TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    CHECK ((cron IS NULL) <> (interval_seconds IS NULL)),
    CHECK (missed IN ('skip', 'latest'))
);
CREATE INDEX schedules_due ON schedules (next_slot) WHERE paused = 0 AND next_slot IS NOT NULL;
CREATE INDEX schedules_by_client ON schedules (client_id, created_at);

-- One row per fired slot: the primary key makes a slot fire once whatever races; the run
-- started for it has `run_id` (written with the claim, so a run interrupted before it started
-- is started by the next tick under the same id).
CREATE TABLE schedule_fires (
    schedule_id TEXT NOT NULL,
    slot        INTEGER NOT NULL,
    run_id      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'claimed', -- claimed | started | failed
    error       TEXT,
    fired_at    INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, slot)
);
CREATE UNIQUE INDEX schedule_fires_by_run ON schedule_fires (run_id);
CREATE INDEX schedule_fires_claimed ON schedule_fires (fired_at) WHERE status = 'claimed';

-- Webhooks: a client's URL and secret, told when its runs (and executions) end.
CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    events     TEXT NOT NULL, -- JSON array of event names
    created_at INTEGER NOT NULL
);
CREATE INDEX webhooks_by_client ON webhooks (client_id, created_at);

-- One row per event to deliver to one webhook; its attempts are in webhook_attempts.
CREATE TABLE webhook_deliveries (
    delivery_id      TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL,
    client_id        TEXT NOT NULL,
    event            TEXT NOT NULL,
    run_id           TEXT,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending', -- pending | succeeded | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error       TEXT,
    replay_of        TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
