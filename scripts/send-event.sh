#!/usr/bin/env bash
# Sends a webhook body to a running deskbot, signed the way Zendesk signs it:
#   base64(HMAC-SHA256(secret, timestamp + body)).
# Usage: scripts/send-event.sh FILE [URL]
# The secret comes from DESKBOT_SECRET; without it, Zendesk's public test secret is used, which a
# fresh `deskbot serve` (no credentials, no DESKBOT_WEBHOOK_SECRETS) accepts.
set -euo pipefail
file=${1:?usage: scripts/send-event.sh FILE [URL]}
url=${2:-http://127.0.0.1:8080/webhooks/zendesk}
secret=${DESKBOT_SECRET:-dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==}
ts=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sig=$( { printf '%s' "$ts"; cat "$file"; } | openssl dgst -sha256 -hmac "$secret" -binary | base64)
curl -sS -i "$url" \
  -H 'Content-Type: application/json' \
  -H "X-Zendesk-Webhook-Signature: $sig" \
  -H "X-Zendesk-Webhook-Signature-Timestamp: $ts" \
  --data-binary @"$file"
echo
