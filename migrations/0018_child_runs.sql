-- Child runs: a run started by a `run` step of another run (its parent) names the parent, the
-- step and the attempt that started it; `depth` is 0 for a run a client started, else its
-- parent's + 1 (bounded by QUOTAS' max_child_depth). The index finds a run's children: the
-- parent's view and the cascade that cancels the open children of a parent that ended.
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE runs ADD COLUMN parent_step TEXT;
ALTER TABLE runs ADD COLUMN parent_attempt INTEGER;
ALTER TABLE runs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
CREATE INDEX idx_runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
