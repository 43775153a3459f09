-- Retrying an ended run: how many times it was retried (its events of each round have their
-- own dedupe keys), and per step the attempts made before the last retry (the retry policy
-- counts from there, while attempt numbers go on).
ALTER TABLE runs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
