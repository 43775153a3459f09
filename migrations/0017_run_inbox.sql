-- Events delivered to runs (`POST /api/orchestration/runs/:run_id/events/:name`), for their
-- wait steps. One row per run and event name: a second delivery of the same event is ignored
-- (`changes` = 0: `already_delivered`). An event delivered before its wait starts stays here
-- until the wait starts and takes it; the rows leave D1 with their run (archive, delete).
CREATE TABLE run_inbox (
    run_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
