//! PostgreSQL: connecting (TLS through rustls unless the URL says `sslmode=disable`) and the
//! versioned schema, applied by one instance at a time under an advisory lock. A database whose
//! schema is newer than this build is refused, never downgraded.
//!
//! The tables mirror the SQLite store's (times as epoch milliseconds, so a copy between the two is
//! a column-for-column move), plus what several instances share: a lease owner per claimed job and
//! the Zendesk rate budget.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio_postgres::{Client, Config};

mod store;
#[cfg(test)]
pub(crate) mod testing;

pub use store::PgStore;

/// The advisory lock migrations take (any fixed number; "deskbot" in ASCII).
const MIGRATION_LOCK: i64 = 0x0064_6573_6b62_6f74;

/// Every schema version, in order: (version, SQL). Applied ones are never edited.
const MIGRATIONS: &[(i32, &str)] = &[(1, SCHEMA_1)];

const SCHEMA_1: &str = "
CREATE TABLE events (
    id              BIGSERIAL PRIMARY KEY,
    dedup_key       TEXT NOT NULL UNIQUE,
    invocation_key  TEXT UNIQUE,
    ticket_id       BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    received_at     BIGINT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT,
    lease_owner     TEXT,
    leases          INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    outcome         TEXT,
    finished_at     BIGINT,
    lane            SMALLINT NOT NULL DEFAULT 0,
    result          TEXT
);
CREATE INDEX pending_by_lane ON events (lane, id) WHERE state = 'pending';
CREATE INDEX pending_by_ticket ON events (ticket_id, id) WHERE state = 'pending';
CREATE INDEX dead_by_id ON events (id) WHERE state = 'dead';
CREATE INDEX events_by_ticket ON events (ticket_id, id);
CREATE INDEX events_by_result ON events (result, id) WHERE result IS NOT NULL;
CREATE TABLE attempts (
    event_id    BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    error       TEXT NOT NULL
);
CREATE INDEX attempts_by_event ON attempts (event_id);
CREATE TABLE sla_tickets (
    ticket_id   BIGINT PRIMARY KEY,
    clocks      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE sla_clocks (
    ticket_id     BIGINT NOT NULL,
    metric        TEXT NOT NULL,
    instance      INTEGER NOT NULL,
    state         TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    target        TEXT,
    consumed_secs BIGINT NOT NULL,
    at_risk_at    BIGINT,
    due_at        BIGINT,
    fulfilled_at  BIGINT,
    zone          TEXT NOT NULL,
    PRIMARY KEY (ticket_id, metric, instance)
);
CREATE INDEX open_clocks_by_due ON sla_clocks (due_at) WHERE fulfilled_at IS NULL;
CREATE TABLE sla_timers (
    ticket_id  BIGINT NOT NULL,
    metric     TEXT NOT NULL,
    instance   INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    due_at     BIGINT NOT NULL,
    PRIMARY KEY (ticket_id, metric, instance, kind)
);
CREATE INDEX timers_by_due ON sla_timers (due_at);
CREATE TABLE cursors (
    name        TEXT PRIMARY KEY,
    position    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE admin_actions (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    source      TEXT NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE TABLE rule_matches (
    hour        BIGINT NOT NULL,
    rule        TEXT NOT NULL,
    n           BIGINT NOT NULL,
    PRIMARY KEY (hour, rule)
);
CREATE TABLE rate_budget (
    name          TEXT PRIMARY KEY,
    tat           BIGINT NOT NULL,
    paused_until  BIGINT NOT NULL DEFAULT 0
);
";

/// The newest schema this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Why PostgreSQL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse.
    #[error("DESKBOT_DATABASE_URL is not a PostgreSQL URL deskbot can use ({0}); write it as postgres://USER:PASSWORD@HOST:5432/DATABASE")]
    Url(String),
    /// The server refused or could not be reached.
    #[error("PostgreSQL: {}", chain(.0))]
    Db(tokio_postgres::Error),
    /// The CA file named by `sslrootcert` cannot be used.
    #[error("sslrootcert {path}: {message} (give a PEM file of the CA that signed the server's certificate)")]
    Ca {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No connection could be had.
    #[error("PostgreSQL: {0}")]
    Pool(String),
    /// The database was migrated by a newer deskbot.
    #[error("the database's schema is version {found}, newer than this deskbot knows (up to {known}): run the newer deskbot, or point DESKBOT_DATABASE_URL at another database")]
    Newer {
        /// The database's version.
        found: i32,
        /// This build's newest.
        known: i32,
    },
}

/// An error with its causes (`error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer`): tokio-postgres keeps the telling part in the source.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}

// Not `#[from]`: that would make the error its source too, and `{:#}` would print the chain twice.
impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

/// A pool's error as PostgreSQL's own when it is one (an unreachable server, a refused login),
/// without the pool's wording around it.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> PgError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => PgError::Db(e),
        other => PgError::Pool(chain(&other)),
    }
}

/// Whether `url` names PostgreSQL (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    let u = url.trim_start();
    u.starts_with("postgres://") || u.starts_with("postgresql://")
}

