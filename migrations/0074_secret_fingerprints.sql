-- Fingerprints of the secrets every process of a deployment must share (the admission key,
-- the client reference pepper): the first serving process records them, and a process
-- configured with another secret refuses to start instead of judging or pseudonymising
-- differently.
CREATE TABLE secret_fingerprints (
    variable text PRIMARY KEY,
    fingerprint text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
