-- Measures that come from the same event are stored as one statistics fact, and the
-- statistics query tells them apart when it reads them: fewer rows for the projection, a
-- rebuild and the table (docs/BENCHMARKS.md, "An eighth session").
-- - `clients_guided` now carries the legal status and the place (`dim1`, `dim2`, as
--   `clients_by_legal_situation` did) and the language (`dim3`, as `clients_by_language` did).
-- - `interventions` (stored only) carries the mode, the life domains (`domains`) and, as its
--   value, the minutes: it replaces an intervention's `interventions_by_mode`,
--   `intervention_minutes_by_mode` and `interventions_by_life_domain` facts.
-- - `urgent_help` (stored only) carries the life domain (`dim1`): it replaces urgent help's
--   `interventions_by_mode` (`practical_help`, no minutes) and `interventions_by_life_domain`.
ALTER TABLE stats_facts ADD COLUMN dim3 text NOT NULL DEFAULT '';
ALTER TABLE stats_facts ADD COLUMN domains text[] NOT NULL DEFAULT '{}';

-- Facts already projected take the same shape, so that this database answers as a rebuilt one.
UPDATE stats_facts g
   SET dim1 = l.dim1, dim2 = l.dim2, dim3 = la.dim1
  FROM stats_facts l, stats_facts la
 WHERE g.measure = 'clients_guided'
   AND l.seq = g.seq AND l.measure = 'clients_by_legal_situation'
   AND la.seq = g.seq AND la.measure = 'clients_by_language';
DELETE FROM stats_facts WHERE measure IN ('clients_by_legal_situation', 'clients_by_language');
UPDATE stats_facts i
   SET measure = 'interventions', value = m.value
  FROM stats_facts m
 WHERE i.measure = 'interventions_by_mode'
   AND m.seq = i.seq AND m.measure = 'intervention_minutes_by_mode' AND m.dim1 = i.dim1;
DELETE FROM stats_facts WHERE measure = 'intervention_minutes_by_mode';
UPDATE stats_facts i
   SET domains = d.domains
  FROM (SELECT seq, array_agg(dim1 ORDER BY n) AS domains
          FROM stats_facts WHERE measure = 'interventions_by_life_domain' GROUP BY seq) d
 WHERE i.measure = 'interventions' AND d.seq = i.seq;
DELETE FROM stats_facts l USING stats_facts i
 WHERE l.measure = 'interventions_by_life_domain' AND i.seq = l.seq AND i.measure = 'interventions';
-- What is left of `interventions_by_mode` is urgent help: interventions were merged above.
UPDATE stats_facts u
   SET measure = 'urgent_help', dim1 = l.dim1
  FROM stats_facts l
 WHERE u.measure = 'interventions_by_mode' AND u.dim1 = 'practical_help'
   AND l.seq = u.seq AND l.measure = 'interventions_by_life_domain';
DELETE FROM stats_facts l USING stats_facts u
 WHERE l.measure = 'interventions_by_life_domain' AND u.seq = l.seq AND u.measure = 'urgent_help';

-- The facts of an event are numbered from 0 without gaps, as the projection numbers them. A
-- unique key is checked row by row, so the new numbers pass through negative ones.
UPDATE stats_facts f
   SET n = -1 - r.n
  FROM (SELECT seq, n AS old, (row_number() OVER (PARTITION BY seq ORDER BY n) - 1)::int2 AS n
          FROM stats_facts) r
 WHERE f.seq = r.seq AND f.n = r.old AND r.n <> r.old;
UPDATE stats_facts SET n = -1 - n WHERE n < 0;
