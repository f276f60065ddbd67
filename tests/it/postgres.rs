//! PostgreSQL schema migrations against a real server: `DESKBOT_TEST_PG_URL` names one
//! (`scripts/pg-test.sh start` makes it; `.ci/run` does so). Without it these tests say so and
//! pass, except under `CI=true`, where they fail: CI must run them.

use deskbot::queue::postgres::{self, Migrated};

/// The test server's URL, or `None` (printed) outside CI without one.
pub fn server() -> Option<String> {
    let Ok(url) = std::env::var("DESKBOT_TEST_PG_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "the PostgreSQL tests need DESKBOT_TEST_PG_URL (scripts/pg-test.sh start); .ci/run sets it"
        );
        eprintln!("SKIPPED: PostgreSQL test without DESKBOT_TEST_PG_URL (scripts/pg-test.sh start makes a server)");
        return None;
    };
    Some(url)
}

/// A new, empty database on `server`; its URL.
pub async fn fresh_database(server: &str) -> String {
    let admin = postgres::connect(server).await.expect("the test server");
    let name = format!("deskbot_t_{}", &deskbot::admin::auth::random_token()[..12]);
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("a test database");
    let (base, query) = server.split_once('?').unwrap_or((server, ""));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    format!("{base}/{name}?{query}")
}

/// A fresh database on the test server, or `None` (printed) outside CI without a server.
async fn database() -> Option<String> {
    Some(fresh_database(&server()?).await)
}

#[tokio::test]
async fn migrate_creates_the_schema_once() {
    let Some(url) = database().await else { return };
    let mut c = postgres::connect(&url).await.unwrap();
    let latest = postgres::latest();
    assert_eq!(
        postgres::migrate(&mut c).await.unwrap(),
        Migrated {
            from: 0,
            to: latest
        }
    );
    assert_eq!(
        postgres::migrate(&mut c).await.unwrap(),
        Migrated {
            from: latest,
            to: latest
        }
    );
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "admin_actions",
            "attempts",
            "cursors",
            "deskbot_schema",
            "events",
            "rate_budget",
            "rule_matches",
            "sla_clocks",
            "sla_tickets",
            "sla_timers"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_apply_each_version_once() {
    let Some(url) = database().await else { return };
    let runs = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut c = postgres::connect(&url).await.unwrap();
            postgres::migrate(&mut c).await.unwrap()
        })
    });
    let mut applied = 0;
    for r in runs {
        let m = r.await.unwrap();
        assert_eq!(m.to, postgres::latest());
        applied += m.to - m.from;
    }
    assert_eq!(
        applied,
        postgres::latest(),
        "each version applied by one of them"
    );
    let c = postgres::connect(&url).await.unwrap();
    let rows: i64 = c
        .query_one("SELECT COUNT(*) FROM deskbot_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, i64::from(postgres::latest()));
}

#[tokio::test]
async fn a_database_from_a_newer_deskbot_is_refused() {
    let Some(url) = database().await else { return };
    let mut c = postgres::connect(&url).await.unwrap();
    postgres::migrate(&mut c).await.unwrap();
    c.execute("INSERT INTO deskbot_schema (version) VALUES (99)", &[])
        .await
        .unwrap();
    let e = postgres::migrate(&mut c).await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "the database's schema is version 99, newer than this deskbot knows (up to {}): run the newer deskbot, or point DESKBOT_DATABASE_URL at another database",
            postgres::latest()
        )
    );
}

#[tokio::test]
async fn the_migrate_command_says_what_it_did() {
    let Some(url) = database().await else { return };
    let run = |url: String| {
        tokio::task::spawn_blocking(move || {
            crate::support::deskbot_command()
                .arg("migrate")
                .env("DESKBOT_DATABASE_URL", url)
                .output()
                .unwrap()
        })
    };
    let first = run(url.clone()).await.unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        format!(
            "PostgreSQL schema: version 0 → {l} ({l} applied)\n",
            l = postgres::latest()
        )
    );
    let again = run(url).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        format!(
            "PostgreSQL schema: already at version {}\n",
            postgres::latest()
        )
    );
}

