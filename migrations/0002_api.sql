-- The rest of the HTTP API: custom plans per client, listing runs, pipeline executions with
-- priority admission and resource reservation. Nothing was deployed with 0001, so the tables
-- this changes are still empty and are rebuilt rather than altered.

-- Plans are per client: two clients may each have a plan `custom-v1`.
DROP TABLE custom_plans;
CREATE TABLE custom_plans (
    client_id  TEXT NOT NULL,
    plan_id    TEXT NOT NULL,
    plan_json  TEXT NOT NULL,                  -- the validated plan (core's serialisation)
    created_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, plan_id)
) WITHOUT ROWID;

-- Listing a client's runs by status, newest first (GET /api/orchestration/runs?status=).
CREATE INDEX runs_by_client_status ON runs (client_id, status, created_at DESC, run_id DESC);

-- Every pipeline execution (POST /execute) has one row from the moment it is accepted:
-- queued → admitted (resources reserved) → started (its run exists), or failed (never
-- admitted before deadline_at, or can never fit). It holds the compiled plan, so admission
-- (here or in the poller) needs no call to the key-account service. Its run, once started,
-- has the same id.
DROP TABLE execution_queue;
CREATE TABLE execution_queue (
    run_id          TEXT PRIMARY KEY,          -- the execution id, exec_{ms}_{hex}
    client_id       TEXT NOT NULL,
    request_id      TEXT,
    template_name   TEXT NOT NULL,
    website_id      TEXT NOT NULL,
    domain          TEXT NOT NULL,
    plan_json       TEXT NOT NULL,
    parameters      TEXT NOT NULL DEFAULT '{}',
    priority        INTEGER NOT NULL,          -- 0 low, 1 normal, 2 high, 3 critical
    enqueued_at     INTEGER NOT NULL,
    deadline_at     INTEGER NOT NULL,          -- admitted by then, or failed
    status          TEXT NOT NULL CHECK (status IN ('queued', 'admitted', 'started', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0, -- admission attempts
    admitted_at     INTEGER,
    admission_token TEXT,                      -- proves, inside the admitting batch, who admitted it
    last_error      TEXT                       -- why it waits, or why it failed
);
-- The same (client, request_id) is one execution.
CREATE UNIQUE INDEX execution_queue_by_request ON execution_queue (client_id, request_id)
    WHERE request_id IS NOT NULL;
-- Admission order, over waiting rows only: priority, then age.
CREATE INDEX execution_queue_order ON execution_queue (priority DESC, enqueued_at, run_id)
    WHERE status = 'queued';
CREATE INDEX execution_queue_expiry ON execution_queue (deadline_at) WHERE status = 'queued';
-- Admitted but not started (the start failed midway): the admission pass starts them again.
CREATE INDEX execution_queue_unstarted ON execution_queue (admitted_at) WHERE status = 'admitted';

-- Deliverables are the outputs of a pipeline's completed steps, read from `steps`.
DROP TABLE deliverables;

-- The default pools. Operators change capacities with an UPDATE; an execution needing more
-- than a whole pool fails at once instead of blocking the queue.
INSERT INTO resource_pools (resource, capacity, in_use) VALUES
    ('tokens', 1000000, 0),
    ('concurrent_executions', 50, 0);
