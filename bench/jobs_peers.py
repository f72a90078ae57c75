"""The peers of bench/jobs.sh: DuckDB and Spark local[2] run the SQL gamelake's jobs run, over
the same silver Parquet files, and their rows are compared with gamelake's gold tables.

usage: jobs_peers.py DATA_DIR VIEWS_SQL ORDER_TSV GAMELAKE_TSV EVENTS MACHINE

`PEERS=duckdb` leaves Spark out (its ccu takes about an hour on 10 M events).
"""

import datetime
import math
import os
import re
import sys
import time

import duckdb

from peers_sql import duckdb_dialect, duckdb_session, live_files, silver_live_files, spark_dialect

data, views_sql, order_tsv, gamelake_tsv, events, machine = sys.argv[1:7]
order = [line.rstrip("\n").split("\t") for line in open(order_tsv) if line.strip()]
jobs = []
for job, _, _ in order:
    if job not in jobs:
        jobs.append(job)
gamelake_s, builds_s = {}, {}
for line in open(gamelake_tsv):
    job, secs, builds = line.split("\t")
    gamelake_s[job], builds_s[job] = float(secs), float(builds)
views = [v.strip() for v in open(views_sql).read().split(";\n") if v.strip()]


def norm(rows):
    """Rows as comparable tuples: floats rounded, dates and times as text, sorted."""
    out = []
    for r in rows:
        cells = []
        for v in r:
            if isinstance(v, float):
                v = None if math.isnan(v) else round(v, 6)
            elif isinstance(v, (datetime.date, datetime.datetime)):
                v = v.isoformat()[:19]
            elif v is not None and not isinstance(v, (int, str)):
                v = str(v)
            cells.append(v)
        out.append(tuple(cells))
    return sorted(out, key=lambda t: tuple((x is None, str(x)) for x in t))


# gamelake's answers: the files of its gold tables' current Delta snapshots.
ref = duckdb.connect()
ref.execute("SET TimeZone = 'UTC'")


# Each silver table's live files, read from its log once for both peers.
silver_files = silver_live_files(ref, data)
silver = list(silver_files)


def gold_scan(job):
    return f"read_parquet({live_files(ref, f'{data}/gold/{job}')!r}, hive_partitioning = true)"


expected = {}
for job in jobs:
    cols = [c[0] for c in ref.execute(f"DESCRIBE SELECT * FROM {gold_scan(job)}").fetchall()]
    expected[job] = cols


def gold_rows(job, cols):
    sel = ", ".join(f'"{c}"' for c in cols)
    return norm(ref.execute(f"SELECT {sel} FROM {gold_scan(job)}").fetchall())


# DuckDB: silver tables as views over their Parquet files, the kpi views, each partition's SQL.
con = duckdb_session(duckdb, silver_files, views)
# Jobs that read their own earlier days start from an empty table, as gamelake creates one
# from the job's `target_columns`.
SELF_READING = {"first_days": [("account", "VARCHAR"), ("first_date", "DATE")]}
for job, cols in SELF_READING.items():
    if job in jobs:
        con.execute(f"CREATE TABLE gold.\"{job}\" ({', '.join(f'{c} {t}' for c, t in cols)})")
duck_s = {j: 0.0 for j in jobs}
duck_cols = {}
for job, part, path in order:
    sql = duckdb_dialect(open(path).read().strip().rstrip(";"))
    # Timed: the query, its rows materialised in a table (gamelake writes a Delta commit).
    t0 = time.perf_counter()
    con.execute(f"CREATE OR REPLACE TEMP TABLE last_build AS {sql}")
    duck_s[job] += time.perf_counter() - t0
    duck_cols[job] = [c[0] for c in con.execute("DESCRIBE last_build").fetchall()]
    # Kept for jobs that read other jobs (revenue reads gold.dau).
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'gold' AND table_name = ?",
        [job],
    ).fetchone()[0]
    if exists:
        con.execute(f"INSERT INTO gold.\"{job}\" SELECT * FROM last_build")
    else:
        con.execute(f"CREATE TABLE gold.\"{job}\" AS SELECT * FROM last_build")


def same(engine, job, got, want):
    if got == want:
        return True
    want_set, got_set = set(want), set(got)
    extra = [r for r in got if r not in want_set][:3]
    missing = [r for r in want if r not in got_set][:3]
    print(f"{engine} {job}: {len(got)} rows vs gamelake {len(want)}; only {engine}: {extra}; only gamelake: {missing}", file=sys.stderr)
    return False


