#!/usr/bin/env bash
# Ingest benchmark: durable events/s from HTTP 2xx to committed Delta rows, on this machine,
# with loadgen on the same machine.
#
#   bench/ingest.sh [RATE] [DURATION_S] [BATCH] [CONCURRENCY]
#
# Builds the `$PROFILE` profile (default `release`; `PROFILE=dist` for the LTO build), starts `gamelake serve` on a temp dir, runs `gamelake loadgen` at
# RATE events/s for DURATION_S seconds, waits until every acknowledged line is committed to
# bronze.raw_logs, and prints: offered/acked rates, ack latency, time to committed, server RSS
# (peak) and CPU seconds, loadgen CPU seconds, bytes on disk per event.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-300000}
DURATION=${2:-30}
BATCH=${3:-2000}
CONC=${4:-16}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gamelake-target}"
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" -p gamelake >/dev/null 2>&1 || cargo build --profile "$PROFILE" -p gamelake
BIN="$CARGO_TARGET_DIR/$PROFILE/gamelake"
DIR=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
"$BIN" serve --data-dir "$DIR/data" --http-addr "127.0.0.1:$PORT" >"$DIR/server.out" 2>"$DIR/server.err" &
SERVER=$!
for _ in $(seq 1 200); do grep -q "gamelake ready" "$DIR/server.out" 2>/dev/null && break; sleep 0.1; done
START=$(date +%s.%N)
/usr/bin/time -f "%e %U %S" -o "$DIR/loadgen.time" "$BIN" loadgen --target "http://127.0.0.1:$PORT" --rate "$RATE" \
  --duration "${DURATION}s" --batch "$BATCH" --concurrency "$CONC" --format "${FORMAT:-mixed}" --pregenerate 64 --report "$DIR/report.json" >/dev/null 2>"$DIR/loadgen.err"
ACKED=$(python3 -c "import json;print(json.load(open('$DIR/report.json'))['acked_events'])")
# Wait until bronze.raw_logs has every acknowledged line.
while true; do
  C=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^gamelake_table_rows_committed_total\{table="bronze.raw_logs"\}/ {print $2}')
  [ "${C:-0}" -ge "$ACKED" ] && break
  sleep 0.2
done
END=$(date +%s.%N)
RSS=$(awk '/VmHWM/ {print $2}' /proc/$SERVER/status)
read -r UT ST < <(awk '{print $14, $15}' /proc/$SERVER/stat)
TICK=$(getconf CLK_TCK)
DISK=$(du -sb "$DIR/data/bronze" "$DIR/data/silver" | awk '{s+=$1} END {print s}')
RAW=$(python3 -c "import json;r=json.load(open('$DIR/report.json'));print(int(r['acked_mb_per_s']*1e6*r['elapsed_s']))")
python3 - "$DIR/report.json" "$START" "$END" "$ACKED" "$RSS" "$UT" "$ST" "$TICK" "$DISK" "$RAW" "$DIR/loadgen.time" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
start, end, acked = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rss_kb, ut, st, tick = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
disk, raw = int(sys.argv[9]), int(sys.argv[10])
lg = open(sys.argv[11]).read().split()
print(f"offered/s        {r['offered_per_s']:.0f}")
print(f"acked/s          {r['acked_per_s']:.0f}  ({r['acked_mb_per_s']:.1f} MB/s)")
print(f"failed           {r['failed_events']}  {r['failed_by_status']}")
print(f"ack p50/p99/max  {r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} / {r['latency_max_ms']:.1f} ms")
print(f"2xx->committed   {acked / (end - start):.0f} events/s  ({acked} events in {end - start:.1f} s, until the last row committed)")
print(f"server RSS peak  {rss_kb / 1024:.0f} MiB")
print(f"server CPU       {(ut + st) / tick:.1f} s   loadgen CPU {float(lg[1]) + float(lg[2]):.1f} s  (wall {float(lg[0]):.1f} s)")
print(f"disk/event       {disk / max(acked,1):.1f} B (bronze+silver) vs {raw / max(acked,1):.1f} B raw input")
PY
