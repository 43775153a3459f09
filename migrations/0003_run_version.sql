-- A run's version: a fresh random token written with every change to the run's status or to
-- any of its steps' status or attempt count. A decision taken on a copy of the run is written
-- only while the version is still the one it read ("the gate"), so a run read once is decided
-- on without reading its steps again, and a racing writer is noticed from one row.
ALTER TABLE runs ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
