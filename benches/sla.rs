//! SLA clock budgets: recomputing one ticket's clocks after an event under 50 µs; with 100,000
//! running clocks in the database, the next due timer found and turned into a job under 1 ms.

mod common;

use std::hint::black_box;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use common::farapp;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use deskbot::queue::clocks::ClockSave;
use deskbot::queue::store::Store;
use deskbot::sla::clock::{Change, Rules, Targets, TicketClocks, Warn};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn rules() -> Rules {
    Rules {
        warn: Some(Warn::Before("30 business minutes".parse().expect("span"))),
        ..Rules::default()
    }
}

fn targets() -> Targets {
    Targets {
        first_response: Some("3 business hours".parse().expect("span")),
        next_response: Some("2 business hours".parse().expect("span")),
        resolution: Some("5 business days".parse().expect("span")),
    }
}

/// A ticket with some history: replied to, pending over a weekend twice, a customer reply waiting.
fn history() -> TicketClocks {
    let (mut tc, _) = TicketClocks::start(
        1,
        t("2026-11-20T09:00:00-08:00"),
        Some("new".into()),
        &targets(),
        &rules(),
    );
    let steps = [
        ("2026-11-20T10:00:00-08:00", None, Some(true)),
        ("2026-11-20T16:00:00-08:00", Some("pending"), None),
        ("2026-11-23T09:00:00-08:00", None, Some(false)),
        ("2026-11-23T09:00:01-08:00", Some("open"), None),
        ("2026-11-23T11:00:00-08:00", None, Some(true)),
        ("2026-11-25T16:00:00-08:00", Some("pending"), None),
        ("2026-11-30T09:00:00-08:00", None, Some(false)),
    ];
    for (at, status, by_agent) in steps {
        let change = match status {
            Some(s) => Change::Status {
                at: t(at),
                status: s.into(),
            },
            None => Change::Comment {
                at: t(at),
                public: true,
                by_agent,
            },
        };
        tc.apply(&change, &targets(), &rules());
    }
    tc
}

fn recompute(c: &mut Criterion) {
    let cal = farapp();
    let tc = history();
    let now = t("2026-11-30T10:00:00-08:00");
    // What the worker does per event: apply the change, then the summary rows and the timers.
    c.bench_function("one ticket's clocks after an event", |b| {
        b.iter(|| {
            let mut tc = tc.clone();
            let open = Change::Status {
                at: now,
                status: "open".into(),
            };
            tc.apply(black_box(&open), &targets(), &rules());
            black_box(tc.summaries(&cal, &rules(), now));
            black_box(tc.timers(&cal, &rules()))
        })
    });
}

/// 100,000 tickets with running clocks (two timers each, all due next year).
fn seeded(path: &Path) -> Store {
    drop(Store::open(path).expect("store opens"));
    let mut c = rusqlite::Connection::open(path).expect("sqlite");
    let tx = c.transaction().expect("tx");
    {
        let mut timer = tx
            .prepare("INSERT INTO sla_timers (ticket_id, metric, instance, kind, due_at) VALUES (?1, 'first_response', 1, ?2, ?3)")
            .expect("prepare");
        let mut row = tx
            .prepare("INSERT INTO sla_clocks (ticket_id, metric, instance, state, started_at, target, consumed_secs, at_risk_at, due_at, zone)
                      VALUES (?1, 'first_response', 1, 'active', 0, '3 business hours', 0, ?2, ?3, 'America/Los_Angeles')")
            .expect("prepare");
        let base = t("2027-06-01T00:00:00Z").timestamp_millis();
        for i in 0..100_000i64 {
            let due = base + i * 60_000;
            timer
                .execute(rusqlite::params![i + 1_000, "at_risk", due - 1_800_000])
                .expect("insert");
            timer
                .execute(rusqlite::params![i + 1_000, "breached", due])
                .expect("insert");
            row.execute(rusqlite::params![i + 1_000, due - 1_800_000, due])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    Store::open(path).expect("store opens")
}

fn timers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(&dir.path().join("bench.db"));
    let cal = farapp();
    let now = t("2026-11-30T20:00:00Z");
    let mut ticket = 0u64;
    // The reference: one round trip to the database thread that reads almost nothing.
    c.bench_function("reference: one database round trip (queue stats)", |b| {
        b.iter(|| black_box(rt.block_on(store.stats(now)).expect("stats")))
    });
    c.bench_function("next due timer among 100k running clocks", |b| {
        b.iter(|| black_box(rt.block_on(store.next_due()).expect("next due")))
    });
    // Each iteration: one more ticket whose breach is due now (saved in the untimed setup), then
    // the worker's promotion finds it among the 100,000 and queues it as a job.
    c.bench_function("fire the due timer among 100k running clocks", |b| {
        b.iter_batched(
            || {
                ticket += 1;
                let (tc, _) = TicketClocks::start(
                    ticket,
                    now - Duration::hours(4),
                    Some("open".into()),
                    &targets(),
                    &rules(),
                );
                let timers = tc.timers(&cal, &rules());
                let due: Vec<_> = timers.into_iter().filter(|x| x.at <= now).collect();
                let save = ClockSave {
                    clocks: tc,
                    summaries: Vec::new(),
                    timers: due,
                };
                rt.block_on(store.settle_with_clocks(Vec::new(), vec![save], Vec::new(), now))
                    .expect("save");
            },
            |()| {
                let n = rt.block_on(store.promote_timers(now)).expect("promote");
                assert!(n >= 1);
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(benches, recompute, timers);
criterion_main!(benches);
