#!/usr/bin/env bash
# kill -9 deskbot at random moments under sustained webhook load, KILLS times (default 5), restart
# it on the same database each time, and check against the fake Zendesk that every acknowledged
# event led to its change, none was lost, and no update was applied twice.
#
#   scripts/crash.sh            # 5 kills
#   KILLS=20 scripts/crash.sh   # more
set -euo pipefail
cd "$(dirname "$0")/.."
CRASH_KILLS="${KILLS:-5}" exec cargo test --release --test it \
    crash::kill_9_at_random_points_under_sustained_load -- --ignored --exact --nocapture
