#!/usr/bin/env python3
"""Writes N signed ticket.created event requests, one per line: timestamp<TAB>signature<TAB>body.

Each has its own event id (so deskbot stores every one) and a fresh timestamp (so it verifies).
Usage: make-load-requests.py SECRET N > requests.tsv
"""
import base64, datetime, hashlib, hmac, json, sys

secret, n = sys.argv[1].encode(), int(sys.argv[2])
ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
for i in range(n):
    ticket = 100000 + i % 2000
    body = json.dumps({
        "type": "zen:event-type:ticket.created", "account_id": 1, "id": f"load-{i}",
        "time": ts, "zendesk_event_version": "2022-11-06", "subject": f"zen:ticket:{ticket}",
        "detail": {"id": str(ticket), "subject": "Orders not syncing to NetSuite", "description":
                   "Since this morning none of our Shopify orders have arrived.", "priority": "NORMAL",
                   "status": "NEW", "type": "INCIDENT", "tags": ["shopify"], "created_at": ts,
                   "updated_at": ts, "via": {"channel": "email"}},
        "event": {}}, separators=(",", ":"))
    sig = base64.b64encode(hmac.new(secret, ts.encode() + body.encode(), hashlib.sha256).digest()).decode()
    print(f"{ts}\t{sig}\t{body}")
