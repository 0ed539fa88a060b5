-- The commit a task's work starts from, so a follow-up or a resumed attempt rebuilds the
-- same workspace; and the follow-up prompts waiting for the next attempt.
ALTER TABLE tasks ADD COLUMN base_commit TEXT;
ALTER TABLE tasks ADD COLUMN pending_prompt TEXT;
