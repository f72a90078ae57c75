-- name: ccu
-- description: Concurrent users every 5 minutes: accounts with a session open at each instant of the day.
-- granularity: day
-- depends_on: silver.*
--
-- Definitions: shared/KPI.md. Written down where they leave a choice:
-- - At instant t an account is online when its latest login at or before t is later than its
--   latest logout at or before t, and its latest event of any code at or before t is less than
--   10 minutes old (a session without logout closes 10 minutes after the last event;
--   heartbeats and every other event keep it open).
-- - A login more than a day before the instant is not looked for: a session open that long
--   without any event has closed anyway, and one with events every 10 minutes is rare.
-- - The instants are :start, :start + 5 min, … before :end (288 on a day of 24 hours); an
--   instant with nobody online has ccu 0. Peak CCU of a day: max(ccu) of its rows.
WITH ev AS (
  SELECT account, 'event' AS kind, event_time FROM kpi.activity
  WHERE event_date BETWEEN CAST(:date - INTERVAL '1 day' AS DATE) AND :date
    AND event_time >= :start - INTERVAL '1 day' AND event_time < :end
  UNION ALL
  SELECT account, kind, event_time FROM kpi.sessions
  WHERE event_date BETWEEN CAST(:date - INTERVAL '1 day' AS DATE) AND :date
    AND event_time >= :start - INTERVAL '1 day' AND event_time < :end
    AND kind IN ('login', 'logout')
),
state AS (
  SELECT account, event_time,
    max(CASE WHEN kind = 'login' THEN event_time END)
      OVER (PARTITION BY account ORDER BY event_time) AS last_login,
    max(CASE WHEN kind = 'logout' THEN event_time END)
      OVER (PARTITION BY account ORDER BY event_time) AS last_logout
  FROM ev
),
points AS (
  SELECT DISTINCT account, event_time,
    last_login IS NOT NULL AND (last_logout IS NULL OR last_login > last_logout) AS online
  FROM state
),
spans AS (
  SELECT account, event_time AS s,
    least(
      coalesce(lead(event_time) OVER (PARTITION BY account ORDER BY event_time),
               event_time + INTERVAL '10 minutes'),
      event_time + INTERVAL '10 minutes') AS e,
    online
  FROM points
),
firsts AS (
  SELECT account, e,
    CASE WHEN date_bin(INTERVAL '5 minutes', s, :start) = s THEN s
         ELSE date_bin(INTERVAL '5 minutes', s, :start) + INTERVAL '5 minutes' END AS t1
  FROM spans WHERE online
),
covered AS (
  SELECT account, t1 AS t FROM firsts WHERE t1 < e
  UNION ALL
  SELECT account, t1 + INTERVAL '5 minutes' AS t FROM firsts WHERE t1 + INTERVAL '5 minutes' < e
),
instants AS (
  SELECT unnest(generate_series(:start, :end - INTERVAL '5 minutes', INTERVAL '5 minutes')) AS t
)
SELECT :date AS event_date,
  CAST(i.t AS TIMESTAMP) AS instant,
  count(DISTINCT c.account) AS ccu
FROM instants i
LEFT JOIN covered c
  ON CAST(c.t AS TIMESTAMP) = CAST(i.t AS TIMESTAMP) AND c.t >= :start AND c.t < :end
GROUP BY i.t
