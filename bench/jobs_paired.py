"""gamelake's builds and DuckDB's queries of the same jobs, in alternating rounds on one kept data
dir: for each round and job, `gamelake jobs backfill JOB --from FROM --to TO`, then DuckDB runs the
same per-partition SQL over the same silver Parquet files. The machines are shared and noisy, and
a single pass of bench/jobs.sh times all of gamelake's builds first and all of DuckDB's queries
after: rounds side by side give medians and ratios measured in the same minutes.

usage: jobs_paired.py DATA_DIR GAMELAKE_BIN ROUNDS FROM TO JOB...

(bench/jobs.sh with `PAIRED=ROUNDS` runs it on the data dir it ingested.) Tables of other jobs
that a job reads (gold.first_days for dau) are given to DuckDB as gamelake built them; a job that
reads its own table (first_days) starts DuckDB's from empty, as gamelake's backfill does from its
earlier days. gamelake's "builds" is the backfill from its first partition's start to its last
commit (its run log), the figure that compares with DuckDB's queries; "wall" adds process start
and loading the tables' Delta logs. Rows are compared by jobs.sh's full run, not here.
"""

import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import duckdb

from peers_sql import duckdb_dialect, duckdb_session, live_files, silver_live_files

data, gamelake, rounds, first, last = sys.argv[1:6]
jobs = sys.argv[6:]
rounds = int(rounds)

views = subprocess.run([gamelake, "jobs", "views", "--data-dir", data], capture_output=True, text=True, check=True).stdout
con = duckdb_session(duckdb, silver_live_files(duckdb.connect(), data), [v.strip() for v in views.split(";\n") if v.strip()])

def sql(job, part, check=True):
    out = subprocess.run([gamelake, "jobs", "sql", job, "--date", part, "--data-dir", data],
                         capture_output=True, text=True, check=check)
    return out.stdout if out.returncode == 0 else None


days = []
d = datetime.date.fromisoformat(first)
while d <= datetime.date.fromisoformat(last):
    days.append(d.isoformat())
    d += datetime.timedelta(days=1)
queries = {}
for job in jobs:
    # An hourly job's partitions are named `DATE'T'HH` (`jobs sql` refuses a day for it).
    hourly = sql(job, days[0], check=False) is None
    parts = [f"{d}T{h:02d}" for d in days for h in range(24)] if hourly else days
    queries[job] = [duckdb_dialect(sql(job, p).strip().rstrip(";")) for p in parts]


def gold_from_gamelake(job):
    """DuckDB's gold.JOB: the rows gamelake's gold table holds now."""
    files = live_files(con, f"{data}/gold/{job}")
    con.execute(f"CREATE OR REPLACE TABLE gold.\"{job}\" AS SELECT * FROM read_parquet({files!r}, hive_partitioning = true)")


def stamp(s):
    return datetime.datetime.fromisoformat(s[:26].rstrip("Z") + "+00:00").timestamp()


results = {}
for r in range(rounds):
    for job in jobs:
        t0 = time.time()
        subprocess.run([gamelake, "jobs", "backfill", job, "--from", first, "--to", last, "--data-dir", data],
                       capture_output=True, check=True)
        wall = time.time() - t0
        runs = [x for x in map(json.loads, open(f"{data}/_jobs/job_runs.jsonl"))
                if x["job"] == job and x["trigger"] == "backfill" and x["ended"] and stamp(x["started"]) >= t0]
        builds = max(stamp(x["ended"]) for x in runs) - min(stamp(x["started"]) for x in runs)
        # The other jobs' tables this one reads, as gamelake has them; its own from empty.
        for other in sorted(os.listdir(f"{data}/gold")):
            if other != job and f"gold.{other}" in " ".join(queries[job]):
                gold_from_gamelake(other)
        own = f"gold.{job}" in " ".join(queries[job])
        if own:
            gold_from_gamelake(job)
            con.execute(f"DELETE FROM gold.\"{job}\"")
        duck = 0.0
        for q in queries[job]:
            t1 = time.perf_counter()
            con.execute(f"CREATE OR REPLACE TEMP TABLE last_build AS {q}")
            duck += time.perf_counter() - t1
            if own:
                con.execute(f"INSERT INTO gold.\"{job}\" SELECT * FROM last_build")
        results.setdefault(job, []).append((wall, builds, duck))
        print(f"round {r + 1} {job}: gamelake wall {wall:.2f} s, builds {builds:.2f} s; DuckDB {duck:.2f} s",
              file=sys.stderr, flush=True)

print(f"{rounds} rounds, medians; the ratios are medians of each round's ratio")
print("| job | partitions | gamelake wall | gamelake builds | DuckDB | gamelake / DuckDB: wall · builds |")
print("| --- | --- | --- | --- | --- | --- |")
for job, rs in results.items():
    med = lambda i: statistics.median(x[i] for x in rs)
    ratio = lambda i: statistics.median(x[i] / x[2] for x in rs)
    print(f"| {job} | {len(queries[job])} | {med(0):.2f} s | {med(1):.2f} s | {med(2):.2f} s | "
          f"{ratio(0):.2f} · {ratio(1):.2f} |")
