#!/usr/bin/env bash
# Durable acknowledgements side by side: deskbot serve (dry run) on SQLite, on PostgreSQL with one
# instance, and on PostgreSQL with three instances sharing one database, all in one run on this
# machine. For each: requests/s and stored events/s unpaced (wrk, CONNS connections in all), and
# p50/p99 paced at about 1,000 requests/s in all. PostgreSQL runs with its durable defaults
# (fsync, synchronous_commit), as SQLite runs with synchronous=FULL: a 202 means committed.
# Requires wrk, python3, and PostgreSQL's packages (scripts/pg-test.sh installs them).
#   DURATION=10s CONNS=30 scripts/load-backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "load-backends.sh needs wrk: apt-get install wrk" >&2; exit 1; }
DURATION=${DURATION:-10s}
CONNS=${CONNS:-30}
SECRET=load-test-secret
cargo build --release --quiet --bin deskbot
tmp=$(mktemp -d)
pids=()
url=""
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "$url" ] && scripts/pg-test.sh stop "$url" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
url=$(PG_DURABLE=1 scripts/pg-test.sh start 2>/dev/null)
psql="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/psql"
base=${url%%\?*}; base=${base%/*}

start() { # port, then env assignments
  local port=$1; shift
  env "$@" DESKBOT_WEBHOOK_SECRETS=$SECRET DESKBOT_LISTEN=127.0.0.1:$port DESKBOT_DRY_RUN=1 \
    RUST_LOG=warn target/release/deskbot serve 2>>"$tmp/deskbot.log" &
  pids+=("$!")
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
  echo "deskbot did not start on $port" >&2; exit 1
}
stop_all() { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; pids=(); }

summary() { # wrk outputs → "rps p50 p99" (rps summed; p50/p99 the worst of the instances)
  awk '/Requests\/sec/ {rps+=$2}
       function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
       /^ +50%/ {v=ms($2); if (v>p50) p50=v}
       /^ +99%/ {v=ms($2); if (v>p99) p99=v}
       END {printf "%.0f %.2f %.2f\n", rps, p50, p99}'
}

# One configuration: name, then the ports its instances listen on; the caller started them.
measure() {
  local name=$1 count=$2; shift 2
  local ports=("$@") n=${#ports[@]} i
  local per=$(( CONNS / n ))
  for i in "${!ports[@]}"; do
    python3 scripts/make-load-requests.py "$SECRET" 200000 | sed "s/load-/$name-$i-/g" > "$tmp/req-$i.tsv"
  done
  # Signatures cover the body: re-sign after renaming the ids.
  for i in "${!ports[@]}"; do
    python3 - "$SECRET" "$tmp/req-$i.tsv" <<'PY'
import base64, hashlib, hmac, sys
secret, path = sys.argv[1].encode(), sys.argv[2]
lines = open(path).read().splitlines()
with open(path, "w") as f:
    for line in lines:
        ts, _, body = line.split("\t", 2)
        sig = base64.b64encode(hmac.new(secret, ts.encode() + body.encode(), hashlib.sha256).digest()).decode()
        f.write(f"{ts}\t{sig}\t{body}\n")
PY
  done
  for i in "${!ports[@]}"; do
    wrk -t1 -c"$per" -d"$DURATION" --latency -s scripts/load.lua "http://127.0.0.1:${ports[$i]}" -- "$tmp/req-$i.tsv" 0 1 > "$tmp/wrk-$i.out" &
  done
  wait $(jobs -p | tail -n "$n")
  read -r rps p50 p99 < <(cat "$tmp"/wrk-*.out | summary)
  local stored; stored=$(eval "$count")
  local secs=${DURATION%s}
  # Paced: 10 connections in all, each a request per 10 ms (about 1,000 requests/s).
  local pace_conns=$(( 10 / n )); [ "$pace_conns" -lt 1 ] && pace_conns=1
  local pace=$(( 10 * n * pace_conns / 10 ))
  rm -f "$tmp"/wrk-*.out
  for i in "${!ports[@]}"; do
    wrk -t1 -c"$pace_conns" -d"$DURATION" --latency -s scripts/load.lua "http://127.0.0.1:${ports[$i]}" -- "$tmp/req-$i.tsv" "$pace" 1 > "$tmp/wrk-$i.out" &
  done
  wait $(jobs -p | tail -n "$n")
  read -r prps pp50 pp99 < <(cat "$tmp"/wrk-*.out | summary)
  rm -f "$tmp"/wrk-*.out
  printf '%-30s %12s %10s %10s %14s %12s %10s %10s\n' "$name" "$rps" "$p50" "$p99" "$(( stored / secs ))" "$prps" "$pp50" "$pp99"
}

printf '%-30s %12s %10s %10s %14s %12s %10s %10s\n' "" "requests/s" "p50 ms" "p99 ms" "stored/s" "paced rps" "p50 ms" "p99 ms"
start 18201 DESKBOT_DB="$tmp/load.db"
measure sqlite "python3 -c \"import sqlite3; print(sqlite3.connect('$tmp/load.db').execute('select count(*) from events').fetchone()[0])\"" 18201
stop_all
"$psql" "$url" -qc "CREATE DATABASE bench_one" >/dev/null
start 18211 DESKBOT_DATABASE_URL="$base/bench_one?sslmode=disable"
measure postgres-1 "\"$psql\" \"$base/bench_one?sslmode=disable\" -tAc 'select count(*) from events'" 18211
stop_all
"$psql" "$url" -qc "CREATE DATABASE bench_three" >/dev/null
for p in 18221 18222 18223; do start $p DESKBOT_DATABASE_URL="$base/bench_three?sslmode=disable"; done
measure postgres-3 "\"$psql\" \"$base/bench_three?sslmode=disable\" -tAc 'select count(*) from events'" 18221 18222 18223
stop_all
echo
echo "stored/s counts the unpaced run's events committed (each acknowledged 202 only after its commit)."
echo "on $(nproc) cores; wrk, PostgreSQL and every deskbot instance share them."
