-- name: item_economy
-- description: Item economy by hour: per item, grade and reason, acquire and consume events and the sum of their counts.
-- granularity: hour
-- depends_on: silver.*
--
-- Definitions: shared/KPI.md; how an `item` event is told to be an acquire or a consume is
-- written down in the `kpi.items` view (`gamelake jobs views`). Hours are hours of the game's
-- time zone; `event_hour` is 0 to 23.
SELECT :date AS event_date,
  :hour AS event_hour,
  item_id,
  item_grade,
  reason,
  sum(CASE WHEN kind = 'acquire' THEN 1 ELSE 0 END) AS acquire_events,
  sum(CASE WHEN kind = 'acquire' THEN "count" ELSE 0 END) AS acquire_count,
  sum(CASE WHEN kind = 'consume' THEN 1 ELSE 0 END) AS consume_events,
  sum(CASE WHEN kind = 'consume' THEN "count" ELSE 0 END) AS consume_count
FROM kpi.items
WHERE event_date = :date AND event_time >= :start AND event_time < :end
GROUP BY item_id, item_grade, reason
