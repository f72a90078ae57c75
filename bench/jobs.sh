#!/usr/bin/env bash
# The shipped gold jobs over EVENTS events spread over DAYS days: gamelake beside DuckDB and
# Spark local[2] running the same SQL over the same Parquet files, answers compared.
#
#   bench/jobs.sh [EVENTS] [DAYS]        (default 10 000 000 events over 7 days)
#   JOBS="dau revenue" PEERS=duckdb bench/jobs.sh   (some jobs, with their upstream ones; no Spark)
#   COMPACT=1 bench/jobs.sh    (tables compacted and checkpointed first, as maintenance keeps them)
#   PAIRED=5 COMPACT=1 bench/jobs.sh   (gamelake and DuckDB side by side, 5 rounds; jobs_paired.py)
#
# 1. `gamelake loadgen --dry-run --spread DAYSd` writes the events (mixed kv / NDJSON / bare
#    lines, 200 000 accounts); `gamelake serve` ingests them; the server stops.
# 2. gamelake: `gamelake jobs backfill JOB --from D1 --to Dn` for each job (wall time of the
#    command: process start, planning, the KPI views, the Delta commits).
# 3. DuckDB 1.5.5 and Spark local[2] (pyspark, Java 17): the same `kpi.*` views
#    (`gamelake jobs views`) and the same per-partition SQL (`gamelake jobs sql`) over the same
#    silver Parquet files; time of the queries only (engine start and file listing excluded).
#    Spark reads `silver."x"` as `silver__x` (its catalog has no schemas for temporary views)
#    and double-quoted identifiers in ANSI mode; otherwise the text is unchanged.
# 4. Every engine's rows are compared with gamelake's gold tables.
# `ccu` uses DataFusion spellings (date_bin, arrow_cast, CAST(timestamp AS BIGINT), `/` of integers,
# generate_series) that jobs_peers.py rewrites into each peer's spelling (time_bucket, epoch_ns, `//`;
# unix_micros, `div`, sequence/explode), nothing else.
source "$(dirname "$0")/lib.sh"
EVENTS=${1:-10000000}
DAYS=${2:-7}
VENV=${BENCH_VENV:-$HOME/.cache/gamelake-bench-venv}
if ! "$VENV/bin/python" -c "import duckdb, pyspark, pytz" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check duckdb==1.5.5 pyspark==4.0.1 pytz==2025.2
fi
PY="$VENV/bin/python"

"$BIN" loadgen --dry-run --out "$DIR/events.log" --rate "$EVENTS" --duration 1s \
  --spread "${DAYS}d" --accounts 200000 --format mixed >/dev/null 2>&1
PORT=$(free_port)
# The built-in scheduler stays off: the builds below are the measured ones.
GAMELAKE_JOBS__ENABLED=false GAMELAKE_MAINTENANCE__ENABLED=false start_gamelake "$PORT"
# 16 MB bodies, cut at line ends.
split -C 16m "$DIR/events.log" "$DIR/part-"
for f in "$DIR"/part-*; do
  curl -sf --data-binary @"$f" "http://127.0.0.1:$PORT/v1/logs" >/dev/null
done
ACCEPTED=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^gamelake_ingest_lines_total/ {s+=$2} END {print s}')
wait_committed "$PORT" "$EVENTS"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
rm -f "$DIR"/part-* "$DIR/events.log"
# `COMPACT=1`: compact and checkpoint the tables first, as the server's hourly maintenance
# does (the peers then read the same compacted files).
if [[ -n "${COMPACT:-}" ]]; then "$BIN" tables compact --data-dir "$DIR/data" >/dev/null 2>&1; fi
# `KEEP=1 INGEST_ONLY=1`: stop here, keeping the data dir (e.g. to time builds by hand on it).
[[ -n "${INGEST_ONLY:-}" ]] && { echo "ingested into $DIR/data" >&2; exit 0; }

