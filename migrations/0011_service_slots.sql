-- Per-service concurrency caps (SERVICE_CONCURRENCY): one row per attempt in flight of a capped
-- service, taken by a guarded insert (only while fewer than the cap are in flight), removed in
-- the transaction that ends the attempt. A slot whose attempt's deadline passed no longer
-- counts, so a crash cannot leak one.
CREATE TABLE service_slots (
    run_id     TEXT NOT NULL,
    service    TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    worker     TEXT NOT NULL,
    taken_at   INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, service, attempt)
);
CREATE INDEX service_slots_by_worker ON service_slots (worker, expires_at);
