-- The reaper looks for active tasks whose lease ran out: only active tasks are indexed for
-- it, not every finished one. A task's row changes on every claim, heartbeat and end, and a
-- change to an indexed column writes a new entry into each index of the table, this one's
-- included for every finished task (issue 17: the queue slowed down as its history grew).
DROP INDEX tasks_by_lease;
CREATE INDEX tasks_active_by_lease ON tasks(lease_expires_at) WHERE status IN ('running', 'cancelling');
-- Room in each page for a row's next version: an event's append, which changes no indexed
-- column, then updates the row in its page ("HOT") instead of adding an entry to each index.
ALTER TABLE tasks SET (fillfactor = 85);
