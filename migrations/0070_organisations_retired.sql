-- An organisation taken out of the registry (configuration) is retired, never deleted: its
-- events stay in the log and its name in history. Its tokens stop working, and no new token
-- is created for it. Set by a serving process at start-up; cleared if it comes back.
ALTER TABLE organisations ADD COLUMN retired_at timestamptz;
