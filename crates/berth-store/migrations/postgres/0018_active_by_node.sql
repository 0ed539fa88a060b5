-- A claim counts the node's running tasks, and a runner lists its own: only active tasks are
-- indexed for that, so the count reads a few rows however long the history grows, whatever
-- plan statistics suggest. With statistics (ANALYZE), SQLite 3.46 scanned the index of every
-- task's node whole on each claim (the queue bench's history figure, issue 17).
CREATE INDEX tasks_active_by_node ON tasks(lease_owner) WHERE status IN ('running', 'cancelling');
DROP INDEX tasks_by_node;

-- Every task's insert and change of status updates its owner's `queue_users` row, so the
-- table's few rows leave many dead versions behind between vacuums (100,000 finished tasks
-- loaded at once left 847 pages for 8 rows, and each claim read them all). The claim's
-- choice reads only users with queued work through this index, and the table is vacuumed
-- after every thousand dead rows rather than after a fifth of its size.
CREATE INDEX queue_users_with_work ON queue_users (running, last_claimed_at) WHERE queued > 0;
ALTER TABLE queue_users SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
