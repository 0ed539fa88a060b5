-- Where a follow-up's events begin (the seq of its `queued` status event): a client whose
-- first answer was lost, asking again with the same key, still learns where to follow from.
ALTER TABLE follow_ups ADD COLUMN first_seq INTEGER;
