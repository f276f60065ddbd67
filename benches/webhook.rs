//! The webhook's CPU work per request: signature verification and payload parsing.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use deskbot::config::Secret;
use deskbot::webhook::payload;
use deskbot::webhook::signature::{sign, Verifier};

const BODY: &str = include_str!("../examples/farapp-orders-not-syncing.json");

fn webhook(c: &mut Criterion) {
    let ts = "2026-11-23T17:04:11Z";
    let now: DateTime<Utc> = ts.parse().expect("timestamp parses");
    // Rotation: the matching secret is the second one, the common case mid-rotation.
    let verifier = Verifier::new(
        vec![Secret::new("old-secret"), Secret::new("new-secret")],
        false,
        300,
    );
    let sig = sign("new-secret", ts, BODY.as_bytes());
    c.bench_function("verify signature (2 secrets, 1 KB body)", |b| {
        b.iter(|| {
            black_box(verifier.verify(
                Some(sig.as_bytes()),
                Some(ts.as_bytes()),
                black_box(BODY.as_bytes()),
                now,
            ))
        })
    });
    c.bench_function("parse ticket.created event", |b| {
        b.iter(|| black_box(payload::parse(black_box(BODY.as_bytes()))))
    });
    let trigger =
        br#"{"ticket_id": "35436", "event": "created", "updated_at": "2026-11-23T17:04Z"}"#;
    c.bench_function("parse trigger body", |b| {
        b.iter(|| black_box(payload::parse(black_box(trigger))))
    });
}

criterion_group!(benches, webhook);
criterion_main!(benches);