duck_same = {}
for job in jobs:
    cols = duck_cols[job]
    sel = ", ".join(f'"{c}"' for c in cols)
    got = norm(con.execute(f"SELECT {sel} FROM gold.\"{job}\"").fetchall())
    duck_same[job] = same("DuckDB", job, got, gold_rows(job, cols))
    # Printed now, so that a Spark run cut short still leaves DuckDB's figures.
    print(f"DuckDB {job}: {duck_s[job]:.2f} s, same rows as gamelake: {duck_same[job]}", file=sys.stderr)


def run_spark():
    """Spark local[2]: the same text, `silver.\"x\"` read as `silver__x`."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.memory", "8g")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.sql.ansi.doubleQuotedIdentifiers", "true")
        .config("spark.sql.legacy.charVarcharAsString", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")

    def spark_names(sql):
        sql = re.sub(r'\b(silver|kpi|gold)\."([^"]+)"', r"\1__\2", sql)
        return re.sub(r"\b(silver|kpi|gold)\.([A-Za-z_][A-Za-z0-9_]*)", r"\1__\2", sql)

    for t in silver:
        # The files the table's Delta log keeps (compaction leaves replaced ones until vacuum).
        spark.read.option("mergeSchema", "true").option("basePath", f"{data}/silver/{t}").parquet(
            *silver_files[t]
        ).createOrReplaceTempView(f"silver__{t}")
    for v in views:
        spark.sql(spark_names(v.replace("CREATE VIEW", "CREATE TEMPORARY VIEW", 1)))
    # Jobs whose table another job reads (revenue reads gold.dau): their rows become a view.
    upstream = {j for j in jobs if any(f"gold.{j}" in open(p).read() for _, _, p in order)}
    for job, cols in SELF_READING.items():
        if job in jobs:
            empty = ", ".join(f"CAST(NULL AS {'STRING' if t == 'VARCHAR' else t}) AS {c}" for c, t in cols)
            spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW gold__{job} AS SELECT {empty} WHERE false")
    spark_s = {j: 0.0 for j in jobs}
    spark_rows = {j: [] for j in jobs}
    spark_cols = {}
    gold_frames = {}
    for job, part, path in order:
        sql = spark_dialect(spark_names(open(path).read().strip().rstrip(";")))
        t0 = time.perf_counter()
        df = spark.sql(sql)
        rows = df.collect()
        spark_s[job] += time.perf_counter() - t0
        spark_cols[job] = df.columns
        spark_rows[job].extend(tuple(r) for r in rows)
        if rows and job in upstream:
            frame = spark.createDataFrame(rows, df.schema)
            gold_frames[job] = frame if job not in gold_frames else gold_frames[job].unionByName(frame)
            gold_frames[job].cache().createOrReplaceTempView(f"gold__{job}")
    spark_same = {job: same("Spark", job, norm(spark_rows[job]), gold_rows(job, spark_cols[job])) for job in jobs}
    spark.stop()
    return spark_s, spark_same


PEERS = os.environ.get("PEERS", "duckdb,spark").split(",")
if "spark" in PEERS:
    spark_s, spark_same = run_spark()
else:
    spark_s, spark_same = {j: None for j in jobs}, {j: "–" for j in jobs}


def spark_cells(job, g):
    if spark_s[job] is None:
        return "– | –"
    return f"{spark_s[job]:.1f} s | {spark_s[job] / g:.1f}×"


print(
    f"{datetime.date.today()} · {machine} · {int(float(events)):,} events over "
    f"{len(set(p[:10] for _, p, _ in order))} game days · same SQL, same Parquet files"
)
# "builds": the backfill from its first partition's start to its last commit (run log), the
# figure that compares with the peers' queries-only time; "wall" adds process start and the
# loading of every silver table's Delta log.
print("| job | partitions | gamelake wall (jobs backfill) | gamelake builds | DuckDB (queries) | Spark local[2] (queries) | Spark / gamelake wall | gamelake / DuckDB: wall · builds | same rows (DuckDB, Spark) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for job in jobs:
    n = sum(1 for j, _, _ in order if j == job)
    g, b = gamelake_s[job], builds_s[job]
    print(
        f"| {job} | {n} | {g:.2f} s | {b:.2f} s | {duck_s[job]:.2f} s | {spark_cells(job, g)} | "
        f"{g / duck_s[job]:.2f} · {b / duck_s[job]:.2f} | {duck_same[job]}, {spark_same[job]} |"
    )
if "ccu" in gamelake_s and "ccu" not in jobs:
    print(f"| ccu | (gamelake only) | {gamelake_s['ccu']:.2f} s | {builds_s['ccu']:.2f} s | – | – | – | – | – |")
