#!/usr/bin/env bash
# Ingest benchmark: durable events/s from HTTP 2xx to committed Delta rows, on this machine,
# with loadgen on the same machine.
#
#   bench/ingest.sh [RATE] [DURATION_S] [BATCH] [CONCURRENCY]
#
# Builds the `$PROFILE` profile (default `release`; `PROFILE=dist` for the LTO build), starts
# `gamelake serve` on a temp dir, runs `gamelake loadgen` (format `$FORMAT`, default mixed) at
# RATE events/s for DURATION_S seconds, waits until every acknowledged line is committed to
# bronze.raw_logs, and prints: offered/acked rates, ack latency, time to committed, server RSS
# (peak) and CPU seconds, loadgen CPU seconds, bytes on disk per event. `SAMPLE=S` also samples
# the server's RSS and threads every S seconds while loadgen runs and prints them (the drift of a
# long run, which the peak alone does not show).
source "$(dirname "$0")/lib.sh"
RATE=${1:-300000}
DURATION=${2:-30}
BATCH=${3:-2000}
CONC=${4:-16}
PORT=$(free_port)
start_gamelake "$PORT"
START=$(date +%s.%N)
if [ -n "${SAMPLE:-}" ]; then
  (while kill -0 "$SERVER" 2>/dev/null; do
     sleep "$SAMPLE"
     awk -v t="$(( $(date +%s) - ${START%.*} ))" '/VmRSS/ {r=$2} /Threads/ {n=$2} END {printf "%d %d %d\n", t, r/1024, n}' "/proc/$SERVER/status" 2>/dev/null || true
   done) >"$DIR/samples" &
  PIDS+=("$!")
fi
/usr/bin/time -f "%e %U %S" -o "$DIR/loadgen.time" "$BIN" loadgen --target "http://127.0.0.1:$PORT" --rate "$RATE" \
  --duration "${DURATION}s" --batch "$BATCH" --concurrency "$CONC" --format "${FORMAT:-mixed}" --pregenerate 64 \
  --report "$DIR/report.json" >/dev/null 2>"$DIR/loadgen.err"
ACKED=$(json "$DIR/report.json" "r['acked_events']")
wait_committed "$PORT" "$ACKED"
END=$(date +%s.%N)
read -r RSS CPU < <(proc_figures "$SERVER")
if [ -n "${SAMPLE:-}" ]; then
  kill "${PIDS[-1]}" 2>/dev/null || true
  echo "samples (s RSS-MiB threads): $(awk '{printf "%s%s:%s:%s", sep, $1, $2, $3; sep=" "}' "$DIR/samples")"
  sort -n -k2 "$DIR/samples" | awk '{r[NR]=$2} END {if (NR) printf "RSS samples      min %d  median %d  max %d MiB (%d samples)\n", r[1], r[int((NR+1)/2)], r[NR], NR}'
fi
DISK=$(du -sb "$DIR/data/bronze" "$DIR/data/silver" | awk '{s+=$1} END {printf "%.0f\n", s}')
# `REPORT=path` keeps loadgen's JSON summary.
if [ -n "${REPORT:-}" ]; then cp "$DIR/report.json" "$REPORT"; fi
python3 - "$DIR/report.json" "$START" "$END" "$RSS" "$CPU" "$DISK" "$DIR/loadgen.time" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
start, end, rss, cpu, disk = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
acked = r['acked_events']
raw = r['acked_mb_per_s'] * 1e6 * r['elapsed_s']
lg = open(sys.argv[7]).read().split()
print(f"offered/s        {r['offered_per_s']:.0f}")
print(f"acked/s          {r['acked_per_s']:.0f}  ({r['acked_mb_per_s']:.1f} MB/s)")
print(f"failed           {r['failed_events']}  {r['failed_by_status']}")
print(f"ack p50/p99/max  {r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} / {r['latency_max_ms']:.1f} ms")
print(f"2xx->committed   {acked / (end - start):.0f} events/s  ({acked} events in {end - start:.1f} s, until the last row committed)")
print(f"server RSS peak  {rss} MiB")
print(f"server CPU       {cpu} s   loadgen CPU {float(lg[1]) + float(lg[2]):.1f} s  (wall {float(lg[0]):.1f} s)")
print(f"disk/event       {disk / max(acked,1):.1f} B (bronze+silver) vs {raw / max(acked,1):.1f} B raw input")
PY
