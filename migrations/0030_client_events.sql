-- Privacy: which events of the log are about which client (by the id of the client's data
-- key, never by the client reference), so that a subject access export and the retention
-- sweep do not scan the whole log. Holds no personal data: ids, sequence, type and time.
CREATE TABLE client_events (
    key_id      uuid NOT NULL,
    seq         bigint NOT NULL,
    org_id      text NOT NULL,
    subject     text NOT NULL,
    event_type  text NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, seq)
);
CREATE INDEX client_events_by_org ON client_events (org_id, key_id);
