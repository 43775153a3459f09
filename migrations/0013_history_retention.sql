-- The retention of the history kept beside runs (RETENTION_DAYS, the default period): webhook
-- deliveries that settled, schedule fires that started or failed, and dead letters given up on
-- are deleted once older than it, in bounded batches, through these indexes (no scan of history).
CREATE INDEX webhook_deliveries_settled ON webhook_deliveries (updated_at) WHERE status <> 'pending';
CREATE INDEX schedule_fires_settled ON schedule_fires (fired_at) WHERE status <> 'claimed';
CREATE INDEX dead_letters_given_up ON dead_letters (given_up_at) WHERE given_up_at IS NOT NULL;
