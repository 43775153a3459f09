-- The delegate (API_DELEGATIONS, e.g. the key-account service) whose token started a run or
-- an execution for the client that owns it; NULL when the client started it itself.
ALTER TABLE runs ADD COLUMN acted_by TEXT;
ALTER TABLE execution_queue ADD COLUMN acted_by TEXT;

-- Requests per client per fixed window, where RATE_LIMITS is counted without the platform's
-- rate-limiting binding (locally). A client's earlier windows are deleted as a new one starts.
CREATE TABLE rate_limit_windows (
    client_id    TEXT NOT NULL,
    window_start INTEGER NOT NULL,             -- ms, aligned to the limit's period
    count        INTEGER NOT NULL,
    PRIMARY KEY (client_id, window_start)
) WITHOUT ROWID;
