#!/usr/bin/env bash
# Load test: deskbot serve (dry run, temporary database) against a bare axum endpoint that only
# reads the body, driven by wrk with the same signed event bodies. Prints requests/s, p50/p99,
# events durably stored, deskbot ÷ bare, and deskbot's peak resident memory.
# Requires wrk (apt-get install wrk) and python3. Local only: everything listens on 127.0.0.1.
#   DURATION=10s CONNS=32 scripts/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "load.sh needs wrk: apt-get install wrk" >&2; exit 1; }
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=2
N=${N:-150000}
SECRET=load-test-secret
DESKBOT=127.0.0.1:18181
BARE=127.0.0.1:18182

cargo build --release --quiet --bin deskbot --example bare_endpoint
tmp=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
pids=()
trap cleanup EXIT

DESKBOT_WEBHOOK_SECRETS=$SECRET DESKBOT_DB="$tmp/load.db" DESKBOT_LISTEN=$DESKBOT DESKBOT_DRY_RUN=1 \
  RUST_LOG=warn target/release/deskbot serve 2>"$tmp/deskbot.log" &
deskbot_pid=$!
pids+=("$deskbot_pid")
target/release/examples/bare_endpoint $BARE &
pids+=("$!")
for addr in $DESKBOT $BARE; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break; sleep 0.1; done
done

# Peak resident memory of deskbot, sampled every 100 ms.
( peak=0; while kill -0 "$deskbot_pid" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$deskbot_pid/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" > "$tmp/peak_rss"
    sleep 0.1; done ) &
pids+=("$!")

run() { # url pace-ms connections requests-file
  wrk -t$THREADS -c"$3" -d"$DURATION" --latency -s scripts/load.lua "$1" -- "$4" "$2" $THREADS
}
summary() { # wrk output → "rps p50 p99"
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print rps, p50, p99}'
}

echo "requests: $N signed ticket.created events, $THREADS wrk threads, $DURATION per run"
python3 scripts/make-load-requests.py "$SECRET" "$N" > "$tmp/bare.tsv"
read -r bare_rps bare_p50 bare_p99 < <(run "http://$BARE" 0 "$CONNS" "$tmp/bare.tsv" | summary)
python3 scripts/make-load-requests.py "$SECRET" "$N" > "$tmp/deskbot.tsv"
out=$(run "http://$DESKBOT" 0 "$CONNS" "$tmp/deskbot.tsv")
read -r bot_rps bot_p50 bot_p99 < <(echo "$out" | summary)
secs=${DURATION%s}
stored=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from events').fetchone()[0])" "$tmp/load.db")
stored_rps=$(python3 -c "print(round($stored / $secs))")
ratio=$(python3 -c "print(round($stored_rps / float('$bare_rps'), 2))")

# Paced run: 10 connections, each waiting 10 ms between requests (about 1,000 requests/s).
python3 scripts/make-load-requests.py "$SECRET" 20000 > "$tmp/paced.tsv"
read -r paced_rps paced_p50 paced_p99 < <(run "http://$DESKBOT" 10 10 "$tmp/paced.tsv" | summary)

printf '\n%-34s %12s %10s %10s\n' "" "requests/s" "p50" "p99"
printf '%-34s %12s %10s %10s\n' "bare axum endpoint (ceiling)" "$bare_rps" "$bare_p50" "$bare_p99"
printf '%-34s %12s %10s %10s\n' "deskbot, unpaced" "$bot_rps" "$bot_p50" "$bot_p99"
printf '%-34s %12s %10s %10s\n' "deskbot, paced" "$paced_rps" "$paced_p50" "$paced_p99"
echo
echo "deskbot stored $stored events in $DURATION: $stored_rps/s durably acknowledged; deskbot ÷ bare = $ratio (budget ≥ 0.5)"
echo "deskbot peak resident memory: $(( $(cat "$tmp/peak_rss" 2>/dev/null || echo 0) / 1024 )) MiB (budget ≤ 50)"
echo "paced p99: $paced_p99 (budget ≤ 10 ms at 1,000 requests/s)"
