#!/usr/bin/env bash
# Memory under large bodies: deskbot serve (dry run, temporary database) while CLIENTS clients
# each post 1 MB bodies back to back for DURATION seconds; prints the answers by status and
# deskbot's peak resident memory (budget: under 64 MiB with 64 clients). Local only (127.0.0.1).
#   CLIENTS=64 DURATION=10 scripts/memory.sh   (BIN=path/to/deskbot to measure another build)
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-10}
ADDR=127.0.0.1:18183
BIN=${BIN:-}
if [ -z "$BIN" ]; then cargo build --release --quiet --bin deskbot; BIN=target/release/deskbot; fi
tmp=$(mktemp -d)
DESKBOT_DB="$tmp/m.db" DESKBOT_LISTEN=$ADDR RUST_LOG=error "$BIN" serve 2>"$tmp/log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR#*:}") 2>/dev/null && break; sleep 0.1; done
base=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
( peak=0; while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" > "$tmp/peak"
    sleep 0.05; done ) &
python3 - "$ADDR" "$CLIENTS" "$DURATION" <<'PY'
import collections, http.client, sys, threading, time
addr, clients, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
host, port = addr.split(":")
body = b'{"pad":"' + b"x" * (1_000_000 - 10) + b'"}'
counts = collections.Counter()
lock = threading.Lock()
end = time.time() + duration
def client():
    while time.time() < end:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request("POST", "/webhooks/zendesk", body, {"Content-Type": "application/json", "Connection": "close"})
            status = c.getresponse().status
            c.close()
        except (BrokenPipeError, ConnectionResetError):
            status = "closed before the body was sent (after a 503)"
        except Exception as e:
            status = type(e).__name__
        with lock:
            counts[status] += 1
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
print("answers:", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str)))
PY
sleep 0.3
after=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
peak=$(cat "$tmp/peak" 2>/dev/null || echo 0)
echo "deskbot resident memory: $((base / 1024)) MiB at start, peak $((peak / 1024)) MiB with $CLIENTS clients posting 1 MB bodies, $((after / 1024)) MiB after (budget: peak under 64 MiB)"
