# Shared by the bench/ scripts: build the binary, start a server on a temp dir, read its figures.
# Source it; it sets BIN and DIR and cleans up on exit (`KEEP=1` keeps DIR, e.g. to query the
# data a benchmark made). `RECORD=1` also appends what the script printed to the end of
# BENCHMARKS.md ("Runs recorded by the bench scripts") when it succeeds, under its command line
# (with the settings it read from the environment), the date, the machine and the commit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The command line as it was given: the environment settings the scripts read, then the script.
RECORD_CMD=""
for v in PROFILE CONFIG FORMAT CONC SAMPLE FIND_MAX PEERS JOBS COMPACT INGEST_ONLY PAIRED; do
  [[ -n "${!v:-}" ]] && RECORD_CMD+="$v=${!v} "
done
RECORD_CMD+="bench/$(basename "$0")${*:+ $*}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gamelake-target}"
PROFILE=${PROFILE:-release}
# `BIN=path/to/gamelake` skips the build (e.g. to try a script with the debug binary).
if [ -z "${BIN:-}" ]; then
  cargo build --profile "$PROFILE" -p gamelake >/dev/null 2>&1 || cargo build --profile "$PROFILE" -p gamelake
  BIN="$CARGO_TARGET_DIR/$PROFILE/gamelake"
  BUILT="the checkout's $PROFILE build"
else
  BUILT="binary $BIN"
fi
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  local rc=$?
  # The output goes back to where it went before `tee`, which then sees its end.
  [[ -n "${RECORD_TEE:-}" ]] && exec 1>&3 3>&-
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n "${RECORD_TEE:-}" ]]; then
    if [[ $rc == 0 ]]; then record_run; else echo "not recorded: the script failed ($rc)" >&2; fi
  fi
  if [[ -n "${KEEP:-}" ]]; then echo "kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

RECORD_TEE=""
if [[ -n "${RECORD:-}" ]]; then
  exec 3>&1 > >(tee "$DIR/record.out")
  RECORD_TEE=$!
fi

# Appends the run's output to BENCHMARKS.md.
record_run() {
  local heading="## Runs recorded by the bench scripts"
  local commit
  commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo "+uncommitted")
  {
    grep -qxF "$heading" BENCHMARKS.md || printf '\n%s\n\nAppended by `RECORD=1 bench/…` (bench/lib.sh): each run as its script printed it.\n' "$heading"
    printf '\n### %s · `%s`\n\n' "$(date -u '+%F %H:%M UTC')" "$RECORD_CMD"
    printf '%s; checkout at %s; %s.\n\n```text\n' "$(machine)" "$commit" "$BUILT"
    cat "$DIR/record.out"
    printf '```\n'
  } >>BENCHMARKS.md
  echo "recorded in BENCHMARKS.md" >&2
}

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
