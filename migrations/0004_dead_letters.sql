-- Messages of the dead-letter queues (baton-tasks-dlq, llm-analysis-dlq) that their consumer
-- could not handle. Every failed delivery is counted here before the message is retried, so
-- the count survives the queue; once the consumer gives up (or the body cannot be decoded)
-- the message is acknowledged and its row stays, with `given_up_at` set. A delivery that
-- succeeds later removes the row. Nothing reads this table but an operator.
CREATE TABLE dead_letters (
  queue TEXT NOT NULL,
  message_id TEXT NOT NULL,
  body TEXT NOT NULL,
  error TEXT NOT NULL,
  failures INTEGER NOT NULL,
  first_failed_at INTEGER NOT NULL,
  last_failed_at INTEGER NOT NULL,
  given_up_at INTEGER,
  PRIMARY KEY (queue, message_id)
);
