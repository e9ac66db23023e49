-- A token may be given a lifetime: past `expires_at` it is refused as a revoked one is.
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
