-- The id of this installation (one database, however many nodes): Berth labels everything it
-- creates in Docker with it, so that two installations sharing an engine never touch each
-- other's containers.
CREATE TABLE installation (
    id  TEXT NOT NULL
);
INSERT INTO installation (id) VALUES (replace(gen_random_uuid()::text, '-', ''));

-- A draining runner's hand-back moves the attempt number (the fence) on, but it is no
-- attempt used: attempts used are attempt - handbacks.
ALTER TABLE tasks ADD COLUMN handbacks BIGINT NOT NULL DEFAULT 0;
