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
