-- The views each organisation works from, the shared continuity monitor and the funder
-- statistics. Every table here is a projection of the log: `relais rebuild <projection>`
-- rebuilds it into a copy (CREATE TABLE ... (LIKE ... INCLUDING ALL)) and swaps it in, so
-- view tables have no serial columns, no foreign keys and no triggers.

-- Caseload: the rest of the legal situation and what the work list needs.
ALTER TABLE caseload
    ADD COLUMN detention_since      date,
    ADD COLUMN release_scheduled_on date,
    ADD COLUMN released_on          date,
    ADD COLUMN aftercare_started_at timestamptz,
    ADD COLUMN urgent_request_count integer NOT NULL DEFAULT 0,
    ADD COLUMN family_contact_count integer NOT NULL DEFAULT 0;
CREATE INDEX caseload_by_release ON caseload (org_id, release_scheduled_on) WHERE release_scheduled_on IS NOT NULL;

-- Coming up (written by the caseload projection): scheduled releases (one per case, item_seq
-- 0), prepared furloughs and escorted outings (item_seq: the sequence of the event).
CREATE TABLE coming_up (
    org_id     text NOT NULL,
    case_id    text NOT NULL,
    item       text NOT NULL CHECK (item IN ('release', 'leave', 'outing')),
    item_seq   bigint NOT NULL,
    on_date    date NOT NULL,
    detail     text NOT NULL,
    key_id     uuid,
    client_ref text,
    PRIMARY KEY (org_id, case_id, item, item_seq)
);
CREATE INDEX coming_up_by_date ON coming_up (org_id, on_date, case_id, item, item_seq);
CREATE INDEX coming_up_by_key ON coming_up (key_id);

-- Case timeline: every event of a case, in stream order, with who recorded it. `personal`
-- holds the opened personal fields and is emptied when the client is erased.
CREATE TABLE case_timeline (
    seq            bigint PRIMARY KEY,
    org_id         text NOT NULL,
    case_id        text NOT NULL,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL,
    actor          text NOT NULL,
    key_id         uuid,
    data           jsonb NOT NULL,
    personal       jsonb
);
CREATE INDEX case_timeline_by_case ON case_timeline (org_id, case_id, seq);
CREATE INDEX case_timeline_by_key ON case_timeline (key_id);

-- Referrals, closed loop, seen by the sender (out) and the receiving organisation (in).
CREATE TABLE referrals (
    referral_id         text PRIMARY KEY,
    sender_org          text NOT NULL,
    sender_case_id      text NOT NULL,
    sender_key_id       uuid,
    sender_client_ref   text,
    destination_kind    text NOT NULL CHECK (destination_kind IN ('organisation', 'outside_service')),
    destination         text NOT NULL,
    receiver_org        text,
    receiver_key_id     uuid,
    receiver_client_ref text,
    life_domains        text[] NOT NULL,
    message             text,
    stage               text NOT NULL,
    made_at             timestamptz NOT NULL,
    received_at         timestamptz,
    accepted_at         timestamptz,
    first_contact_at    timestamptz,
    closed_at           timestamptz,
    stage_at            timestamptz NOT NULL,
    outcome             text,
    decline_reason      text,
    decline_text        text,
    cancel_reason       text,
    days_open           integer,
    version             bigint NOT NULL
);
CREATE INDEX referrals_out ON referrals (sender_org, made_at DESC, referral_id);
CREATE INDEX referrals_in ON referrals (receiver_org, made_at DESC, referral_id);
CREATE INDEX referrals_by_sender_case ON referrals (sender_org, sender_case_id);
CREATE INDEX referrals_by_sender_key ON referrals (sender_key_id);
CREATE INDEX referrals_by_receiver_key ON referrals (receiver_key_id);

-- Group activities and their rosters. A participant is known by the registering
-- organisation's client key; each organisation sees only its own participants.
CREATE TABLE activities (
    activity_id    text PRIMARY KEY,
    organiser      text,
    kind           text,
    title          text,
    target_groups  text[] NOT NULL DEFAULT '{}',
    prison         text,
    partners       text[] NOT NULL DEFAULT '{}',
    languages      text[] NOT NULL DEFAULT '{}',
    capacity       integer,
    starts_on      date,
    orgs           text[] NOT NULL DEFAULT '{}',
    surveys        jsonb NOT NULL DEFAULT '[]',
    sessions       jsonb NOT NULL DEFAULT '[]',
    evaluations    jsonb NOT NULL DEFAULT '[]',
    registrations  integer NOT NULL DEFAULT 0,
    admitted       integer NOT NULL DEFAULT 0,
    refused        integer NOT NULL DEFAULT 0,
    enrolled       integer NOT NULL DEFAULT 0,
    dropouts       integer NOT NULL DEFAULT 0,
    feedbacks      integer NOT NULL DEFAULT 0,
    stopped        boolean NOT NULL DEFAULT false,
    last_event_at  timestamptz NOT NULL,
    version        bigint NOT NULL
);
CREATE INDEX activities_by_orgs ON activities USING gin (orgs);
CREATE INDEX activities_by_partners ON activities USING gin (partners);

