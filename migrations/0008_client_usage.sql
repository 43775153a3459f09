-- How many runs each client has in progress (started, running or aggregating): raised in the
-- transaction that starts a run, lowered in the one that ends it. The active_runs quota is the
-- row's own check: a start that would pass `max_active` fails whole, writing nothing.
CREATE TABLE client_usage (
    client_id   TEXT PRIMARY KEY,
    active_runs INTEGER NOT NULL DEFAULT 0,
    max_active  INTEGER NOT NULL,
    CHECK (active_runs >= 0 AND active_runs <= max_active)
);

INSERT INTO client_usage (client_id, active_runs, max_active)
    SELECT client_id, COUNT(*), MAX(COUNT(*), 10000) FROM runs
    WHERE status IN ('started', 'running', 'aggregating') GROUP BY client_id;
