#!/usr/bin/env bash
# Times the upgrade of a schema-1 queue file to the current schema: writes a schema-1 database of N events
# (default 1,000,000, about 2.1 GB; the last 1,000 still waiting), then times `deskbot dead-letters`
# on it, which opens the store and so upgrades it. As root the page cache is dropped first.
#   N=1000000 DIR=/var/tmp scripts/upgrade-time.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
cargo build --release --quiet --bin deskbot
tmp=$(mktemp -d "${DIR:-${TMPDIR:-/tmp}}/upgrade.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/q.db" "$N" <<'PY'
import sqlite3, sys
path, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(path)
# Schema 1 as deskbot wrote it before the partial indexes.
c.executescript("""
PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
CREATE TABLE events (id INTEGER PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE, invocation_key TEXT UNIQUE,
 ticket_id INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL, received_at INTEGER NOT NULL,
 state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL,
 locked_until INTEGER, last_error TEXT, outcome TEXT, finished_at INTEGER);
CREATE INDEX events_by_state ON events (state, ticket_id, id);
CREATE INDEX events_by_state_id ON events (state, id);
PRAGMA user_version=1;
""")
payload, outcome = "p" * 700, "o" * 820  # the sizes of a stored event and of its recorded outcome
def rows():
    for i in range(n):
        done = i < n - 1000
        yield (f"ev-{i}", f"wh:{i}", 100000 + i % 50000, "created", payload, 1700000000000 + i,
               "done" if done else "pending", 1700000000000 + i, outcome if done else None)
c.executemany("""INSERT INTO events (dedup_key, invocation_key, ticket_id, kind, payload, received_at,
    state, next_attempt_at, outcome) VALUES (?,?,?,?,?,?,?,?,?)""", rows())
c.commit(); c.execute("PRAGMA wal_checkpoint(TRUNCATE)"); c.close()
PY
echo "schema-1 file: $N events, $(du -h "$tmp/q.db" | cut -f1)"
sync
if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; cache=cold; else cache=warm; fi
start=$(date +%s.%N)
DESKBOT_DB="$tmp/q.db" target/release/deskbot dead-letters >/dev/null
end=$(date +%s.%N)
version=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('pragma user_version').fetchone()[0])" "$tmp/q.db")
python3 -c "print(f'upgrade to schema $version, $cache page cache: {$end - $start:.2f} s')"