# The game days the events cover (Asia/Seoul), oldest first; the first and last are partial.
FROM=$(TZ=Asia/Seoul date -d "-$DAYS days" +%F)
TO=$(TZ=Asia/Seoul date +%F)
CFG=(--data-dir "$DIR/data")
# `JOBS="first_days dau revenue"` measures some of the jobs (with their upstream jobs).
read -r -a JOBS <<<"${JOBS:-first_days dau revenue retention currency_flow item_economy ccu}"
# `PAIRED=N`: N rounds of gamelake's backfill then DuckDB's queries, job by job (medians and
# ratios from side-by-side runs; no Spark, no comparison of rows): bench/jobs_paired.py.
if [[ -n "${PAIRED:-}" ]]; then
  "$PY" bench/jobs_paired.py "$DIR/data" "$BIN" "$PAIRED" "$FROM" "$TO" "${JOBS[@]}"
  exit
fi
: >"$DIR/gamelake.tsv"
for job in "${JOBS[@]}"; do
  start=$(date +%s.%N)
  "$BIN" jobs backfill "$job" --from "$FROM" --to "$TO" "${CFG[@]}" >/dev/null 2>"$DIR/$job.err" \
    || { echo "gamelake $job failed" >&2; tail "$DIR/$job.err" >&2; exit 1; }
  end=$(date +%s.%N)
  # Also the builds alone: from the first partition's start to the last commit, as the run log
  # records them (without process start and the loading of the silver tables' Delta logs).
  builds=$(python3 - "$DIR/data/_jobs/job_runs.jsonl" "$job" "$start" <<'PY'
import datetime, json, sys
log, job, since = sys.argv[1], sys.argv[2], float(sys.argv[3])
t = lambda s: datetime.datetime.fromisoformat(s[:26].rstrip("Z") + "+00:00").timestamp()
runs = [r for r in map(json.loads, open(log))
        if r["job"] == job and r["trigger"] == "backfill" and r["ended"] and t(r["started"]) >= since]
print(max(t(r["ended"]) for r in runs) - min(t(r["started"]) for r in runs))
PY
  )
  echo -e "$job\t$(python3 -c "print($end - $start)")\t$builds" >>"$DIR/gamelake.tsv"
done

# The SQL the peers run: the views over today's tables, and each partition's query.
"$BIN" jobs views "${CFG[@]}" >"$DIR/views.sql"
mkdir -p "$DIR/sql"
: >"$DIR/sql/order.tsv"
for job in "${JOBS[@]}"; do
  [[ "$job" == item_economy ]] && continue
  d="$FROM"
  while [[ "$d" < "$TO" || "$d" == "$TO" ]]; do
    "$BIN" jobs sql "$job" --date "$d" "${CFG[@]}" >"$DIR/sql/$job-$d.sql"
    echo -e "$job\t$d\t$DIR/sql/$job-$d.sql" >>"$DIR/sql/order.tsv"
    d=$(date -d "$d + 1 day" +%F)
  done
done
d="$FROM"
while [[ " ${JOBS[*]} " == *" item_economy "* ]] && [[ "$d" < "$TO" || "$d" == "$TO" ]]; do
  for h in $(seq -w 0 23); do
    "$BIN" jobs sql item_economy --date "${d}T$h" "${CFG[@]}" >"$DIR/sql/item_economy-${d}T$h.sql"
    echo -e "item_economy\t${d}T$h\t$DIR/sql/item_economy-${d}T$h.sql" >>"$DIR/sql/order.tsv"
  done
  d=$(date -d "$d + 1 day" +%F)
done

"$PY" bench/jobs_peers.py "$DIR/data" "$DIR/views.sql" "$DIR/sql/order.tsv" "$DIR/gamelake.tsv" \
  "$ACCEPTED" "$(machine)" 2>"$DIR/peers.err" || { tail -40 "$DIR/peers.err" >&2; exit 1; }
# Each peer's verdict, and the rows it differs by (Spark's progress bars end lines with \r).
tr '\r' '\n' <"$DIR/peers.err" | grep -aE "^(DuckDB|Spark) " >&2 || true
