-- Every read of case-level data and every replay, by any role over any endpoint: who, what,
-- when. Never the token secret, never personal data (resources are named by ids).
CREATE TABLE access_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    token_id  uuid NOT NULL,
    org_id    text NOT NULL,
    role      text NOT NULL,
    action    text NOT NULL,
    resource  text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX access_log_by_time ON access_log (at, id);
CREATE INDEX access_log_by_resource ON access_log (resource, at);
