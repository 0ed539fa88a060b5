-- When each task was last claimed: the scheduler serves the user it served least recently.
ALTER TABLE tasks ADD COLUMN claimed_at BIGINT;
CREATE INDEX tasks_by_owner_status ON tasks(owner_id, status, id);
CREATE INDEX tasks_by_owner_claim ON tasks(owner_id, claimed_at);
CREATE INDEX tasks_by_lease ON tasks(status, lease_expires_at);
CREATE INDEX tasks_by_node ON tasks(lease_owner, status);
