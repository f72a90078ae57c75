-- name: ccu
-- description: Concurrent users every 5 minutes: accounts with a session open at each instant of the day.
-- granularity: day
-- depends_on: silver.*
--
-- Definitions: shared/KPI.md. Written down where they leave a choice:
-- - A session opens at a login. If the account's next login or logout after it is a logout,
--   the session is open until that logout. Otherwise (no logout, or a new login first) it
--   closes 10 minutes after the account's last event before that, events of any code
--   counting (heartbeats and every other event keep it open). A session covers [open, close):
--   online from 10:00 until a logout at 10:30 counts at the instants 10:00 … 10:25. Events
--   without a login before them open no session.
-- - A day's build reads no event after the day's end (:end), so that a day does not change
--   with the next day's events: a logout after midnight does not keep a session open on the
--   day before (there the 10-minute rule applies); the next day's build sees it.
-- - A login more than a day before the instant is not looked for: a session open that long
--   without any event has closed anyway, and one with events every 10 minutes is rare.
-- - Before :start, only logins, logouts and the events of the last 10 minutes are read: an
--   earlier event that is not a login or logout changes no instant of the day (it keeps a
--   session open for at most 10 minutes, and a session that ends at a logout is open from its
--   login to the logout whatever lies between). The answer is the same as with every event of
--   the day before, for about half the rows.
-- - The instants are :start, :start + 5 min, … before :end (288 on a day of 24 hours); an
--   instant with nobody online has ccu 0. Peak CCU of a day: max(ccu) of its rows.
WITH ev AS (
  SELECT account, 'event' AS kind, CAST(event_time AS TIMESTAMP) AS t FROM kpi.activity
  WHERE event_date BETWEEN CAST(:date - INTERVAL '1 day' AS DATE) AND :date
    AND event_time >= :start - INTERVAL '10 minutes' AND event_time < :end
  UNION ALL
  SELECT account, kind, CAST(event_time AS TIMESTAMP) AS t FROM kpi.sessions
  WHERE event_date BETWEEN CAST(:date - INTERVAL '1 day' AS DATE) AND :date
    AND event_time >= :start - INTERVAL '1 day' AND event_time < :end
    AND kind IN ('login', 'logout')
),
points AS (
  SELECT account, t,
    max(CASE WHEN kind = 'login' THEN 1 ELSE 0 END) AS is_login,
    max(CASE WHEN kind = 'logout' THEN 1 ELSE 0 END) AS is_logout
  FROM ev GROUP BY account, t
),
state AS (
  SELECT account, t,
    max(CASE WHEN is_login = 1 THEN t END) OVER (PARTITION BY account ORDER BY t
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS last_login,
    max(CASE WHEN is_logout = 1 THEN t END) OVER (PARTITION BY account ORDER BY t
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS last_logout,
    min(CASE WHEN is_login = 1 THEN t END) OVER (PARTITION BY account ORDER BY t
      ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS next_login,
    min(CASE WHEN is_logout = 1 THEN t END) OVER (PARTITION BY account ORDER BY t
      ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS next_logout,
    lead(t) OVER (PARTITION BY account ORDER BY t) AS next_t
  FROM points
),
spans AS (
  SELECT account, t AS s,
    CASE
      WHEN next_logout IS NOT NULL AND (next_login IS NULL OR next_logout <= next_login)
        THEN next_t
      ELSE least(coalesce(next_t, t + INTERVAL '10 minutes'), t + INTERVAL '10 minutes')
    END AS e
  FROM state
  WHERE last_login IS NOT NULL AND (last_logout IS NULL OR last_login > last_logout)
),
firsts AS (
  SELECT account, e,
    CASE WHEN date_bin(INTERVAL '5 minutes', s, :start) = s THEN s
         ELSE date_bin(INTERVAL '5 minutes', s, :start) + INTERVAL '5 minutes' END AS t1
  FROM spans
),
covered AS (
  SELECT account,
    unnest(generate_series(t1, e - INTERVAL '1 microsecond', INTERVAL '5 minutes')) AS t
  FROM firsts WHERE t1 < e
),
instants AS (
  SELECT unnest(generate_series(:start, :end - INTERVAL '5 minutes', INTERVAL '5 minutes')) AS t
)
SELECT :date AS event_date,
  arrow_cast(i.t, 'Timestamp(Microsecond, Some("UTC"))') AS instant,
  count(DISTINCT c.account) AS ccu
FROM instants i
LEFT JOIN covered c ON c.t = i.t
GROUP BY i.t
