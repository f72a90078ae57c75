CREATE TABLE IF NOT EXISTS events (
  ts String, code String, log_id String, server String,
  account_id Int64, char_id Int64, char_level Int64, os String, market String,
  map_id Int64, monster_id Int64, skill_id Int64, damage Float64, crit UInt8, party_size Int64,
  item_id Int64, item_name String, item_grade String, count Int64, reason String,
  currency String, delta Int64, balance Int64,
  quest_id Int64, state String, exp Int64, action String, target String,
  session_id String, client_ver String, char_name String,
  round_id Int64, result String, duration_s Int64,
  product_id String, price_krw Int64, store String, order_id String
) ENGINE = MergeTree ORDER BY (code, ts)
