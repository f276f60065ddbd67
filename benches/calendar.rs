//! Due-date computation budget: 10,000 computations of `30 business days` in under 50 ms.

mod common;

use std::hint::black_box;

use chrono::{DateTime, Duration, Utc};
use common::farapp;
use criterion::{criterion_group, criterion_main, Criterion};
use deskbot::calendar::Span;

fn due_dates(c: &mut Criterion) {
    let cal = farapp();
    let span: Span = "30 business days".parse().expect("span parses");
    // 10,000 start times spread over two years (every ~105 minutes), so holidays and DST changes are crossed.
    let base = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let starts: Vec<DateTime<Utc>> = (0..10_000)
        .map(|i| base + Duration::minutes(i * 105))
        .collect();
    c.bench_function("10k due dates, 30 business days", |b| {
        b.iter(|| {
            for s in &starts {
                black_box(cal.add(black_box(*s), span));
            }
        })
    });
    c.bench_function("one due date, 3 business hours", |b| {
        let three: Span = "3 business hours".parse().expect("span parses");
        b.iter(|| black_box(cal.add(black_box(base), three)))
    });
    c.bench_function("business_between over 30 business days", |b| {
        let end = cal.add(base, span);
        b.iter(|| black_box(cal.business_between(black_box(base), black_box(end))))
    });
}

criterion_group!(benches, due_dates);
criterion_main!(benches);