CREATE TABLE activity_participants (
    activity_id    text NOT NULL,
    org_id         text NOT NULL,
    key_id         uuid NOT NULL,
    client_ref     text,
    status         text NOT NULL,
    registered_at  timestamptz,
    screened_at    timestamptz,
    refusal_reason text,
    enrolled_at    timestamptz,
    dropped_out_at timestamptz,
    dropout_reason text,
    feedback_at    timestamptz,
    PRIMARY KEY (activity_id, org_id, key_id)
);
CREATE INDEX activity_participants_by_org ON activity_participants (org_id, activity_id);
CREATE INDEX activity_participants_by_key ON activity_participants (key_id);

-- Continuity monitor: consented clients only, by linkage key. `case_id` links events to a
-- member inside the projection and is never shown; rows go when the consent is withdrawn or
-- expires and when the client is erased (found by key_id).
CREATE TABLE monitor_members (
    org_id               text NOT NULL,
    case_id              text NOT NULL,
    linkage_key          text NOT NULL,
    key_id               uuid,
    consent_expires_on   date,
    joined_at            timestamptz NOT NULL,
    status               text NOT NULL,
    in_detention         boolean NOT NULL DEFAULT false,
    detention_started_at timestamptz,
    release_on           date,
    released             boolean NOT NULL DEFAULT false,
    aftercare_at         timestamptz,
    PRIMARY KEY (org_id, case_id)
);
CREATE INDEX monitor_members_by_linkage ON monitor_members (linkage_key);
CREATE INDEX monitor_members_by_key ON monitor_members (key_id);

-- Moments that make open referrals urgent: released, transferred, guidance closed.
CREATE TABLE monitor_moments (
    org_id  text NOT NULL,
    case_id text NOT NULL,
    seq     bigint NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('released', 'transferred', 'closed')),
    at      timestamptz NOT NULL,
    PRIMARY KEY (org_id, case_id, seq)
);

CREATE TABLE monitor_referrals (
    referral_id      text PRIMARY KEY,
    org_id           text NOT NULL,
    case_id          text NOT NULL,
    receiver_org     text,
    destination_kind text NOT NULL,
    stage            text NOT NULL,
    made_at          timestamptz NOT NULL,
    answered_at      timestamptz,
    accepted_at      timestamptz,
    first_contact_at timestamptz,
    closed_at        timestamptz
);
CREATE INDEX monitor_referrals_by_member ON monitor_referrals (org_id, case_id);

CREATE TABLE monitor_dropouts (
    activity_id text NOT NULL,
    org_id      text NOT NULL,
    key_id      uuid NOT NULL,
    case_id     text NOT NULL,
    dropped_at  timestamptz NOT NULL,
    feedback_at timestamptz,
    PRIMARY KEY (activity_id, org_id, key_id)
);
CREATE INDEX monitor_dropouts_by_member ON monitor_dropouts (org_id, case_id);

-- Alerts: a function of the facts above and the clock. opened_at is when the condition
-- became true (the due time of a time-based alert), closed_at when the resolving event
-- happened. detail holds minimal facts, never free text or case ids.
CREATE TABLE monitor_alerts (
    alert_id    text PRIMARY KEY,
    linkage_key text NOT NULL,
    kind        text NOT NULL,
    org_id      text NOT NULL,
    other_org   text,
    opened_at   timestamptz NOT NULL,
    closed_at   timestamptz,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX monitor_alerts_open ON monitor_alerts (opened_at, alert_id) WHERE closed_at IS NULL;
CREATE INDEX monitor_alerts_by_linkage ON monitor_alerts (linkage_key);

-- Statistics: one fact per event and cell, statistical fields only, so past periods never
-- change (erasure destroys keys, not facts). `person` is an opaque counting key (an
-- organisation's case or a participant's key id), never shown.
CREATE TABLE stats_cases (
    org_id       text NOT NULL,
    case_id      text NOT NULL,
    legal_status text,
    in_detention boolean NOT NULL DEFAULT false,
    language     text,
    PRIMARY KEY (org_id, case_id)
);

CREATE TABLE stats_referrals (
    referral_id      text PRIMARY KEY,
    sender_org       text NOT NULL,
    sender_case_id   text NOT NULL,
    destination_type text NOT NULL
);

CREATE TABLE stats_activities (
    activity_id text PRIMARY KEY,
    kind        text NOT NULL
);

CREATE TABLE stats_facts (
    seq     bigint NOT NULL,
    n       smallint NOT NULL,
    day     date NOT NULL,
    org_id  text NOT NULL,
    measure text NOT NULL,
    dim1    text NOT NULL DEFAULT '',
    dim2    text NOT NULL DEFAULT '',
    person  text NOT NULL,
    value   bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (seq, n)
);
CREATE INDEX stats_facts_by_day ON stats_facts (day, measure);
