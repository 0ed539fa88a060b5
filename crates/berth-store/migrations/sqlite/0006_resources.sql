-- Sandbox resources a task asked for (JSON), within the server's limits.
ALTER TABLE tasks ADD COLUMN resources TEXT NOT NULL DEFAULT '{}';
