#!/usr/bin/env bash
# gamelake beside ClickHouse on the same machine, the same client and the same generated lines.
#
#   bench/peer-clickhouse.sh [RATE] [DURATION_S]          both at RATE events/s
#   FIND_MAX=1 bench/peer-clickhouse.sh [START_RATE]      highest sustained rate of each
#
# Installs Debian's `clickhouse-server` when it is missing (needs root or sudo), starts it on a
# loopback port with a temp data dir, creates `events` (bench/clickhouse-events.sql) and posts
# the same NDJSON bodies (`gamelake loadgen --format ndjson --pregenerate 64`, same seed) to its
# `INSERT … FORMAT JSONEachRow`. ClickHouse is stopped before gamelake runs, so neither shares
# the two cores with the other. ClickHouse answers without fsync; gamelake fsyncs its WAL.
source "$(dirname "$0")/lib.sh"
RATE=${1:-300000}
DURATION=${2:-20}
LOAD=(--batch 2000 --concurrency "${CONC:-16}" --format ndjson --pregenerate 64 --seed 1)
if [ "${FIND_MAX:-0}" = 1 ]; then
  LOAD+=(--find-max --step-duration "${DURATION}s" --max-p99 500ms)
fi

if ! command -v clickhouse-server >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get install -y clickhouse-server clickhouse-client >/dev/null
fi
CH_PORT=$(free_port)
mkdir -p "$DIR/ch/data" "$DIR/ch/tmp"
cat >"$DIR/ch/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>$CH_PORT</http_port>
  <tcp_port>$(free_port)</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$DIR/ch/data/</path>
  <tmp_path>$DIR/ch/tmp/</tmp_path>
  <mark_cache_size>536870912</mark_cache_size>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
</yandex>
XML
cat >"$DIR/ch/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
XML
clickhouse-server --config-file="$DIR/ch/config.xml" >"$DIR/ch/server.log" 2>&1 &
CH=$!
PIDS+=("$CH")
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$CH_PORT/ping" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$CH_PORT/" --data-binary @bench/clickhouse-events.sql
CH_VERSION=$(curl -s "http://127.0.0.1:$CH_PORT/" --data-binary "SELECT version()")

"$BIN" loadgen --target "http://127.0.0.1:$CH_PORT" --rate "$RATE" --duration "${DURATION}s" "${LOAD[@]}" \
  --path "/?query=INSERT+INTO+events+FORMAT+JSONEachRow&input_format_skip_unknown_fields=1" \
  --report "$DIR/ch.json" >/dev/null 2>"$DIR/ch-loadgen.err"
read -r CH_RSS CH_CPU < <(proc_figures "$CH")
CH_ROWS=$(curl -s "http://127.0.0.1:$CH_PORT/" --data-binary "SELECT count() FROM events")
kill "$CH"; wait "$CH" 2>/dev/null || true
# ClickHouse's writes still in the page cache go to disk now, not under gamelake's WAL fsyncs.
sync

PORT=$(free_port)
start_gamelake "$PORT"
"$BIN" loadgen --target "http://127.0.0.1:$PORT" --rate "$RATE" --duration "${DURATION}s" "${LOAD[@]}" \
  --report "$DIR/gl.json" >/dev/null 2>"$DIR/gl-loadgen.err"
read -r GL_RSS GL_CPU < <(proc_figures "$SERVER")

python3 - "$DIR/ch.json" "$DIR/gl.json" "$CH_VERSION" "$CH_RSS" "$CH_CPU" "$GL_RSS" "$GL_CPU" "$CH_ROWS" "$(machine)" "$RATE" "$DURATION" "${FIND_MAX:-0}" <<'PY'
import json, sys, datetime
ch, gl = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
ver, ch_rss, ch_cpu, gl_rss, gl_cpu, ch_rows, machine, rate, dur, find_max = sys.argv[3:13]
def row(name, r, rss, cpu):
    if find_max == "1":
        best = [s for s in r["steps"] if s["rate"] == r["max_sustainable_per_s"]]
        s = best[0]["report"] if best else None
        p = f"{s['latency_p50_ms']:.0f} / {s['latency_p99_ms']:.0f} ms" if s else "-"
        return r["max_sustainable_per_s"], f"| {name} | max sustained {r['max_sustainable_per_s']} /s | {p} | {rss} MiB | {cpu} s |"
    fails = ", ".join(f"{k} ×{v}" for k, v in r["failed_by_status"].items()) or "none"
    return r["acked_per_s"], (f"| {name} | {r['offered_per_s']:.0f} offered → {r['acked_per_s']:.0f} acked /s ({r['acked_mb_per_s']:.1f} MB/s; failed: {fails}) "
                              f"| {r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f} ms | {rss} MiB | {cpu} s |")
a, ra = row(f"ClickHouse {ver} (no fsync)", ch, ch_rss, ch_cpu)
b, rb = row("gamelake (WAL fsync)", gl, gl_rss, gl_cpu)
mode = f"find-max from {rate}/s, {dur} s steps" if find_max == "1" else f"{rate}/s for {dur} s"
print(f"{datetime.date.today()} · {machine} · {mode} · ClickHouse stored {ch_rows} rows")
print("| system | throughput | ack p50 / p99 | RSS peak | CPU |")
print("| --- | --- | --- | --- | --- |")
print(ra)
print(rb)
print(f"ratio gamelake / ClickHouse: {float(b) / max(float(a), 1):.2f}")
PY
