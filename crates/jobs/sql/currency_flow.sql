-- name: currency_flow
-- description: Currency flow by day: per currency and reason, the sum of gains (sources), of losses (sinks) and the net.
-- granularity: day
-- depends_on: silver.*
--
-- Definitions: shared/KPI.md. Written down where they leave a choice: `sink` keeps the sign
-- (a negative number), so `source + sink = net`.
SELECT :date AS event_date,
  currency,
  reason,
  sum(CASE WHEN delta > 0 THEN delta ELSE 0 END) AS source,
  sum(CASE WHEN delta < 0 THEN delta ELSE 0 END) AS sink,
  sum(delta) AS net,
  count(*) AS events
FROM kpi.currency
WHERE event_date = :date
GROUP BY currency, reason
