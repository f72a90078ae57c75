-- name: retention
-- description: D1, D7 and D30 retention of each cohort (the accounts whose first day is the cohort date).
-- granularity: day
-- partition_column: cohort_date
-- depends_on: silver.*, first_days
-- rebuild_back: 1, 7, 30
--
-- Definitions: shared/KPI.md. Written down where they leave a choice:
-- - Day d0 + n counts only when it is over: while it is today or later (in the job's time
--   zone) its retained count and rate are NULL, since they could still grow.
-- - A build of day D also rebuilds cohorts D-1, D-7 and D-30 (`rebuild_back`), whose D1, D7
--   and D30 day D is.
-- - `dN_rate` is retained / cohort size; NULL for an empty cohort.
-- - The cohort is the day's partition of `gold.first_days` (job `first_days`).
WITH cohort AS (
  SELECT account FROM gold.first_days WHERE first_date = :date
),
returned AS (
  SELECT DISTINCT account, event_date FROM kpi.activity
  WHERE event_date IN (
    CAST(:date + INTERVAL '1 day' AS DATE),
    CAST(:date + INTERVAL '7 days' AS DATE),
    CAST(:date + INTERVAL '30 days' AS DATE))
),
counts AS (
  SELECT
    count(DISTINCT c.account) AS cohort_size,
    count(DISTINCT CASE WHEN r.event_date = CAST(:date + INTERVAL '1 day' AS DATE) THEN c.account END) AS d1,
    count(DISTINCT CASE WHEN r.event_date = CAST(:date + INTERVAL '7 days' AS DATE) THEN c.account END) AS d7,
    count(DISTINCT CASE WHEN r.event_date = CAST(:date + INTERVAL '30 days' AS DATE) THEN c.account END) AS d30
  FROM cohort c LEFT JOIN returned r ON c.account = r.account
)
SELECT :date AS cohort_date,
  cohort_size,
  CASE WHEN CAST(:date + INTERVAL '1 day' AS DATE) < :today THEN d1 END AS d1_retained,
  CASE WHEN CAST(:date + INTERVAL '1 day' AS DATE) < :today AND cohort_size > 0
       THEN CAST(d1 AS DOUBLE) / cohort_size END AS d1_rate,
  CASE WHEN CAST(:date + INTERVAL '7 days' AS DATE) < :today THEN d7 END AS d7_retained,
  CASE WHEN CAST(:date + INTERVAL '7 days' AS DATE) < :today AND cohort_size > 0
       THEN CAST(d7 AS DOUBLE) / cohort_size END AS d7_rate,
  CASE WHEN CAST(:date + INTERVAL '30 days' AS DATE) < :today THEN d30 END AS d30_retained,
  CASE WHEN CAST(:date + INTERVAL '30 days' AS DATE) < :today AND cohort_size > 0
       THEN CAST(d30 AS DOUBLE) / cohort_size END AS d30_rate
FROM counts
