-- The API token or web session a ticket was made with: a stream opened with the ticket lives
-- no longer than that credential.
ALTER TABLE stream_tickets ADD COLUMN credential_id UUID;
