-- name: dau
-- description: Daily active accounts (DAU) with new (NRU) and paying (PU) accounts, in total and by world, OS and store.
-- granularity: day
-- depends_on: silver.*, first_days
--
-- Definitions: shared/KPI.md. Written down where they leave a choice:
-- - One row per group: `dimension` is 'total', 'world', 'os' or 'store' and `value` the group
--   ('all' for the total; NULL when the account's events did not name one).
-- - An account counts once in every group it had an event in that day, so groups may add up
--   to more than the total. NRU and PU are broken down the same way.
-- - An account is new on its first active day over all data: the accounts of this day in
--   `gold.first_days` (job `first_days`), which is built before this job for each day.
-- - The four breakdowns are grouping sets of one aggregation: the day's events are read once.
WITH active AS (
  SELECT DISTINCT account, world, os, store
  FROM kpi.activity
  WHERE event_date = :date
),
new_accounts AS (
  SELECT account FROM gold.first_days WHERE first_date = :date
),
payers AS (
  SELECT DISTINCT account FROM kpi.payments
  WHERE event_date = :date AND account IS NOT NULL
),
flagged AS (
  SELECT a.account, a.world, a.os, a.store,
         n.account IS NOT NULL AS is_new,
         p.account IS NOT NULL AS is_paying
  FROM active a
  LEFT JOIN new_accounts n ON a.account = n.account
  LEFT JOIN payers p ON a.account = p.account
)
SELECT :date AS event_date,
  CASE WHEN grouping(world) = 0 THEN 'world' WHEN grouping(os) = 0 THEN 'os'
       WHEN grouping(store) = 0 THEN 'store' ELSE 'total' END AS dimension,
  CASE WHEN grouping(world) = 0 THEN world WHEN grouping(os) = 0 THEN os
       WHEN grouping(store) = 0 THEN store ELSE 'all' END AS value,
  count(DISTINCT account) AS dau,
  count(DISTINCT CASE WHEN is_new THEN account END) AS nru,
  count(DISTINCT CASE WHEN is_paying THEN account END) AS pu
FROM flagged
GROUP BY GROUPING SETS ((), (world), (os), (store))
