-- A case's version (what `expectedversion` must name) is the last sequence stored on its
-- subject, which the broker checks quarantined messages included: the caseload gives the last
-- applied one, the quarantine the last refused one, found by subject here.
CREATE INDEX quarantine_subject ON quarantine (subject, seq);
