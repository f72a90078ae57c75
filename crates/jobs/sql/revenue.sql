-- name: revenue
-- description: Revenue by day (KRW) with payments, paying accounts (PU), ARPPU and ARPDAU.
-- granularity: day
-- depends_on: dau, silver.*
--
-- Definitions: shared/KPI.md. Written down where they leave a choice:
-- - A day without payments has revenue 0 (not NULL); ARPPU and ARPDAU are NULL when their
--   denominator is 0.
-- - DAU is the total row of gold.dau, so both tables agree; this job runs after `dau`.
WITH pay AS (
  SELECT coalesce(sum(amount), 0) AS revenue,
         count(*) AS payments,
         count(DISTINCT account) AS pu
  FROM kpi.payments
  WHERE event_date = :date
),
d AS (
  SELECT dau FROM gold.dau WHERE event_date = :date AND dimension = 'total'
)
SELECT :date AS event_date,
       pay.revenue,
       pay.payments,
       pay.pu,
       coalesce(d.dau, 0) AS dau,
       CASE WHEN pay.pu > 0 THEN pay.revenue / pay.pu END AS arppu,
       CASE WHEN d.dau > 0 THEN pay.revenue / d.dau END AS arpdau
FROM pay LEFT JOIN d ON true
