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
SELECT a.account, :date AS first_date
FROM (SELECT DISTINCT account FROM kpi.activity WHERE event_date = :date) a
LEFT JOIN (SELECT account FROM gold.first_days WHERE first_date < :date) e
  ON a.account = e.account
WHERE e.account IS NULL
