-- The reaper looks for active tasks whose lease ran out: only active tasks are indexed for
-- it, not every finished one (issue 17: the queue slowed down as its history grew).
DROP INDEX tasks_by_lease;
CREATE INDEX tasks_active_by_lease ON tasks(lease_expires_at) WHERE status IN ('running', 'cancelling');
