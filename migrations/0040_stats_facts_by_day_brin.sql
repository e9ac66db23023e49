-- Statistics facts are appended in log order, which follows the days of the events: a block
-- range index finds a period's facts and costs next to nothing on each insert, where the
-- B-tree on (day, measure) took a tenth of the WAL records of a projection batch
-- (docs/BENCHMARKS.md, "A fifth session"). A fact of an earlier day (a late event) only widens
-- its block's range: found all the same, at the price of reading that block. A range is
-- summarised when it is full (`autosummarize`, by autovacuum) or by the next vacuum; until
-- then a query reads it whole.
DROP INDEX stats_facts_by_day;
CREATE INDEX stats_facts_by_day ON stats_facts USING brin (day) WITH (autosummarize = on);
