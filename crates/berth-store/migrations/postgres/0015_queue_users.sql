-- The queue's view of each user: how many tasks they have queued and running (or
-- cancelling), and when a claim last served them. Triggers keep it in step with the tasks'
-- statuses, wherever a status changes, so a claim reads (and locks) one small row per user
-- instead of counting their history. Only queued tasks are indexed for the claim.
CREATE TABLE queue_users (
    user_id          UUID PRIMARY KEY REFERENCES users(id),
    queued           BIGINT NOT NULL DEFAULT 0,
    running          BIGINT NOT NULL DEFAULT 0,
    last_claimed_at  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO queue_users (user_id, queued, running, last_claimed_at)
SELECT owner_id, COUNT(*) FILTER (WHERE status = 'queued'),
       COUNT(*) FILTER (WHERE status IN ('running', 'cancelling')),
       COALESCE(MAX(claimed_at), 0)
FROM tasks GROUP BY owner_id;

CREATE FUNCTION tasks_count_in_queue() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_queued INT := 0;
    was_running INT := 0;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        was_queued := (OLD.status = 'queued')::INT;
        was_running := (OLD.status IN ('running', 'cancelling'))::INT;
    END IF;
    INSERT INTO queue_users AS u (user_id, queued, running, last_claimed_at)
    VALUES (NEW.owner_id, (NEW.status = 'queued')::INT - was_queued,
            (NEW.status IN ('running', 'cancelling'))::INT - was_running,
            COALESCE(NEW.claimed_at, 0))
    ON CONFLICT (user_id) DO UPDATE SET
        queued = u.queued + excluded.queued,
        running = u.running + excluded.running,
        last_claimed_at = GREATEST(u.last_claimed_at, excluded.last_claimed_at);
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_enter_queue AFTER INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_count_in_queue();
CREATE TRIGGER tasks_move_in_queue AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION tasks_count_in_queue();

CREATE INDEX tasks_queued ON tasks(owner_id, id) WHERE status = 'queued';
DROP INDEX tasks_by_status;
DROP INDEX tasks_by_owner_claim;
