-- A claim counts the node's running tasks, and a runner lists its own: only active tasks are
-- indexed for that, so the count reads a few rows however long the history grows, whatever
-- plan statistics suggest. With statistics (ANALYZE), SQLite 3.46 scanned the index of every
-- task's node whole on each claim (the queue bench's history figure, issue 17).
CREATE INDEX tasks_active_by_node ON tasks(lease_owner) WHERE status IN ('running', 'cancelling');
DROP INDEX tasks_by_node;