#[test]
fn migrate_explains_a_wrong_or_unreachable_database() {
    for (url, says) in [
        ("sqlite:deskbot.db", "must be a postgres:// URL"),
        (
            "postgres://u@127.0.0.1:notaport/db",
            "is not a PostgreSQL URL deskbot can use",
        ),
        (
            "postgres://u@127.0.0.1:9/db?sslmode=disable&connect_timeout=2",
            "PostgreSQL: ",
        ),
    ] {
        let out = crate::support::deskbot_command()
            .arg("migrate")
            .env("DESKBOT_DATABASE_URL", url)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{url}: {err}");
    }
}

/// An existing SQLite deployment moves to PostgreSQL: `db copy` carries every job (a leased one
/// freed, a dead letter still dead, finished ones kept), clocks' timers and kept positions; a
/// second copy into the same database is refused; and `serve` on PostgreSQL then does the
/// waiting jobs: each ticket updated once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_deployment_is_copied_and_served_from_postgres() {
    use crate::support::{api_ticket, event_body, eventually, spawn_app_with, Options};
    use chrono::Utc;
    use deskbot::queue::store::{NewEvent, Settle, Store};
    use deskbot::webhook::payload::{parse, Parsed};
    use std::time::Duration;

    let Some(url) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.db");
    let sqlite = Store::open(&file).unwrap();
    for t in 1..=6u64 {
        let body = event_body(&format!("copy-{t}"), "created", t, "URGENT: orders stuck");
        let Ok(Parsed::Ticket(event)) = parse(body.as_bytes()) else {
            panic!("not a ticket event")
        };
        sqlite
            .enqueue(NewEvent {
                event: *event,
                invocation_key: Some(format!("inv-{t}")),
                received_at: Utc::now(),
                background: false,
            })
            .await
            .unwrap();
    }
    // Tickets 1 and 2 done, 3 dead, 4 leased by the stopped process, 5 and 6 waiting.
    let claimed = sqlite
        .claim(Utc::now(), Duration::from_secs(600), 4, 1)
        .await
        .unwrap();
    let lease = |i: usize| claimed[i][0].lease();
    sqlite
        .settle(
            vec![
                (
                    lease(0),
                    Settle::Done {
                        outcome: r#"{"result":"no_change"}"#.into(),
                    },
                ),
                (
                    lease(1),
                    Settle::Done {
                        outcome: r#"{"result":"no_change"}"#.into(),
                    },
                ),
                (
                    lease(2),
                    Settle::Dead {
                        outcome: r#"{"result":"dead"}"#.into(),
                        error: "Zendesk answered 422".into(),
                    },
                ),
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    sqlite
        .set_cursor("backfill all", Some("cursor-1"))
        .await
        .unwrap();
    drop(sqlite);

    let copy = |to: String| {
        let from = format!("sqlite:{}", file.display());
        tokio::task::spawn_blocking(move || {
            crate::support::deskbot_command()
                .args(["db", "copy", "--from", &from, "--to", &to])
                .output()
                .unwrap()
        })
    };
    let out = copy(url.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("        events: 6 rows"), "{stdout}");
    assert!(stdout.contains("      attempts: 1 rows"), "{stdout}");
    assert!(stdout.contains("       cursors: 1 rows"), "{stdout}");
    assert!(stdout.contains("; 3 jobs waiting will be done"), "{stdout}");
    let again = copy(url.clone()).await.unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr)
            .contains("the PostgreSQL database already holds 6 jobs: copy into an empty database"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let pg = Store::connect(&url).await.unwrap();
    assert_eq!(
        pg.cursor("backfill all").await.unwrap().as_deref(),
        Some("cursor-1")
    );
    let dead = pg.dead_letters().await.unwrap();
    assert_eq!(
        (dead.len(), dead[0].ticket_id, dead[0].last_error.as_deref()),
        (1, 3, Some("Zendesk answered 422"))
    );
    // The commands an admin runs read the same database.
    let listed = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            crate::support::deskbot_command()
                .args(["dead-letters", "--json"])
                .env("DESKBOT_DATABASE_URL", url)
                .env("DESKBOT_DB", "/nonexistent/deskbot.db")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["ticket_id"], 3, "{listed}");
    let app = spawn_app_with(Options {
        database_url: Some(url.clone()),
        tickets: (1..=6)
            .map(|t| api_ticket(t, "URGENT: orders stuck"))
            .collect(),
        ..Options::default()
    })
    .await;
    eventually(20, "the three waiting tickets updated", || {
        [4, 5, 6]
            .iter()
            .all(|t| app.zendesk.ticket(*t)["priority"] == "urgent")
    })
    .await;
    // A new webhook gets an id after the copied ones, and a redelivery of a copied one is a duplicate.
    let r = app
        .post_signed(event_body("copy-7", "created", 7, "hello"))
        .await;
    assert_eq!(r.status(), 202);
    let r = app
        .post_signed(event_body("copy-5", "created", 5, "URGENT: orders stuck"))
        .await;
    assert_eq!(r.status(), 200, "a copied event is still known");
    let seventh = pg
        .activity(deskbot::queue::console::ActivityFilter {
            ticket: Some(7),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(seventh.len(), 1);
    assert!(
        seventh[0].id > 6,
        "id {} after the copied ones",
        seventh[0].id
    );
    for t in [1, 2, 3] {
        assert_ne!(
            app.zendesk.ticket(t)["priority"],
            "urgent",
            "ticket {t} was not redone"
        );
    }
    let (status, health) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        health["database"],
        serde_json::json!({"backend": "postgres", "ok": true})
    );
    app.stop().await;

    // And back to one Machine: PostgreSQL into a new SQLite file, which a second copy refuses.
    let back = dir.path().join("back.db");
    let copy_back = |to: std::path::PathBuf| {
        let from = url.clone();
        tokio::task::spawn_blocking(move || {
            crate::support::deskbot_command()
                .args(["db", "copy", "--from", &from, "--to"])
                .arg(format!("sqlite:{}", to.display()))
                .output()
                .unwrap()
        })
    };
    let out = copy_back(back.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("copied PostgreSQL into"), "{stdout}");
    let total: i64 = deskbot::queue::postgres::connect(&url)
        .await
        .unwrap()
        .query_one("SELECT COUNT(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        stdout.contains(&format!("        events: {total} rows")),
        "{stdout}"
    );
    let file = Store::open(&back).unwrap();
    assert_eq!(
        file.cursor("backfill all").await.unwrap().as_deref(),
        Some("cursor-1")
    );
    assert_eq!(file.dead_letters().await.unwrap().len(), 1);
    assert_eq!(
        crate::support::count(&back, "SELECT COUNT(*) FROM events"),
        total
    );
    let again = copy_back(back).await.unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr)
            .contains(&format!("already holds {total} jobs: copy into a new file")),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// TLS through rustls: with the CA that signed the server's certificate (`sslrootcert`), the
/// connection is encrypted; without it, `sslmode=require` refuses a server it cannot verify.
#[tokio::test]
async fn tls_to_postgres_is_verified_against_the_given_ca() {
    let Some(server) = server() else { return };
    // scripts/pg-test.sh keeps the CA beside the server, by port.
    let port = server
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    let ca = format!("/tmp/deskbot-pg-{port}/ca.pem");
    if !std::path::Path::new(&ca).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "no {ca}: the CI server comes from scripts/pg-test.sh, which makes it"
        );
        eprintln!("SKIPPED: TLS test needs a server from scripts/pg-test.sh (no {ca})");
        return;
    }
    let base = server.split_once('?').map_or(server.as_str(), |(b, _)| b);
    let verified = format!("{base}?sslmode=require&sslrootcert={ca}");
    let client = postgres::connect(&verified).await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is encrypted");
    // The store (a pool) connects the same way.
    let store = deskbot::queue::store::Store::connect(&verified)
        .await
        .unwrap();
    assert_eq!(
        store.stats(chrono::Utc::now()).await.unwrap().dead_letters,
        0
    );
    let unverified = format!("{base}?sslmode=require");
    let e = postgres::connect(&unverified)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("certificate"), "{e}");
}
