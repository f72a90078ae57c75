"""What bench/jobs_peers.py and bench/jobs_paired.py share: the peers' spellings of gamelake's SQL,
the data files a Delta table's latest version holds, and a DuckDB session over them."""

import glob
import json
import os
import re
import urllib.parse

# ccu's DataFusion spellings, in each peer's words (same meaning):
# date_bin(step, t, origin) → DuckDB time_bucket(step, t, origin); Spark: microseconds from
# the origin, floored to the step. CAST(t AS BIGINT) of a timestamp (nanoseconds) → DuckDB
# epoch_ns(t); Spark unix_micros(t) * 1000. unnest(generate_series(a, b, step)) → Spark
# explode(sequence(a, b, step)). arrow_cast(t, 'Timestamp(…UTC…)') → a time zone type.
DATE_BIN = re.compile(r"date_bin\(INTERVAL '5 minutes', (\w+), (TIMESTAMP '[^']+')\)")
# A timestamp as nanoseconds since the epoch: `CAST(t AS BIGINT)` of a column, or of a literal
# cast to TIMESTAMP (DuckDB epoch_ns; Spark unix_micros × 1000, its CAST gives seconds).
EPOCH_NS = re.compile(
    r"CAST\((t1|e|CAST\(TIMESTAMP '[^']+' AS TIMESTAMP\)|CAST\(event_time AS TIMESTAMP\)) AS BIGINT\)"
)
# Division of whole nanoseconds into 5-minute steps: integer division in DataFusion; DuckDB
# spells it `//`, Spark `div` (their `/` divides as floating point).
# (Not the decimal `/ 300000000.0` that spark_dialect writes for date_bin: it stays a division.)
INT_DIV = re.compile(r"\) / (\d{9,})(?![\d.])")
# Nanoseconds since the epoch back to a UTC timestamp.
FROM_NS = re.compile(r"arrow_cast\(arrow_cast\(([\w.]+), 'Timestamp\(Nanosecond, None\)'\), '[^']*'\)")


def duckdb_dialect(sql):
    sql = DATE_BIN.sub(r"time_bucket(INTERVAL '5 minutes', \1, \2)", sql)
    sql = EPOCH_NS.sub(r"epoch_ns(\1)", sql)
    sql = INT_DIV.sub(r") // \1", sql)
    sql = FROM_NS.sub(r"CAST(make_timestamp(\1 // 1000) AS TIMESTAMPTZ)", sql)
    return re.sub(r"arrow_cast\(([\w.]+), '[^']*'\)", r"CAST(\1 AS TIMESTAMPTZ)", sql)


def spark_dialect(sql):
    sql = DATE_BIN.sub(
        r"timestamp_micros(unix_micros(\2) + CAST(floor((unix_micros(\1) - unix_micros(\2)) / 300000000.0) AS BIGINT) * 300000000)",
        sql,
    )
    sql = EPOCH_NS.sub(r"(unix_micros(\1) * 1000)", sql)
    sql = INT_DIV.sub(r") div \1", sql)
    sql = FROM_NS.sub(r"timestamp_micros(\1 div 1000)", sql)
    sql = sql.replace("unnest(generate_series(", "explode(sequence(")
    return re.sub(r"arrow_cast\(([\w.]+), '[^']*'\)", r"\1", sql)


def live_files(con, table):
    """The data files a Delta table's latest version holds: its last checkpoint, then the
    add and remove actions of the commits after it."""
    log = f"{table}/_delta_log"
    files, first = set(), 0
    if os.path.exists(f"{log}/_last_checkpoint"):
        version = json.load(open(f"{log}/_last_checkpoint"))["version"]
        parts = sorted(glob.glob(f"{log}/{version:020d}.checkpoint*.parquet"))
        files |= {r[0] for r in con.execute(
            "SELECT add.path FROM read_parquet(?) WHERE add IS NOT NULL", [parts]
        ).fetchall()}
        first = version + 1
    for commit in sorted(glob.glob(f"{log}/*.json")):
        if int(os.path.basename(commit).split(".")[0]) < first:
            continue
        for line in open(commit):
            action = json.loads(line)
            if "add" in action:
                files.add(action["add"]["path"])
            elif "remove" in action:
                files.discard(action["remove"]["path"])
    return [f"{table}/{urllib.parse.unquote(p)}" for p in sorted(files)]


def silver_live_files(con, data):
    """Each silver table of the data dir, with the files its latest version holds."""
    logs = sorted(glob.glob(f"{data}/silver/*/_delta_log"))
    tables = [os.path.basename(os.path.dirname(log)) for log in logs]
    return {t: live_files(con, f"{data}/silver/{t}") for t in tables}


def duckdb_session(duckdb, silver, views):
    """DuckDB on two threads with gamelake's schemas: each silver table a view over its files
    (`silver`, from silver_live_files), then the `kpi` views (their CREATE VIEW statements)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET threads = 2")
    for s in ("silver", "kpi", "gold"):
        con.execute(f"CREATE SCHEMA {s}")
    for t, files in silver.items():
        con.execute(
            f"CREATE VIEW silver.\"{t}\" AS SELECT * FROM read_parquet({files!r}, "
            "hive_partitioning = true, union_by_name = true)"
        )
    for v in views:
        con.execute(v)
    return con
