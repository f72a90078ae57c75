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
--   Each grouping set is split further by (is_new, is_paying), so that one `count(DISTINCT
--   account)` gives all three figures: an account is new or not, paying or not, on the whole
--   day, so the four splits of a group hold different accounts and their counts add up. Three
--   `count(DISTINCT …)` of different expressions cost DataFusion a hash set each per group:
--   the split takes 0.8–0.9 of the build's time (BENCHMARKS.md, issue 5, nineteenth session).
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
),
counted AS (
  SELECT world, os, store, is_new, is_paying,
    grouping(world) AS by_world, grouping(os) AS by_os, grouping(store) AS by_store,
    count(DISTINCT account) AS accounts
  FROM flagged
  GROUP BY GROUPING SETS ((is_new, is_paying), (world, is_new, is_paying),
    (os, is_new, is_paying), (store, is_new, is_paying))
  -- The total is a row also on a day without events (zeros).
  UNION ALL
  SELECT CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), false, false,
    1, 1, 1, CAST(0 AS BIGINT)
)
SELECT :date AS event_date,
  CASE WHEN by_world = 0 THEN 'world' WHEN by_os = 0 THEN 'os'
       WHEN by_store = 0 THEN 'store' ELSE 'total' END AS dimension,
  CASE WHEN by_world = 0 THEN world WHEN by_os = 0 THEN os
       WHEN by_store = 0 THEN store ELSE 'all' END AS value,
  sum(accounts) AS dau,
  coalesce(sum(CASE WHEN is_new THEN accounts END), 0) AS nru,
  coalesce(sum(CASE WHEN is_paying THEN accounts END), 0) AS pu
FROM counted
GROUP BY by_world, by_os, by_store, world, os, store
