# Shared by the bench/ scripts: build the binary, start a server on a temp dir, read its figures.
# Source it; it sets BIN and DIR and cleans up on exit (`KEEP=1` keeps DIR, e.g. to query the
# data a benchmark made).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gamelake-target}"
PROFILE=${PROFILE:-release}
# `BIN=path/to/gamelake` skips the build (e.g. to try a script with the debug binary).
if [ -z "${BIN:-}" ]; then
  cargo build --profile "$PROFILE" -p gamelake >/dev/null 2>&1 || cargo build --profile "$PROFILE" -p gamelake
  BIN="$CARGO_TARGET_DIR/$PROFILE/gamelake"
fi
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n "${KEEP:-}" ]]; then echo "kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_gamelake PORT: `gamelake serve` on $DIR/data; sets SERVER.
start_gamelake() {
  # `CONFIG=path` runs the server with that config file (defaults otherwise).
  "$BIN" serve ${CONFIG:+--config "$CONFIG"} --data-dir "$DIR/data" --http-addr "127.0.0.1:$1" --pg-addr 127.0.0.1:0 >"$DIR/server.out" 2>"$DIR/server.err" &
  SERVER=$!
  PIDS+=("$SERVER")
  for _ in $(seq 1 300); do grep -q "gamelake ready" "$DIR/server.out" 2>/dev/null && return; sleep 0.1; done
  echo "gamelake did not start:" >&2; cat "$DIR/server.err" >&2; exit 1
}

# wait_committed PORT N: until bronze.raw_logs has N committed rows.
wait_committed() {
  while true; do
    local c
    c=$(curl -s "http://127.0.0.1:$1/metrics" | awk '/^gamelake_table_rows_committed_total\{table="bronze.raw_logs"\}/ {print $2}')
    [ "${c:-0}" -ge "$2" ] && return
    sleep 0.2
  done
}

# proc_figures PID: "RSS_PEAK_MIB CPU_SECONDS" of a running process.
proc_figures() {
  local rss ut st
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$1/status")
  read -r ut st < <(awk '{print $14, $15}' "/proc/$1/stat")
  python3 -c "print(f'{$rss/1024:.0f} {($ut+$st)/$(getconf CLK_TCK):.1f}')"
}

# json FILE EXPR: a value of a JSON report, e.g. json r.json "r['acked_per_s']".
json() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }

machine() { echo "$(nproc) vCPU $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB"; }
