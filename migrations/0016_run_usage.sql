-- What each run cost: the units Cloudflare bills for that Baton's workers used on the run's
-- behalf (D1 round trips, statements, rows read and written; KV reads and writes; queue
-- messages; subrequests; R2 reads and writes), added to its row as its work is done. `/metrics`
-- sums them by client and plan in `metric_totals` (metric `units`).

ALTER TABLE runs ADD COLUMN usage_d1_round_trips INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN usage_d1_statements INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN usage_d1_rows_read INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN usage_d1_rows_written INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN usage_kv_reads INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN usage_kv_writes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN usage_queue_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN usage_subrequests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN usage_r2_reads INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN usage_r2_writes INTEGER NOT NULL DEFAULT 0;
