-- NOTIFY is sent by the statement that writes the row, from these triggers, rather than by a
-- statement of its own after it: one round trip fewer for every event, enqueue and hand-back
-- (the queue bench, issue 17). Account changes, which write no event row, still notify in code.

-- Each task event tells stream subscribers on every node: `task:owner:seq`, as
-- `EventNotice::decode` reads it.
CREATE FUNCTION task_events_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_events', NEW.task_id::TEXT || ':'
        || (SELECT owner_id FROM tasks WHERE id = NEW.task_id)::TEXT || ':' || NEW.seq::TEXT);
    RETURN NULL;
END
$$;
CREATE TRIGGER task_events_announce AFTER INSERT ON task_events
    FOR EACH ROW EXECUTE FUNCTION task_events_announce();

-- A task that becomes queued (created, handed back, followed up) wakes every node's runners.
-- The queue's counting trigger already runs on exactly those changes.
CREATE OR REPLACE FUNCTION tasks_count_in_queue() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF NEW.status = 'queued' THEN
        PERFORM pg_notify('berth_work', '');
    END IF;
    RETURN NULL;
END
$$;
