-- Every ended attempt of a step, for the run page's timeline and the retry metrics. The
-- `steps` row holds only the current attempt; a trigger copies each attempt out as it ends,
-- so every writer (the consumer, the poller, a callback, a cancel) records it without
-- knowing of this table. One row written per attempt; nothing here is ever decided from.
CREATE TABLE step_attempts (
    run_id     TEXT NOT NULL,
    service    TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    started_at INTEGER,              -- when a consumer began running it (NULL: never claimed)
    ended_at   INTEGER NOT NULL,
    -- The status the step left `running` for: completed, retrying, failed, timeout, cancelled
    -- ('retrying' also when a new attempt replaced it at once).
    outcome    TEXT NOT NULL,
    error      TEXT,
    error_kind TEXT,
    PRIMARY KEY (run_id, service, attempt)
) WITHOUT ROWID;

-- An attempt ends when its step leaves `running`, or when a new attempt replaces it. Ending
-- times are the step's own `finished_at` when it has one, else the database's clock.
CREATE TRIGGER step_attempt_ended AFTER UPDATE OF status, attempts ON steps
WHEN OLD.status = 'running' AND OLD.attempts > 0
     AND (NEW.status <> 'running' OR NEW.attempts <> OLD.attempts)
BEGIN
    INSERT OR REPLACE INTO step_attempts (run_id, service, attempt, started_at, ended_at, outcome, error, error_kind)
    VALUES (
        OLD.run_id,
        OLD.service,
        OLD.attempts,
        OLD.claimed_at,
        COALESCE(
            CASE WHEN NEW.attempts = OLD.attempts THEN NEW.finished_at END,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
        ),
        CASE WHEN NEW.attempts = OLD.attempts THEN NEW.status ELSE 'retrying' END,
        CASE WHEN NEW.attempts = OLD.attempts THEN NEW.error END,
        CASE WHEN NEW.attempts = OLD.attempts THEN NEW.error_kind END
    );
END;
