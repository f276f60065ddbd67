//! Policy decision budget: a generated 1,000-rule policy on a 10 KB ticket, under 100 µs per decision.

use std::hint::black_box;
use std::path::Path;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use deskbot::policy::text::{Phrases, Words};
use deskbot::policy::Policy;
use deskbot::ticket::{EventKind, Ticket};

const WORDS: &[&str] = &[
    "order",
    "inventory",
    "price",
    "sync",
    "import",
    "fulfillment",
    "shipment",
    "refund",
    "invoice",
    "mapping",
    "netsuite",
    "shopify",
    "amazon",
    "ebay",
    "warehouse",
    "tracking",
    "stock",
    "catalog",
    "customer",
    "payment",
    "gateway",
    "checkout",
    "store",
    "outage",
    "error",
    "timeout",
    "login",
];

/// A policy of `n` rules, each with word, phrase and proximity tests, like a large real policy.
fn generated_policy(n: usize, reading: &str) -> String {
    let mut s = format!("[policy]\nname = \"generated\"\n{reading}\n");
    for i in 0..n {
        let w = |k: usize| WORDS[(i * 7 + k * 13) % WORDS.len()];
        s.push_str(&format!(
            "\n[[rule]]\nname = \"rule-{i}\"\nwhen = {{ any = [ {{ text = {{ has_all_words = [\"{} {}\", \"{}\"] }} }}, {{ text = {{ near = {{ terms = [\"{}\", \"not {}ing\"], within = 4 }} }} }}, {{ subject = {{ has_any_word = [\"{}-{i}\", \"{} case {i}\"] }} }} ] }}\nadd_tags = [\"t{i}\"]\npriority = \"{}\"\n",
            w(0), w(1), w(2), w(3), w(4), w(5), w(6),
            ["low", "normal", "high", "urgent"][i % 4]
        ));
    }
    s
}

/// About 10 KB of support-ticket prose.
fn ticket_text() -> String {
    let sentence = "Hello team, since this morning our Shopify orders are not syncing to NetSuite and the inventory levels on Amazon look stale; the warehouse says tracking numbers are missing for several shipments. ";
    sentence.repeat(10_240 / sentence.len() + 1)
}

fn decisions(c: &mut Criterion) {
    // The budget: word forms (stemming, the default) and typo tolerance on.
    let policy = Policy::parse(
        &generated_policy(1000, "typos = true"),
        Path::new("generated.toml"),
    )
    .expect("generated policy compiles")
    .policy;
    // The reference, measured in the same run: exact words (plural rule only), no typos.
    let exact = Policy::parse(
        &generated_policy(1000, "stemming = false"),
        Path::new("generated.toml"),
    )
    .expect("generated policy compiles")
    .policy;
    let ticket = Ticket {
        id: 1,
        event: Some(EventKind::new("created")),
        subject: "Orders not syncing".into(),
        description: ticket_text(),
        ..Ticket::default()
    };
    let now = Utc::now();
    c.bench_function("1000 rules, 10 KB ticket", |b| {
        b.iter(|| black_box(policy.decide(black_box(&ticket), now)))
    });
    // The first ticket that uses these words: every word read (and stemmed) afresh.
    c.bench_function("1000 rules, 10 KB ticket, first reading", |b| {
        // By reference, so dropping the copy is not timed.
        b.iter_batched_ref(
            || policy.clone(),
            |fresh| black_box(fresh.decide(black_box(&ticket), now)),
            criterion::BatchSize::LargeInput,
        )
    });
    c.bench_function("1000 rules, 10 KB ticket, exact words (reference)", |b| {
        b.iter(|| black_box(exact.decide(black_box(&ticket), now)))
    });

    let text = ticket_text();
    let mut phrases = Phrases::new(true);
    for w in WORDS {
        phrases.add(w, true);
        phrases.add(&format!("not {w}ing"), true);
    }
    phrases.build().expect("phrases build");
    c.bench_function("normalise 10 KB of text", |b| {
        b.iter(|| black_box(phrases.words(black_box(&text))))
    });
    let words: Words = phrases.words(&text);
    c.bench_function("find 54 phrases in 10 KB", |b| {
        b.iter(|| black_box(phrases.find(black_box(&words))))
    });

    let shipped = Policy::load_file(Path::new("rules/farapp.toml"))
        .expect("shipped policy loads")
        .policy;
    c.bench_function("shipped farapp policy, 10 KB ticket", |b| {
        b.iter(|| black_box(shipped.decide(black_box(&ticket), now)))
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
