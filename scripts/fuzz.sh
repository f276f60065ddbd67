#!/usr/bin/env bash
# Fuzz the three parsers of outside input (webhook body, signature headers, policy TOML) with
# cargo-fuzz, SECONDS each (default 60). Needs `cargo install cargo-fuzz`. cargo-fuzz passes
# nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Crashes are written to fuzz/artifacts/<target>/ with the command that replays them.
#   scripts/fuzz.sh            # 60 s per target
#   SECONDS_EACH=600 scripts/fuzz.sh payload
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || { echo "fuzz.sh needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 1; }
secs=${SECONDS_EACH:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(payload signature policy)
# Seeds: the shipped policies, and one event of each kind deskbot acts on.
mkdir -p corpus/policy corpus/payload corpus/signature
cp ../rules/*.toml corpus/policy/
printf '%s' '{"type":"zen:event-type:ticket.created","account_id":1,"id":"e1","time":"2026-11-23T17:00:00Z","subject":"zen:ticket:7","detail":{"id":"7","subject":"URGENT","priority":"NORMAL","tags":["vip"]},"event":{}}' > corpus/payload/created.json
printf '%s' '{"type":"zen:event-type:ticket.comment_added","id":"e2","subject":"zen:ticket:7","detail":{"id":"7"},"event":{"comment":{"id":"9","body":"still broken","is_public":false,"author":{"id":"7","is_staff":false}}}}' > corpus/payload/comment.json
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${secs}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=8192
done