/// Connections each instance keeps: the webhook handler, the worker's claims and settles, the
/// clocks and the console each take one while they run.
const POOL_SIZE: usize = 16;

/// TLS through rustls: the public web roots, plus the CA in `ca` (libpq's `sslrootcert`) for a
/// server whose certificate comes from a private CA.
fn tls(ca: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        let bad = |e: String| PgError::Ca {
            path: ca.display().to_string(),
            message: e,
        };
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

/// The connection settings in `url`, and its `sslrootcert` (which tokio-postgres does not
/// read itself: deskbot loads that CA into rustls).
fn config(url: &str) -> Result<(Config, Option<PathBuf>), PgError> {
    let (base, query) = url.trim().split_once('?').unwrap_or((url.trim(), ""));
    let mut ca = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.split_once('=') {
            Some(("sslrootcert", path)) => {
                ca = Some(PathBuf::from(path));
                false
            }
            _ => !kv.is_empty(),
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config = Config::from_str(&url).map_err(|e| PgError::Url(e.to_string()))?;
    Ok((config, ca))
}

/// A pool of connections to `url` (made when first needed, re-made when one breaks).
pub(crate) fn pool(url: &str) -> Result<deadpool_postgres::Pool, PgError> {
    let (config, ca) = config(url)?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tls(ca.as_deref())?,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

/// Connects to `url`; the connection is driven on the runtime until the client is dropped.
pub async fn connect(url: &str) -> Result<Client, PgError> {
    let (config, ca) = config(url)?;
    let (client, connection) = config.connect(tls(ca.as_deref())?).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// How a new job is announced (on the `deskbot_jobs` channel), so idle instances claim it at
/// once instead of at their next poll.
pub(crate) const NOTIFY_JOBS: &str = "NOTIFY deskbot_jobs";
const LISTEN_JOBS: &str = "LISTEN deskbot_jobs";

/// Wakes `wake` whenever any instance announces a job ([`NOTIFY_JOBS`]), until the runtime
/// stops. A hint only: the worker still polls, so a lost connection costs latency, never a job.
/// It reconnects after a failure, waiting a little longer each time (at most a minute).
pub(crate) async fn listen(url: String, wake: std::sync::Arc<tokio::sync::Notify>) {
    let mut backoff = std::time::Duration::from_secs(1);
    loop {
        match listen_once(&url, &wake).await {
            Ok(()) => backoff = std::time::Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(error = %e, "not listening for other instances' jobs; polling until this reconnects");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
    }
}

async fn listen_once(url: &str, wake: &tokio::sync::Notify) -> Result<(), PgError> {
    let (config, ca) = config(url)?;
    let (client, mut connection) = config.connect(tls(ca.as_deref())?).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = client.batch_execute(LISTEN_JOBS);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => {
                r?;
                listening = true;
            }
            m = futures_util::StreamExt::next(&mut messages) => match m {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}

/// What a migration run found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version before.
    pub from: i32,
    /// The version after.
    pub to: i32,
}

/// Brings the schema up to [`latest`], in one transaction under an advisory lock, so instances
/// starting together apply each migration once and the others wait, then find nothing to do.
pub async fn migrate(client: &mut Client) -> Result<Migrated, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS deskbot_schema (
             version     INTEGER PRIMARY KEY,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let from: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM deskbot_schema", &[])
        .await?
        .get(0);
    let known = latest();
    if from > known {
        return Err(PgError::Newer { found: from, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO deskbot_schema (version) VALUES ($1)",
            &[version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Migrated { from, to: known })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_bad_ones_explained() {
        assert!(is_postgres("postgres://u@h/db"));
        assert!(is_postgres("postgresql://u@h/db"));
        assert!(!is_postgres("sqlite:deskbot.db"));
        let e = config("postgres://u@h:notaport/db")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("DESKBOT_DATABASE_URL is not a PostgreSQL URL"),
            "{e}"
        );
    }

    #[test]
    fn sslrootcert_is_taken_out_of_the_url_for_rustls() {
        let (c, ca) =
            config("postgres://u@h/db?sslmode=require&sslrootcert=/etc/ca.pem&application_name=x")
                .unwrap();
        assert_eq!(ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(c.get_application_name(), Some("x"));
        let (_, none) = config("postgres://u@h/db").unwrap();
        assert_eq!(none, None);
        let e = tls(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("sslrootcert /nonexistent/ca.pem: "), "{e}");
    }

    #[test]
    fn versions_only_grow() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert!(versions.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(versions.first(), Some(&1));
        assert_eq!(latest(), *versions.last().unwrap());
    }
}
