-- name: ccu
-- description: Concurrent users every 5 minutes: accounts with a session open at each instant of the day.
-- granularity: day
-- depends_on: silver.*
--
-- Definitions: shared/KPI.md. Written down where they leave a choice:
-- - A session opens at a login. If the account's next login or logout after it is a logout,
--   the session is open until that logout. Otherwise (no logout, or a new login first) each
--   event of the account from the login on, of any code (heartbeats and every other event),
--   keeps it open for 10 minutes after the event, and at most until the next login: more than
--   10 minutes after an event with no other event, the account is offline until its next
--   event. A session covers [open, close): online from 10:00 until a logout at 10:30 counts at
--   the instants 10:00 … 10:25. Events without a login before them open no session; a login
--   and a logout at the same instant count as a logout.
-- - A day's build reads no event after the day's end (:end), so that a day does not change
--   with the next day's events: a logout after midnight does not keep a session open on the
--   day before (there the 10-minute rule applies); the next day's build sees it.
-- - A login more than a day before the instant is not looked for: a session open that long
--   without any event has closed anyway, and one with events every 10 minutes is rare.
-- - The instants are :start, :start + 5 min, … before :end (288 on a day of 24 hours); an
--   instant with nobody online has ccu 0. Peak CCU of a day: max(ccu) of its rows.
--
-- How it is computed, for speed (the answer is the one the rules above give):
-- - `sessions`: the logins and logouts of the day and the day before, each login with the
--   account's next login or logout. A session that ends at a logout is one span, login to
--   logout: whatever lies between does not change it.
-- - Other events are read from 10 minutes before :start only: an earlier one keeps nothing open
--   into the day. Of an account's events between two instants (after one, up to and including
--   the next), one is kept (the last): each of them keeps the same two instants open, cut at
--   the next login or logout. A login or logout among them cuts the earlier ones before the
--   first of those instants, and a login keeps open itself what the events after it would.
--   Each event kept is matched with the login or logout at or before it (a running max over
--   the account's events and markers): after a login whose session does not end at a logout,
--   it is a span of 10 minutes, cut at the next login.
-- - The windows run over all accounts in about ten partitions (the account's last character),
--   ordered by account and time, not in one partition per account: DataFusion spends about
--   3 µs on each partition of a window. The next marker is the account's when the next row's
--   account is the same. The running max is over `account, chr(1), time` as text: an earlier
--   account's text sorts lower, so the max is the account's own last marker, and a max that
--   names another account (no marker of its own yet) matches no session (chr(1) sorts below
--   every byte but chr(0) and chr(1), which account names do not hold). The time as text
--   (`CAST(t AS STRING)`) sorts as the time does. (BENCHMARKS.md, issue 5, nineteenth session.)
-- - The instants each span covers are listed as nanoseconds since the epoch (integers), not as
--   timestamps: DataFusion's generate_series over timestamps with an interval step costs about
--   0.9 µs a span, a fifth of the build (BENCHMARKS.md, issue 5, twelfth session).
WITH markers AS (
  SELECT account, CAST(event_time AS TIMESTAMP) AS t,
    max(CASE WHEN kind = 'login' THEN 1 ELSE 0 END) AS is_login,
    max(CASE WHEN kind = 'logout' THEN 1 ELSE 0 END) AS is_logout
  FROM kpi.sessions
  WHERE event_date BETWEEN CAST(:date - INTERVAL '1 day' AS DATE) AND :date
    AND event_time >= :start - INTERVAL '1 day' AND event_time < :end
    AND kind IN ('login', 'logout') AND account IS NOT NULL
  GROUP BY account, CAST(event_time AS TIMESTAMP)
),
sessions AS (
  SELECT account, s, CASE WHEN n_account = account THEN n_t END AS n,
    coalesce(n_account = account AND n_is_logout = 1, false) AS to_logout
  FROM (
    SELECT account, t AS s, is_login, is_logout,
      lead(account) OVER w AS n_account, lead(t) OVER w AS n_t,
      lead(is_logout) OVER w AS n_is_logout
    FROM markers
    WINDOW w AS (PARTITION BY right(account, 1) ORDER BY account, t)
  ) m
  WHERE is_login = 1 AND is_logout = 0
),
events AS (
  SELECT account, max(CAST(event_time AS TIMESTAMP)) AS t
  FROM kpi.activity
  WHERE event_date BETWEEN CAST(:date - INTERVAL '1 day' AS DATE) AND :date
    AND event_time >= :start - INTERVAL '10 minutes' AND event_time < :end
  GROUP BY account, (CAST(CAST(event_time AS TIMESTAMP) AS BIGINT)
    - CAST(CAST(:start AS TIMESTAMP) AS BIGINT) + 899999999999) / 300000000000
),
stream AS (
  SELECT account, t, CAST(NULL AS STRING) AS marker, 1 AS o FROM events
  UNION ALL
  SELECT account, t, concat(account, chr(1), CAST(t AS STRING)) AS marker, 0 AS o FROM markers
),
tagged AS (
  SELECT account, t, o,
    max(marker) OVER (PARTITION BY right(account, 1) ORDER BY account, t, o
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS last_marker
  FROM stream
),
spans AS (
  SELECT g.account, g.t AS s,
    CASE WHEN ss.to_logout THEN ss.n
      ELSE least(coalesce(ss.n, g.t + INTERVAL '10 minutes'), g.t + INTERVAL '10 minutes') END AS e
  FROM tagged g JOIN sessions ss
    ON g.account = ss.account AND g.last_marker = concat(ss.account, chr(1), CAST(ss.s AS STRING))
  WHERE CASE WHEN ss.to_logout THEN g.o = 0 ELSE g.t >= :start - INTERVAL '10 minutes' END
),
firsts AS (
  SELECT account, e,
    CASE WHEN date_bin(INTERVAL '5 minutes', s, :start) = s THEN s
         ELSE date_bin(INTERVAL '5 minutes', s, :start) + INTERVAL '5 minutes' END AS t1
  FROM spans
),
covered AS (
  SELECT account,
    unnest(generate_series(CAST(t1 AS BIGINT), CAST(e AS BIGINT) - 1000, 300000000000)) AS t
  FROM firsts WHERE t1 < e
),
instants AS (
  SELECT unnest(generate_series(CAST(CAST(:start AS TIMESTAMP) AS BIGINT),
    CAST(CAST(:end AS TIMESTAMP) AS BIGINT) - 300000000000, 300000000000)) AS t
)
SELECT :date AS event_date,
  arrow_cast(arrow_cast(i.t, 'Timestamp(Nanosecond, None)'), 'Timestamp(Microsecond, Some("UTC"))') AS instant,
  count(DISTINCT c.account) AS ccu
FROM instants i
LEFT JOIN covered c ON c.t = i.t
GROUP BY i.t
