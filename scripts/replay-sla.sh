#!/usr/bin/env bash
# Replays examples/sla-sequence/ (one FarApp ticket: created, a private note, pending, the
# customer's answer, open again) to a running deskbot, signed like Zendesk signs, one event a
# second. With the shipped rules, a dry-run `deskbot serve` logs the clocks starting, the first
# response warned and breached (late, as the events are from 23 Nov 2026), resolution paused and
# resumed; then `deskbot sla --ticket 4801` shows where each clock stands.
# Usage: scripts/replay-sla.sh [URL]   (the secret comes from DESKBOT_SECRET, as for send-event.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
url=${1:-http://127.0.0.1:8080/webhooks/zendesk}
for f in "$here"/../examples/sla-sequence/*.json; do
  echo "== $(basename "$f")"
  answer=$("$here/send-event.sh" "$f" "$url")
  printf '%s\n' "${answer%%$'\r'*}"
  sleep 1
done
echo "now: deskbot sla --ticket 4801   (cargo run --release -- sla --ticket 4801)"
