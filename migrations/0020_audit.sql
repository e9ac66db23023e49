-- The audit chain and its signed checkpoints (docs/AUDIT.md). Append-only: rows are never
-- updated or deleted (the triggers below refuse it), except the `published` flag of a
-- checkpoint once it is on the audit stream.

-- One link per stream sequence, in order, from 1 to the chain head. `missing`: the sequence
-- held no message when the chain reached it.
CREATE TABLE audit_chain (
    seq     bigint PRIMARY KEY,
    link    bytea NOT NULL CHECK (octet_length(link) = 32),
    missing boolean NOT NULL DEFAULT false
);

-- Signed checkpoints of the chain head; also published on the audit stream (RELAIS_AUDIT).
CREATE TABLE audit_checkpoints (
    id        bigserial PRIMARY KEY,
    seq       bigint NOT NULL,
    head      bytea NOT NULL CHECK (octet_length(head) = 32),
    stream    text NOT NULL,
    signed_at timestamptz NOT NULL,
    key_id    text NOT NULL,
    statement text NOT NULL,
    signature bytea NOT NULL CHECK (octet_length(signature) = 64),
    published boolean NOT NULL DEFAULT false
);
CREATE INDEX audit_checkpoints_by_seq ON audit_checkpoints (seq, id);
CREATE INDEX audit_checkpoints_unpublished ON audit_checkpoints (id) WHERE NOT published;

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'audit_checkpoints' THEN
        IF (NEW.id, NEW.seq, NEW.head, NEW.stream, NEW.signed_at, NEW.key_id, NEW.statement, NEW.signature)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.seq, OLD.head, OLD.stream, OLD.signed_at, OLD.key_id, OLD.statement, OLD.signature) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
