#!/usr/bin/env bash
# Dashboard queries while ingest runs: gamelake beside DuckDB on the same Delta tables.
#
#   bench/queries.sh [EVENTS_K] [INGEST_RATE] [RUNS]
#
# Loads EVENTS_K thousand NDJSON events (default 10 000, i.e. 10 M) with loadgen, then keeps ingesting at
# INGEST_RATE events/s (default 130 000, ~70 % of the max of bench/find-max.sh) while
# bench/queries.py times each query RUNS times (default 5) on gamelake (HTTP, JSON answer) and
# on DuckDB 1.5.5 with its Delta extension (in-process) over the same tables; then stops
# ingest, lets the last commits land and checks both engines give the same answers.
# Needs the CI venv (`GAMELAKE_TEST_PYTHON`, default ~/.cache/gamelake-ci-venv/bin/python).
source "$(dirname "$0")/lib.sh"
EVENTS_K=${1:-10000}
RATE=${2:-130000}
RUNS=${3:-5}
PY=${GAMELAKE_TEST_PYTHON:-$HOME/.cache/gamelake-ci-venv/bin/python}
# DuckDB hands time-zoned timestamps to Python through pytz.
"$PY" -c "import pytz" 2>/dev/null || "$PY" -m pip install --quiet --disable-pip-version-check pytz==2025.2
PORT=$(free_port)
# Jobs and maintenance off: the figure is queries beside ingest alone.
GAMELAKE_JOBS__ENABLED=false GAMELAKE_MAINTENANCE__ENABLED=false start_gamelake "$PORT"
LOAD=(--target "http://127.0.0.1:$PORT" --format ndjson --batch 2000 --concurrency 16 --pregenerate 64)
"$BIN" loadgen "${LOAD[@]}" --rate 170000 --duration "$(((EVENTS_K * 1000 + 169999) / 170000))s" \
  --report "$DIR/load.json" >/dev/null 2>&1
wait_committed "$PORT" "$(json "$DIR/load.json" "r['acked_events']")"
"$BIN" loadgen "${LOAD[@]}" --rate "$RATE" --duration 600s --seed 2 --report "$DIR/during.json" >/dev/null 2>&1 &
INGEST=$!
PIDS+=("$INGEST")
sleep 5
"$PY" bench/queries.py "http://127.0.0.1:$PORT" "$DIR/data" "$RUNS" >"$DIR/during.out"
kill "$INGEST" 2>/dev/null || true; wait "$INGEST" 2>/dev/null || true
sleep 3
"$PY" bench/queries.py "http://127.0.0.1:$PORT" "$DIR/data" 1 --check >"$DIR/check.out" || echo "ANSWERS DIFFER" >&2
ROWS=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^gamelake_table_rows_committed_total\{table="bronze.raw_logs"\}/ {print $2}')
python3 - "$DIR/during.out" "$DIR/check.out" "$ROWS" "$(machine)" "$RATE" <<'PY'
import json, sys, datetime
during, check = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"{datetime.date.today()} · {sys.argv[4]} · {int(float(sys.argv[3])):,} events in the tables · ingest at {sys.argv[5]}/s during the timed runs")
print("| query | gamelake median (HTTP, JSON) | DuckDB median (in-process) | ratio | rows | same answer |")
print("| --- | --- | --- | --- | --- | --- |")
for q, v in during.items():
    g, d = v["gamelake_median_ms"], v["duckdb_median_ms"]
    print(f"| {q} | {g:.0f} ms | {d:.0f} ms | {g / d:.2f} | {v['rows']} | {check[q]['same_answer']} |")
PY
