//! Unit tests' databases and events: each store-level test runs on a SQLite file and, when
//! `DESKBOT_TEST_PG_URL` names a server (`scripts/pg-test.sh start`; always in CI), on a fresh
//! PostgreSQL database too.

use chrono::{DateTime, Utc};

use crate::queue::store::{NewEvent, Store};
use crate::ticket::{EventKind, Ticket};
use crate::webhook::payload::{Source, TicketEvent};

/// A live `created` event of `ticket` under `key`, received at `at`.
pub(crate) fn event(key: &str, ticket: u64, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        event: TicketEvent {
            dedup_key: key.into(),
            source: Source::Event,
            ticket_id: ticket,
            kind: EventKind::new("created"),
            occurred_at: None,
            snapshot: Ticket::default(),
            comment: None,
            current: None,
            timer: None,
            notice: None,
        },
        invocation_key: None,
        received_at: at,
        background: false,
    }
}

/// Two handles on one fresh database of each backend (as two processes or instances would
/// hold), and the directory the SQLite file lives in.
pub(crate) struct Backends {
    /// (backend name, a handle, another handle on the same database).
    pub pairs: Vec<(&'static str, Store, Store)>,
    _dir: tempfile::TempDir,
}

/// A fresh database of each backend available.
pub(crate) async fn backends() -> Backends {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("q.db");
    let mut pairs = vec![(
        "sqlite",
        Store::open(&path).expect("a SQLite store"),
        Store::open(&path).expect("a second handle"),
    )];
    match std::env::var("DESKBOT_TEST_PG_URL") {
        Ok(server) => {
            let url = fresh_database(&server).await;
            pairs.push((
                "postgres",
                Store::connect(&url).await.expect("a PostgreSQL store"),
                Store::connect(&url).await.expect("a second instance"),
            ));
        }
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "the PostgreSQL half needs DESKBOT_TEST_PG_URL (scripts/pg-test.sh start); .ci/run sets it"
            );
            eprintln!("SKIPPED: the PostgreSQL half without DESKBOT_TEST_PG_URL");
        }
    }
    Backends { pairs, _dir: dir }
}

/// A new, empty database on `server`; its URL.
async fn fresh_database(server: &str) -> String {
    let admin = super::connect(server).await.expect("the test server");
    let name = format!("deskbot_u_{}", &crate::admin::auth::random_token()[..12]);
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("a test database");
    let (base, query) = server.split_once('?').unwrap_or((server, ""));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    format!("{base}/{name}?{query}")
}
