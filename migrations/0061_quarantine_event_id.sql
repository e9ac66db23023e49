-- The event id of a quarantined message that decodes. The broker refuses an atomic batch that
-- holds an id it stored within its duplicate window, quarantined or not; the gateway finds
-- the accepted ones in the ledger and the quarantined ones here, and answers both as
-- duplicates, as the broker does for a single publish.
ALTER TABLE quarantine ADD COLUMN event_id uuid;
CREATE INDEX quarantine_event_id ON quarantine (event_id) WHERE event_id IS NOT NULL;
