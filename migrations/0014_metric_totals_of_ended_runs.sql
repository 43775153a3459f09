-- `GET /metrics` reads the totals of ended runs (`metric_totals`: added by the transaction that
-- ends a run, taken back by the one that retries it) and the rows of the runs in progress only,
-- so a scrape no longer reads the whole history. This adds the runs that had already ended
-- (those still in D1; archived ones are counted already) to the totals, with the labels an
-- ending writes (core's `metrics::leaving_totals`): `runs`/`steps` by status, `attempts`,
-- `retries` by service, and for `run_ms`, `fan_in_ms` and `attempt_ms` the number of values in
-- each bucket (`le:{the smallest bound in ms the value is at most}`, or `le:+Inf`), `count` and
-- `sum` (ms).

INSERT INTO metric_totals (metric, label, value)
SELECT 'runs', status, COUNT(*) FROM runs WHERE completed_at IS NOT NULL GROUP BY status
ON CONFLICT (metric, label) DO UPDATE SET value = value + excluded.value;

INSERT INTO metric_totals (metric, label, value)
SELECT 'steps', s.status, COUNT(*) FROM runs r JOIN steps s ON s.run_id = r.run_id
WHERE r.completed_at IS NOT NULL GROUP BY s.status
ON CONFLICT (metric, label) DO UPDATE SET value = value + excluded.value;

INSERT INTO metric_totals (metric, label, value)
SELECT 'attempts', '', n FROM (
    SELECT COALESCE(SUM(s.attempts), 0) AS n FROM runs r JOIN steps s ON s.run_id = r.run_id
    WHERE r.completed_at IS NOT NULL
) WHERE n <> 0
ON CONFLICT (metric, label) DO UPDATE SET value = value + excluded.value;

INSERT INTO metric_totals (metric, label, value)
SELECT 'retries', s.service, SUM(s.attempts - 1) FROM runs r JOIN steps s ON s.run_id = r.run_id
WHERE r.completed_at IS NOT NULL AND s.attempts > 1 GROUP BY s.service
ON CONFLICT (metric, label) DO UPDATE SET value = value + excluded.value;

-- Run durations: start to end.
INSERT INTO metric_totals (metric, label, value)
SELECT 'run_ms', label, n FROM (
    SELECT CASE
            WHEN v <= 250 THEN 'le:250'
            WHEN v <= 500 THEN 'le:500'
            WHEN v <= 1000 THEN 'le:1000'
            WHEN v <= 2500 THEN 'le:2500'
            WHEN v <= 5000 THEN 'le:5000'
            WHEN v <= 10000 THEN 'le:10000'
            WHEN v <= 30000 THEN 'le:30000'
            WHEN v <= 60000 THEN 'le:60000'
            WHEN v <= 120000 THEN 'le:120000'
            WHEN v <= 300000 THEN 'le:300000'
            WHEN v <= 600000 THEN 'le:600000'
            WHEN v <= 1800000 THEN 'le:1800000'
            ELSE 'le:+Inf' END AS label, COUNT(*) AS n
    FROM (SELECT MAX(0, completed_at - started_at) AS v FROM runs WHERE completed_at IS NOT NULL) GROUP BY label
    UNION ALL SELECT 'count', COUNT(*) FROM (SELECT MAX(0, completed_at - started_at) AS v FROM runs WHERE completed_at IS NOT NULL)
    UNION ALL SELECT 'sum', COALESCE(SUM(v), 0) FROM (SELECT MAX(0, completed_at - started_at) AS v FROM runs WHERE completed_at IS NOT NULL)
) WHERE n <> 0
ON CONFLICT (metric, label) DO UPDATE SET value = value + excluded.value;

-- Fan-in latencies: from the run's last step settling to its claim.
INSERT INTO metric_totals (metric, label, value)
SELECT 'fan_in_ms', label, n FROM (
    SELECT CASE
            WHEN v <= 5 THEN 'le:5'
            WHEN v <= 10 THEN 'le:10'
            WHEN v <= 25 THEN 'le:25'
            WHEN v <= 50 THEN 'le:50'
            WHEN v <= 100 THEN 'le:100'
            WHEN v <= 250 THEN 'le:250'
            WHEN v <= 500 THEN 'le:500'
            WHEN v <= 1000 THEN 'le:1000'
            WHEN v <= 2500 THEN 'le:2500'
            WHEN v <= 5000 THEN 'le:5000'
            WHEN v <= 15000 THEN 'le:15000'
            WHEN v <= 60000 THEN 'le:60000'
            WHEN v <= 300000 THEN 'le:300000'
            ELSE 'le:+Inf' END AS label, COUNT(*) AS n
    FROM (SELECT MAX(0, r.claimed_at - MAX(s.finished_at)) AS v FROM runs r
          JOIN steps s ON s.run_id = r.run_id WHERE r.completed_at IS NOT NULL AND r.claimed_at IS NOT NULL
          AND s.finished_at IS NOT NULL GROUP BY r.run_id) GROUP BY label
    UNION ALL SELECT 'count', COUNT(*) FROM (SELECT MAX(0, r.claimed_at - MAX(s.finished_at)) AS v FROM runs r
          JOIN steps s ON s.run_id = r.run_id WHERE r.completed_at IS NOT NULL AND r.claimed_at IS NOT NULL
          AND s.finished_at IS NOT NULL GROUP BY r.run_id)
    UNION ALL SELECT 'sum', COALESCE(SUM(v), 0) FROM (SELECT MAX(0, r.claimed_at - MAX(s.finished_at)) AS v FROM runs r
          JOIN steps s ON s.run_id = r.run_id WHERE r.completed_at IS NOT NULL AND r.claimed_at IS NOT NULL
          AND s.finished_at IS NOT NULL GROUP BY r.run_id)
) WHERE n <> 0
ON CONFLICT (metric, label) DO UPDATE SET value = value + excluded.value;

-- Attempts a consumer ran: claim to end.
INSERT INTO metric_totals (metric, label, value)
SELECT 'attempt_ms', label, n FROM (
    SELECT CASE
            WHEN v <= 10 THEN 'le:10'
            WHEN v <= 50 THEN 'le:50'
            WHEN v <= 100 THEN 'le:100'
            WHEN v <= 250 THEN 'le:250'
            WHEN v <= 500 THEN 'le:500'
            WHEN v <= 1000 THEN 'le:1000'
            WHEN v <= 2500 THEN 'le:2500'
            WHEN v <= 5000 THEN 'le:5000'
            WHEN v <= 10000 THEN 'le:10000'
            WHEN v <= 30000 THEN 'le:30000'
            WHEN v <= 60000 THEN 'le:60000'
            WHEN v <= 300000 THEN 'le:300000'
            ELSE 'le:+Inf' END AS label, COUNT(*) AS n
    FROM (SELECT MAX(0, a.ended_at - a.started_at) AS v FROM runs r
          JOIN step_attempts a ON a.run_id = r.run_id WHERE r.completed_at IS NOT NULL AND a.started_at IS NOT NULL) GROUP BY label
    UNION ALL SELECT 'count', COUNT(*) FROM (SELECT MAX(0, a.ended_at - a.started_at) AS v FROM runs r
          JOIN step_attempts a ON a.run_id = r.run_id WHERE r.completed_at IS NOT NULL AND a.started_at IS NOT NULL)
    UNION ALL SELECT 'sum', COALESCE(SUM(v), 0) FROM (SELECT MAX(0, a.ended_at - a.started_at) AS v FROM runs r
          JOIN step_attempts a ON a.run_id = r.run_id WHERE r.completed_at IS NOT NULL AND a.started_at IS NOT NULL)
) WHERE n <> 0
ON CONFLICT (metric, label) DO UPDATE SET value = value + excluded.value;
