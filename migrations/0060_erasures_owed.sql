-- An erasure destroys the client's key, then appends its `relais.client.erased` event (the
-- validator accepts the event only for a destroyed key). If the append fails, the key stays
-- destroyed and the event is owed: until it is in the log, the views keep what they showed of
-- the client. The reason and actor are kept with the key so that the retention sweep can
-- append the event the erasure owes, as it would have been; `erasure_seq` is where it is.
-- Keys erased before this migration have no reason: the sweep finds their event in the ledger,
-- or appends it as a client's request.
ALTER TABLE client_keys
    ADD COLUMN erasure_reason text,
    ADD COLUMN erasure_actor text,
    ADD COLUMN erasure_seq bigint;
-- The erased keys by time: the sweep's owed events, and the keys a running replay must stop
-- using (erased since its last chunk).
CREATE INDEX client_keys_erased_at ON client_keys (erased_at) WHERE erased_at IS NOT NULL;
