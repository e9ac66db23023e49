-- The spine: registry, tokens, client keys, idempotency ledger, checkpoints, quarantine,
-- and the caseload view. Migrations are numbered and never edited once applied.

CREATE TABLE organisations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    authority   text,
    keeps_cases boolean NOT NULL
);

-- Bearer tokens: only the SHA-256 of the secret is kept.
CREATE TABLE api_tokens (
    id          uuid PRIMARY KEY,
    org_id      text NOT NULL REFERENCES organisations (id),
    role        text NOT NULL CHECK (role IN ('org', 'coordinator', 'auditor', 'admin')),
    secret_hash bytea NOT NULL UNIQUE,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- One data key per client of each organisation, wrapped by the key-encryption key. The
-- client reference itself is not kept: only a keyed hash of it, to find the key again.
-- Erasure deletes wrapped_key and keeps the row as a tombstone.
CREATE TABLE client_keys (
    key_id          uuid PRIMARY KEY,
    org_id          text NOT NULL,
    client_ref_hash bytea NOT NULL,
    wrapped_key     bytea,
    kek_id          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    erased_at       timestamptz,
    UNIQUE (org_id, client_ref_hash),
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
);

-- Every event id the log holds, with the sequence it was first stored at: idempotency beyond
-- the broker's duplicate window.
CREATE TABLE event_ledger (
    event_id uuid PRIMARY KEY,
    seq      bigint NOT NULL UNIQUE,
    org_id   text NOT NULL
);

-- Each projection's position in the stream, committed with its view changes.
CREATE TABLE projection_checkpoints (
    projection text PRIMARY KEY,
    seq        bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Messages of the stream no projection applies, with the reason.
CREATE TABLE quarantine (
    seq            bigint PRIMARY KEY,
    subject        text NOT NULL,
    reason         text NOT NULL,
    detail         text NOT NULL,
    payload        bytea NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);

-- Caseload: one row per case of an organisation.
CREATE TABLE caseload (
    org_id                text NOT NULL,
    case_id               text NOT NULL,
    key_id                uuid,
    client_ref            text,
    status                text NOT NULL,
    channel               text,
    requested_at          timestamptz NOT NULL,
    closed_at             timestamptz,
    legal_status          text,
    in_detention          boolean NOT NULL DEFAULT false,
    prison                text,
    life_domains          text[] NOT NULL DEFAULT '{}',
    interventions_by_mode jsonb NOT NULL DEFAULT '{}',
    intervention_count    integer NOT NULL DEFAULT 0,
    last_contact_at       timestamptz,
    language              text,
    last_event_at         timestamptz NOT NULL,
    version               bigint NOT NULL,
    PRIMARY KEY (org_id, case_id)
);
CREATE INDEX caseload_by_activity ON caseload (org_id, last_event_at DESC, case_id);
CREATE INDEX caseload_by_key ON caseload (key_id);
