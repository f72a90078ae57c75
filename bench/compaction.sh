#!/usr/bin/env bash
# Files and query latency before and after compaction of a day partition made by streaming
# commits.
#
#   bench/compaction.sh [MINUTES] [RATE] [COMMIT_MS] [RUNS]
#
# Ingests RATE events/s (default 20 000, mixed formats) for MINUTES (default 5) with a commit
# every COMMIT_MS (default 100: a file per table every 0.1 s, i.e. the files of 2.4 hours of
# default 1 s commits every 6 minutes), so today's partition of every table holds thousands of
# small files. Then times RUNS (default 7) runs of three typical queries over HTTP, runs
# `gamelake tables compact` (the server stopped, so the figures are not disturbed by ingest),
# starts the server again and times the same queries; answers must be equal.
source "$(dirname "$0")/lib.sh"
MINUTES=${1:-5}
RATE=${2:-20000}
COMMIT_MS=${3:-100}
RUNS=${4:-7}
export GAMELAKE_LAKE__COMMIT_INTERVAL_MS=$COMMIT_MS GAMELAKE_JOBS__ENABLED=false GAMELAKE_MAINTENANCE__ENABLED=false
PORT=$(free_port)
start_gamelake "$PORT"
"$BIN" loadgen --target "http://127.0.0.1:$PORT" --rate "$RATE" --duration "${MINUTES}m" --batch 500 \
  --report "$DIR/load.json" >/dev/null 2>&1
wait_committed "$PORT" "$(json "$DIR/load.json" "r['acked_events']")"
TODAY=$(TZ=Asia/Seoul date +%F)
QUERIES=(
  "SELECT count(*), count(DISTINCT account_id) FROM silver.item_acquire WHERE event_date = DATE '$TODAY'"
  "SELECT server, count(*), round(sum(damage), 1) FROM silver.combat WHERE event_date = DATE '$TODAY' GROUP BY server ORDER BY server"
  "SELECT date_trunc('minute', event_time) AS m, count(*) FROM silver.currency WHERE event_date = DATE '$TODAY' GROUP BY 1 ORDER BY 1"
)
files() {
  curl -s "http://127.0.0.1:$PORT/v1/query" -d '{"sql":"SELECT sum(files), count(*) FROM system.tables"}' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["rows"][0]; print(r[0], r[1])'
}
# time_queries OUT: median ms of each query over RUNS runs, and its answer.
time_queries() {
  python3 - "$PORT" "$RUNS" "$1" "${QUERIES[@]}" <<'PY'
import json, statistics, sys, time, urllib.request
port, runs, out, queries = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
res = []
for q in queries:
    times, answer = [], None
    for _ in range(runs):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/query", data=json.dumps({"sql": q}).encode())
        t0 = time.perf_counter()
        answer = json.load(urllib.request.urlopen(req))["rows"]
        times.append((time.perf_counter() - t0) * 1000)
    res.append({"sql": q, "median_ms": statistics.median(times), "answer": answer})
json.dump(res, open(out, "w"))
PY
}
read -r FILES_BEFORE TABLES < <(files)
time_queries "$DIR/before.json"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
start=$(date +%s.%N)
"$BIN" tables compact --data-dir "$DIR/data" >/dev/null 2>"$DIR/compact.err"
end=$(date +%s.%N)
start_gamelake "$PORT"
read -r FILES_AFTER _ < <(files)
time_queries "$DIR/after.json"
python3 - "$DIR/before.json" "$DIR/after.json" "$FILES_BEFORE" "$FILES_AFTER" "$TABLES" \
  "$(python3 -c "print($end - $start)")" "$(json "$DIR/load.json" "r['acked_events']")" "$(machine)" "$MINUTES" "$COMMIT_MS" <<'PY'
import json, sys, datetime
before, after = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
fb, fa, tables, secs, events, machine, minutes, commit_ms = sys.argv[3:11]
print(f"{datetime.date.today()} · {machine} · {int(float(events)):,} events in {minutes} min, a commit per table every {commit_ms} ms")
print(f"files in {tables} tables: {fb} before, {fa} after `gamelake tables compact` ({float(secs):.1f} s)")
print("| query | median before | median after | after / before | same answer |")
print("| --- | --- | --- | --- | --- |")
for b, a in zip(before, after):
    print(f"| `{b['sql'][:70]}…` | {b['median_ms']:.0f} ms | {a['median_ms']:.0f} ms | {a['median_ms'] / b['median_ms']:.2f} | {a['answer'] == b['answer']} |")
PY
