//! Console budget: with 1,000,000 events in the database, the activity page (first page, a page
//! deep in the history, filtered by result, by ticket, by event type) and an event's detail each
//! answer in under 50 ms, measured over HTTP against the real server. The reference is `/healthz`
//! on the same server (a request that reads two counts).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use deskbot::config::{Config, LogFormat, Reapply, RetryConfig, Secret, Verification};
use deskbot::queue::store::Store;
use rusqlite::params;

const EVENTS: i64 = 1_000_000;
const TOKEN: &str = "bench-token-0123456789";
const KINDS: [&str; 4] = [
    "created",
    "comment_added",
    "comment_added",
    "status_changed",
];

/// Fills `path` with a million finished jobs shaped like real ones (payload and outcome JSON).
fn fill(path: &std::path::Path) {
    drop(Store::open(path).expect("schema"));
    let mut c = rusqlite::Connection::open(path).expect("open");
    c.pragma_update(None, "synchronous", "OFF").expect("pragma");
    let tx = c.transaction().expect("tx");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO events (dedup_key, ticket_id, kind, payload, received_at, state, next_attempt_at,
                                     outcome, finished_at, result, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?7, ?8, ?9, ?10)",
            )
            .expect("insert");
        let start = chrono::Utc::now().timestamp_millis() - EVENTS * 600;
        for i in 0..EVENTS {
            let ticket = 1 + (i * 7919) % 100_000;
            let kind = KINDS[(i % 4) as usize];
            let payload = format!(
                r#"{{"dedup_key":"event:{i}","source":"event","ticket_id":{ticket},"kind":"{kind}","occurred_at":null,"snapshot":{{"id":{ticket},"subject":"Orders stopped syncing for store {ticket}","description":"Since this morning no orders reached the warehouse. URGENT please.","tags":["vip"],"priority":"normal","status":"open"}},"comment":null,"current":null,"timer":null,"notice":null}}"#
            );
            let (state, result, attempts) = match i % 1000 {
                0 => ("dead", "dead", 8),
                n if n % 2 == 0 => ("done", "updated", 0),
                _ => ("done", "no_change", 0),
            };
            let outcome = format!(
                r#"{{"result":"{result}","decision":{{"priority":"urgent","add_tags":["deskbot_escalated"],"remove_tags":[],"fields":{{}},"group_id":null,"note":null,"matched_rules":["urgent-subject"],"first_response_due":null,"resolution_due":null,"due_at":null}}}}"#
            );
            let at = start + i * 600;
            insert
                .execute(params![
                    format!("event:{i}"),
                    ticket,
                    kind,
                    payload,
                    at,
                    state,
                    outcome,
                    at + 40,
                    result,
                    attempts
                ])
                .expect("row");
        }
    }
    tx.commit().expect("commit");
}

fn config(dir: &std::path::Path) -> Config {
    let rules = dir.join("policy.toml");
    std::fs::write(
        &rules,
        "[policy]\nname = \"bench\"\n[[rule]]\nname = \"urgent-subject\"\nwhen = { subject = { has_word = \"urgent\" } }\npriority = \"urgent\"\n",
    )
    .expect("policy");
    Config {
        rules,
        listen: "127.0.0.1:0".parse().expect("addr"),
        db: dir.join("deskbot.db"),
        database_url: None,
        verification: Verification::Skip,
        signature_tolerance_secs: 300,
        zendesk: None,
        dry_run: true,
        log_format: LogFormat::Pretty,
        retry: RetryConfig {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: 8,
        },
        notify_url: None,
        reapply: Reapply::Off,
        catch_up_idle: Duration::from_secs(900),
        admin_token: Some(Secret::new(TOKEN)),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path());
    eprintln!("filling {} with {EVENTS} events…", cfg.db.display());
    fill(&cfg.db);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stop = tokio_util::sync::CancellationToken::new();
    let (base, cookie) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(deskbot::server::run(cfg, listener, stop.clone()));
        let base = format!("http://{addr}");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let mut cookie = None;
        for _ in 0..100 {
            if let Ok(r) = http
                .get(format!("{base}/admin/login?token={TOKEN}"))
                .send()
                .await
            {
                cookie = r
                    .headers()
                    .get("set-cookie")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(';').next().unwrap_or("").to_string());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (base, cookie.expect("logged in"))
    });
    let http = reqwest::Client::new();
    let mut group = c.benchmark_group("console, 1,000,000 events");
    group.sample_size(30);
    let pages = [
        ("reference: /healthz", "/healthz".to_string()),
        ("activity: first page", "/admin/activity".to_string()),
        (
            "activity: a page half-way back",
            format!("/admin/activity?before={}", EVENTS / 2),
        ),
        (
            "activity: dead letters",
            "/admin/activity?result=dead".to_string(),
        ),
        (
            "activity: one ticket",
            "/admin/activity?ticket=4711".to_string(),
        ),
        (
            "activity: one event type",
            "/admin/activity?kind=status_changed".to_string(),
        ),
        ("activity: a time range", {
            let day =
                |d: i64| (chrono::Utc::now() - chrono::Duration::days(d)).format("%Y-%m-%dT%H:%M");
            format!("/admin/activity?from={}&to={}", day(4), day(3))
        }),
        ("overview (24 hours of counts)", "/admin".to_string()),
        ("event detail", format!("/admin/events/{}", EVENTS / 2)),
    ];
    for (name, path) in pages {
        let url = format!("{base}{path}");
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let r = http
                        .get(&url)
                        .header("cookie", &cookie)
                        .send()
                        .await
                        .expect("answer");
                    assert!(r.status().is_success(), "{url}: {}", r.status());
                    black_box(r.bytes().await.expect("body"));
                })
            })
        });
    }
    group.finish();
    stop.cancel();
}

criterion_group!(benches, bench);
criterion_main!(benches);
