-- The queue's view of each user: how many tasks they have queued and running (or
-- cancelling), and when a claim last served them. Triggers keep it in step with the tasks'
-- statuses, wherever a status changes, so a claim reads one small row per user instead of
-- counting their history. Only queued tasks are indexed for the claim.
CREATE TABLE queue_users (
    user_id          BLOB PRIMARY KEY REFERENCES users(id),
    queued           INTEGER NOT NULL DEFAULT 0,
    running          INTEGER NOT NULL DEFAULT 0,
    last_claimed_at  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO queue_users (user_id, queued, running, last_claimed_at)
SELECT owner_id, SUM(status = 'queued'), SUM(status IN ('running', 'cancelling')),
       COALESCE(MAX(claimed_at), 0)
FROM tasks GROUP BY owner_id;

CREATE TRIGGER tasks_enter_queue AFTER INSERT ON tasks BEGIN
    INSERT INTO queue_users (user_id, queued, running)
    VALUES (NEW.owner_id, NEW.status = 'queued', NEW.status IN ('running', 'cancelling'))
    ON CONFLICT (user_id) DO UPDATE SET queued = queued + excluded.queued,
                                        running = running + excluded.running;
END;

CREATE TRIGGER tasks_move_in_queue AFTER UPDATE OF status ON tasks
WHEN OLD.status IS NOT NEW.status BEGIN
    UPDATE queue_users SET
        queued = queued + (NEW.status = 'queued') - (OLD.status = 'queued'),
        running = running + (NEW.status IN ('running', 'cancelling'))
                          - (OLD.status IN ('running', 'cancelling')),
        last_claimed_at = MAX(last_claimed_at, COALESCE(NEW.claimed_at, 0))
    WHERE user_id = NEW.owner_id;
END;

CREATE INDEX tasks_queued ON tasks(owner_id, id) WHERE status = 'queued';
DROP INDEX tasks_by_status;
DROP INDEX tasks_by_owner_claim;
