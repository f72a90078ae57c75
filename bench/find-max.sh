#!/usr/bin/env bash
# Highest sustainable durable ingest rate, then latency and freshness at 70 % of it.
#
#   bench/find-max.sh [START_RATE] [STEP_S] [LOAD_S]
#
# Starts `gamelake serve` on a temp dir, runs `gamelake loadgen --find-max` (rate ×1.25 a step
# until acked < 99 % of offered or p99 > 500 ms, then two halvings of the gap), then a run at
# 70 % of the maximum with `--freshness`, and prints the figures of issue #3: max sustained
# events/s and MB/s, p99 ack latency at 70 %, freshness p50/p99, server RSS peak and CPU,
# loadgen CPU share, bytes on disk per event against the raw input.
source "$(dirname "$0")/lib.sh"
START=${1:-100000}
STEP=${2:-20}
LOAD=${3:-30}
# `CONC=N` requests in flight (default 16); at 400 000/s and more, 16 bodies of 2 000 lines
# leave the client short of requests before the server is.
ARGS=(--batch 2000 --concurrency "${CONC:-16}" --format "${FORMAT:-mixed}" --pregenerate 64)
PORT=$(free_port)
start_gamelake "$PORT"
"$BIN" loadgen --target "http://127.0.0.1:$PORT" --rate "$START" --find-max --step-duration "${STEP}s" \
  "${ARGS[@]}" --report "$DIR/max.json" >/dev/null 2>"$DIR/max.err"
MAX=$(json "$DIR/max.json" "r['max_sustainable_per_s']")
AT70=$((MAX * 7 / 10))
sleep 5
BEFORE=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
/usr/bin/time -f "%e %U %S" -o "$DIR/loadgen.time" "$BIN" loadgen --target "http://127.0.0.1:$PORT" --rate "$AT70" \
  --duration "${LOAD}s" "${ARGS[@]}" --seed 99 --freshness --report "$DIR/at70.json" >/dev/null 2>"$DIR/at70.err"
AFTER=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
ACKED=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^gamelake_ingest_lines_total\{outcome="accepted"\}/ {print $2}')
wait_committed "$PORT" "${ACKED%.*}"
read -r RSS CPU < <(proc_figures "$SERVER")
DISK=$(du -sb "$DIR/data/bronze" "$DIR/data/silver" | awk '{s+=$1} END {printf "%.0f\n", s}')
ROWS=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^gamelake_table_rows_committed_total\{table="bronze.raw_logs"\}/ {print $2}')
python3 - "$DIR/max.json" "$DIR/at70.json" "$DIR/loadgen.time" "$RSS" "$CPU" "$BEFORE" "$AFTER" "$(getconf CLK_TCK)" "$DISK" "$ROWS" "$(machine)" <<'PY'
import json, sys, datetime
m, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
lg = [float(x) for x in open(sys.argv[3]).read().split()]
rss, cpu, before, after, tick, disk, rows, machine = sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10]), sys.argv[11]
best = [s for s in m["steps"] if s["rate"] == m["max_sustainable_per_s"]]
mb = best[0]["report"]["acked_mb_per_s"] if best else 0
f = r.get("freshness", {})
wall = lg[0]
print(f"{datetime.date.today()} · {machine}")
print("steps: " + ", ".join(f"{s['rate']}{'✓' if s['sustained'] else '✗'}" for s in m["steps"]))
print(f"max sustained        {m['max_sustainable_per_s']} events/s ({mb:.1f} MB/s)")
print(f"at 70 % ({r['offered_per_s']:.0f}/s)   acked {r['acked_per_s']:.0f}/s, ack p50/p99 {r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} ms")
print(f"freshness            p50 {f.get('p50_s', 0):.2f} s, p99 {f.get('p99_s', 0):.2f} s ({f.get('markers_visible', 0)}/{f.get('markers_acked', 0)} markers)")
print(f"server CPU at 70 %   {(after - before) / tick / wall * 100:.0f} % of one core; loadgen {(lg[1] + lg[2]) / wall * 100:.0f} %")
print(f"server RSS peak      {rss} MiB (whole run, including the find-max steps); CPU {cpu} s")
print(f"disk/event           {disk / max(rows, 1):.1f} B (bronze+silver) vs {r['acked_mb_per_s'] * 1e6 / max(r['acked_per_s'], 1):.1f} B raw")
PY
