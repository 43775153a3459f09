-- When a running attempt last sent a heartbeat (a progress answer saying it still runs). A
-- step with `heartbeat_timeout_ms` in its plan times out when none comes in that long.
ALTER TABLE steps ADD COLUMN heartbeat_at INTEGER;

-- The `service` a run's events carry (ORCHESTRATOR_SERVICE_NAME where the run started), so
-- every worker that writes its events writes the same name.
ALTER TABLE runs ADD COLUMN events_service TEXT;
