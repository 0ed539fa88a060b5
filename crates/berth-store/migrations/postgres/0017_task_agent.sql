-- The agent a task asked for (`berth`, `claude-code`); NULL means the server's `agent` setting.
ALTER TABLE tasks ADD COLUMN agent TEXT;
