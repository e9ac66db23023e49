-- no-transaction
-- A client's subject access export finds the reads of their cases and of their key by
-- resource prefix (`orgs/<org>/cases/<case>/...`): a bytewise ("C") index serves the range
-- of each prefix, where the default collation's ordering cannot. Built concurrently: the
-- access log is written by every audited read and may be large when this runs.
CREATE INDEX CONCURRENTLY IF NOT EXISTS access_log_by_resource_c ON access_log ((resource COLLATE "C"), id);
