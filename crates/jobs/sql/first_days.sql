-- name: first_days
-- description: Each account's first active day: the accounts active on the day that no earlier day of the table holds.
-- granularity: day
-- partition_column: first_date
-- depends_on: silver.*
-- depends_on_past: true
-- target_columns: account STRING, first_date DATE
--
-- Definitions: shared/KPI.md (a new account is one on its first active day). Written down
-- where they leave a choice:
-- - The table is incremental: day D holds the accounts active on D that no earlier day of
--   `gold.first_days` holds. A build reads one day of events and the accounts seen before it,
--   not every earlier event, so `dau` (NRU) and `retention` (cohorts) read one partition of it.
-- - Days are built in order (`depends_on_past`): a day waits until every earlier day with
--   events is built. A day rebuilt for late events makes every later built day due again, so
--   an account whose first day moved earlier leaves the later day: each account is in one day.
-- - `NOT EXISTS` is an anti join: the day's accounts not among the earlier ones, without
--   first joining every account to a row or a null as `LEFT JOIN … IS NULL` does. A backfill
--   of 8 days took 0.88 s instead of 0.91 s (BENCHMARKS.md, issue 5, twentieth session).
SELECT a.account, :date AS first_date
FROM (SELECT DISTINCT account FROM kpi.activity WHERE event_date = :date) a
WHERE NOT EXISTS (
  SELECT 1 FROM gold.first_days e WHERE e.first_date < :date AND e.account = a.account
)
