//! The durable queue and audit log, behind one handle ([`Store`]) whichever database holds them:
//! a SQLite file (the embedded default) or PostgreSQL (several instances, `postgres/`). Everything
//! above this module calls `Store` and never learns which one runs; each method answers from the
//! backend it was opened on. An enum rather than a trait object: async methods are not
//! object-safe, and two backends do not need open extension.
//!
//! SQLite: one file in WAL mode, owned by one thread. Every database operation is a message to that thread, so there is a single writer and no
//! SQLITE_BUSY between deskbot's own tasks. Webhook inserts that arrive together are committed in
//! one transaction (group commit): each waits for the fsync of its batch, then is acknowledged.
//! `synchronous = FULL` makes a committed row survive power loss, which is what a 202 promises.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};

use super::clocks::{write_clocks, ClockSave};
use super::postgres::{PgError, PgStore};
use crate::webhook::payload::TicketEvent;
use crate::zendesk::ratelimit::SharedBudget;

/// Most inserts committed in one transaction.
const MAX_BATCH: usize = 512;
/// Messages waiting for the database thread before senders wait.
const CHANNEL_CAPACITY: usize = 4096;
/// How long SQLite waits for a lock held by another process before failing (→ 503).
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// Schema version stored in `PRAGMA user_version`. 2: the state indexes cover only the rows the
/// queue looks for (pending, dead), not every finished job. 3: SLA clocks and timers. 4: kept
/// positions in Zendesk's exports (a backfill resumes where it stopped). 5: a background lane
/// (backfill and re-apply jobs wait behind live webhooks), and jobs by ticket.
/// 6: a lease counter per job (the fencing token a settle must present).
const SCHEMA_VERSION: i32 = 6;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id              INTEGER PRIMARY KEY,
    dedup_key       TEXT NOT NULL UNIQUE,
    invocation_key  TEXT UNIQUE,
    ticket_id       INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    received_at     INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER,
    last_error      TEXT,
    outcome         TEXT,
    finished_at     INTEGER,
    lane            INTEGER NOT NULL DEFAULT 0,
    result          TEXT,
    leases          INTEGER NOT NULL DEFAULT 0
);
-- Partial indexes: a finished job leaves them, so they stay as small as the queue, and finishing a
-- job removes one entry from each instead of moving it within two indexes of every job ever seen.
-- The claim walks waiting jobs live lane first, oldest first (pending_by_lane), and checks for an
-- earlier job of the same ticket (pending_by_ticket).
DROP INDEX IF EXISTS pending_by_id;
CREATE INDEX IF NOT EXISTS pending_by_lane ON events (lane, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS pending_by_ticket ON events (ticket_id, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS dead_by_id ON events (id) WHERE state = 'dead';
-- Schema 5. A ticket's jobs: when deskbot last heard of it (a catch-up skips changes it heard),
-- and the console's activity filtered by ticket. A finished job's result (`updated`, `dead`...),
-- for the console's filter. Every failed try of a job, and every console action.
CREATE INDEX IF NOT EXISTS events_by_ticket ON events (ticket_id, id);
CREATE INDEX IF NOT EXISTS events_by_result ON events (result, id) WHERE result IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    event_id    INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    error       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_event ON attempts (event_id);
CREATE TABLE IF NOT EXISTS admin_actions (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    source      TEXT NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
-- How often each rule matched, by hour (the console's policy page).
CREATE TABLE IF NOT EXISTS rule_matches (
    hour        INTEGER NOT NULL,
    rule        TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (hour, rule)
);
-- SLA clocks (schema 3): a ticket's clocks as the pure core keeps them (JSON: starts, pauses,
-- fulfilment, fired timers), one summary row per metric instance for listing and counting, and
-- the wake-ups still to come. Written together, in one transaction, after each event.
CREATE TABLE IF NOT EXISTS sla_tickets (
    ticket_id   INTEGER PRIMARY KEY,
    clocks      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sla_clocks (
    ticket_id     INTEGER NOT NULL,
    metric        TEXT NOT NULL,
    instance      INTEGER NOT NULL,
    state         TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    target        TEXT,
    consumed_secs INTEGER NOT NULL,
    at_risk_at    INTEGER,
    due_at        INTEGER,
    fulfilled_at  INTEGER,
    zone          TEXT NOT NULL,
    PRIMARY KEY (ticket_id, metric, instance)
);
CREATE INDEX IF NOT EXISTS open_clocks_by_due ON sla_clocks (due_at) WHERE fulfilled_at IS NULL;
CREATE TABLE IF NOT EXISTS sla_timers (
    ticket_id  INTEGER NOT NULL,
    metric     TEXT NOT NULL,
    instance   INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    due_at     INTEGER NOT NULL,
    PRIMARY KEY (ticket_id, metric, instance, kind)
);
CREATE INDEX IF NOT EXISTS timers_by_due ON sla_timers (due_at);
-- Positions kept in Zendesk's exports (schema 4), by name: `backfill <selection>`.
CREATE TABLE IF NOT EXISTS cursors (
    name        TEXT PRIMARY KEY,
    position    TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- Schema 1's indexes over every row.
DROP INDEX IF EXISTS events_by_state;
DROP INDEX IF EXISTS events_by_state_id;
";

// No `LIMIT ?`: a bound LIMIT makes SQLite re-prepare the statement whenever its value changes
// (measured: every claim re-parsed both queries, 4.6 % of deskbot's CPU under load). Rows are
// produced one step at a time, so the caller stops reading after the number it wants instead.

/// The head job of each ticket that is due and free: the live lane's first, each lane oldest first.
const CLAIM_HEADS: &str = "SELECT id, ticket_id FROM events e
    WHERE state = 'pending' AND next_attempt_at <= ?1
      AND (locked_until IS NULL OR locked_until <= ?1)
      AND NOT EXISTS (SELECT 1 FROM events p
                      WHERE p.state = 'pending' AND p.ticket_id = e.ticket_id AND p.id < e.id)
    ORDER BY lane, id";
/// A live job joins its ticket's waiting background jobs to the live lane: they are decided with
/// it (one read, one update) instead of holding it back behind the whole background lane.
const PROMOTE: &str = "UPDATE events SET lane = 0
    WHERE state = 'pending' AND ticket_id = ?1 AND lane <> 0";
/// A ticket's waiting jobs from its head on (through the waiting jobs' index, not the index of
/// every job of the ticket, which SQLite may otherwise pick).
const CLAIM_FOLLOWERS: &str =
    "SELECT id, payload, attempts, next_attempt_at, locked_until, leases FROM events
    INDEXED BY pending_by_ticket
    WHERE state = 'pending' AND ticket_id = ?1 AND id >= ?2
    ORDER BY id";
/// When the first head job becomes due. Only the head job of each ticket can be claimed (same
/// predicate as `CLAIM_HEADS`), so a job waiting behind a deferred one must not wake the worker early.
const NEXT_DUE: &str = "SELECT MIN(MAX(next_attempt_at, COALESCE(locked_until, 0))) FROM events e
    WHERE state = 'pending'
      AND NOT EXISTS (SELECT 1 FROM events p
                      WHERE p.state = 'pending' AND p.ticket_id = e.ticket_id AND p.id < e.id)";

/// A claimed job given back unfinished, if this claim still holds it: `?1` id, `?2` lease token.
pub(crate) const RELEASE: &str = "UPDATE events SET locked_until = NULL
     WHERE id = ?1 AND leases = ?2 AND state = 'pending'";

/// Dead letters back in the queue from their first attempt, their result cleared: `?1` the time,
/// `?2` one job's id, or NULL for every dead letter. The CLI and the console both requeue so.
pub(crate) const REQUEUE_DEAD: &str =
    "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = ?1,
            locked_until = NULL, finished_at = NULL, result = NULL
     WHERE state = 'dead' AND (?2 IS NULL OR id = ?2)";

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (disk full, read-only, locked, corrupt...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A batch of webhook inserts failed (the message is SQLite's).
    #[error("could not store the event: {0}")]
    Write(String),
    /// A stored payload could not be read back.
    #[error("stored event {id} is unreadable: {message}")]
    Corrupt {
        /// Row id.
        id: i64,
        /// Parser message.
        message: String,
    },
    /// The database thread has stopped.
    #[error("the database thread has stopped")]
    Closed,
    /// PostgreSQL refused or could not be reached.
    #[error("database error: {}", super::postgres::chain(.0))]
    Postgres(tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("database unreachable: {0}")]
    Pool(String),
    /// An operation this backend does not offer.
    #[error("not available on this database: {0}")]
    Unsupported(&'static str),
    /// A claimed job's lease was lost (it expired and another instance took the job).
    #[error("the lease on job {0} was lost")]
    LostLease(i64),
    /// The file could not be opened.
    #[error("cannot open database {path}: {message}")]
    Open {
        /// DB path.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

// Not `#[from]`: the message already carries the causes; a source would print them twice.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// What happened to an enqueued event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored as a new job with this id.
    Queued(i64),
    /// Already stored (same event id or invocation id): nothing new queued.
    Duplicate,
}

/// An event to store, with the delivery key from the request headers.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The normalized event.
    pub event: TicketEvent,
    /// `X-Zendesk-Webhook-Invocation-Id` (with the webhook id), when present.
    pub invocation_key: Option<String>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// Waits behind live jobs (a backfill's or a re-apply's); a live job of the same ticket
    /// brings it forward.
    pub background: bool,
}

/// A job claimed by the worker.
#[derive(Debug, Clone)]
pub struct Job {
    /// Row id.
    pub id: i64,
    /// The event.
    pub event: TicketEvent,
    /// Failed tries so far.
    pub attempts: u32,
    /// Which lease of the job this claim holds: a settle or an extension must present it, so a
    /// holder whose lease expired (and was taken over) changes nothing.
    pub token: i64,
}

impl Job {
    /// The lease this claim holds.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            token: self.token,
        }
    }
}

/// A claimed job's id with its lease token (the fencing token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// Row id.
    pub id: i64,
    /// The job's lease count when it was claimed.
    pub token: i64,
}

/// How a claimed job ended, as [`Store::settle`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Done, with its audit record (JSON).
    Done {
        /// Audit record.
        outcome: String,
    },
    /// Gave up: listed as a dead letter.
    Dead {
        /// Audit record.
        outcome: String,
        /// Why.
        error: String,
    },
    /// Waits until `until`; `counts` says whether this try counts toward the limit.
    Defer {
        /// When it is due again.
        until: DateTime<Utc>,
        /// Why.
        error: String,
        /// Counts toward `max_attempts`.
        counts: bool,
    },
}

/// Queue counts for /healthz and /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Jobs waiting.
    pub depth: i64,
    /// Age of the oldest waiting job, in seconds (0 when none).
    pub oldest_age_secs: i64,
    /// Dead letters.
    pub dead_letters: i64,
}

/// A job that gave up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Row id.
    pub id: i64,
    /// Ticket.
    pub ticket_id: u64,
    /// Event kind.
    pub kind: String,
    /// Tries made.
    pub attempts: u32,
    /// Last error.
    pub last_error: Option<String>,
    /// When it was received (RFC 3339).
    pub received_at: String,
}

type Task = Box<dyn FnOnce(&mut Connection) + Send>;
/// Where the database thread answers one insert (the error is SQLite's message).
type Reply = oneshot::Sender<Result<Enqueued, String>>;

enum Msg {
    Enqueue(Box<NewEvent>, Reply),
    Run(Task),
}

/// Handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    notify: Arc<Notify>,
}

#[derive(Clone)]
enum Backend {
    /// Messages to the database thread.
    Sqlite(mpsc::Sender<Msg>),
    Postgres(Arc<PgStore>),
}

/// Which database a store runs on, for /healthz and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;
        if (1..5).contains(&version) {
            // Jobs finished before the upgrade keep `result` empty (the console reads theirs from
            // the outcome): filling it would rewrite every row while webhooks wait.
            conn.execute_batch(
                "ALTER TABLE events ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE events ADD COLUMN result TEXT;",
            )
            .map_err(|e| open_err(e.to_string()))?;
        }
        if (1..6).contains(&version) {
            conn.execute_batch("ALTER TABLE events ADD COLUMN leases INTEGER NOT NULL DEFAULT 0;")
                .map_err(|e| open_err(e.to_string()))?;
        }
        if version > SCHEMA_VERSION {
            return Err(open_err(format!(
                "it was written by a newer deskbot (schema {version}; this build knows up to {SCHEMA_VERSION}): run that version, or start this one on a new file with DESKBOT_DB"
            )));
        }
        conn.busy_timeout(BUSY_TIMEOUT)
            .and_then(|_| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .and_then(|_| conn.pragma_update(None, "user_version", SCHEMA_VERSION))
            .map_err(|e| open_err(e.to_string()))?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        std::thread::Builder::new()
            .name("deskbot-db".into())
            .spawn(move || db_thread(conn, rx))
            .map_err(|e| open_err(format!("cannot start the database thread: {e}")))?;
        Ok(Store {
            backend: Backend::Sqlite(tx),
            notify: Arc::new(Notify::new()),
        })
    }

    /// Connects to PostgreSQL at `url` (a pool), bringing its schema up to date first.
    pub async fn connect(url: &str) -> Result<Store, PgError> {
        Ok(Store {
            backend: Backend::Postgres(Arc::new(PgStore::open(url).await?)),
            notify: Arc::new(Notify::new()),
        })
    }

    /// Which database this store runs on.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Wakes this store's worker when another instance queues a job (PostgreSQL's LISTEN), for as
    /// long as the runtime runs; nothing to do on SQLite, where every job is queued here.
    pub fn listen_for_other_instances(&self) {
        if let Backend::Postgres(pg) = &self.backend {
            tokio::spawn(super::postgres::listen(
                pg.url().to_string(),
                self.notify.clone(),
            ));
        }
    }

    /// The Zendesk rate budget shared with the other instances on this database (PostgreSQL);
    /// `None` for SQLite, whose one process keeps the budget itself.
    pub fn shared_budget(&self) -> Option<Arc<dyn SharedBudget>> {
        match &self.backend {
            Backend::Postgres(pg) => Some(pg.clone() as Arc<dyn SharedBudget>),
            Backend::Sqlite(_) => None,
        }
    }

    /// The PostgreSQL backend, when that is what runs.
    pub(crate) fn pg(&self) -> Option<&PgStore> {
        match &self.backend {
            Backend::Postgres(pg) => Some(pg),
            Backend::Sqlite(_) => None,
        }
    }

    /// Stores an event durably; returns once it is committed (or found to be a duplicate).
    pub async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, StoreError> {
        let result = match &self.backend {
            Backend::Postgres(pg) => pg.enqueue(event).await?,
            Backend::Sqlite(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send(Msg::Enqueue(Box::new(event), reply))
                    .await
                    .map_err(|_| StoreError::Closed)?;
                rx.await
                    .map_err(|_| StoreError::Closed)?
                    .map_err(StoreError::Write)?
            }
        };
        if let Enqueued::Queued(_) = result {
            self.notify.notify_one();
        }
        Ok(result)
    }

    /// Wakes the worker: a job was queued other than through [`Store::enqueue`].
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// Waits until a new job is queued (or returns at once if one was queued since the last call).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Runs `f` on the SQLite database thread (callers answer PostgreSQL stores before this).
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Backend::Sqlite(tx) = &self.backend else {
            return Err(StoreError::Unsupported("a SQLite statement on PostgreSQL"));
        };
        let (reply, rx) = oneshot::channel();
        let task: Task = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        tx.send(Msg::Run(task))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// At start-up, frees the jobs a previous stop left leased. SQLite: every lease, since one
    /// process owns the file and none of its jobs can be in flight. PostgreSQL: none, since other
    /// instances may be working; a lease that expired is taken over by the next claim instead.
    pub async fn resume_interrupted(&self) -> Result<usize, StoreError> {
        if self.pg().is_some() {
            return Ok(0);
        }
        self.call(|c| {
            Ok(c.execute(
                "UPDATE events SET locked_until = NULL WHERE state = 'pending' AND locked_until IS NOT NULL",
                [],
            )?)
        })
        .await
    }

    /// Claims the due jobs of up to `tickets` tickets, oldest first and never overtaking an earlier
    /// job of the same ticket: one group per ticket, its head job and the jobs waiting right behind
    /// it (at most `per_ticket`), so that they become one read and one update. Empty when nothing
    /// is due. All are leased in one transaction.
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        tickets: usize,
        per_ticket: usize,
    ) -> Result<Vec<Vec<Job>>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.claim(now, lease, tickets, per_ticket).await;
        }
        let now_ms = now.timestamp_millis();
        let until = now_ms + lease.as_millis() as i64;
        let groups = self
            .call(move |c| lease_groups(c, now_ms, until, tickets, per_ticket))
            .await?;
        // Parsed here, not on the database thread, which every webhook insert waits for.
        groups
            .into_iter()
            .map(|rows| {
                rows.into_iter()
                    .map(|(id, payload, attempts, token)| {
                        let event =
                            serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                                id,
                                message: e.to_string(),
                            })?;
                        Ok(Job {
                            id,
                            event,
                            attempts,
                            token,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// When the next pending job, or the next SLA timer, becomes due, if any.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.next_due().await;
        }
        self.call(|c| {
            let job: Option<i64> = c.query_row(NEXT_DUE, [], |r| r.get(0))?;
            let timer: Option<i64> = c
                .prepare_cached("SELECT MIN(due_at) FROM sla_timers")?
                .query_row([], |r| r.get(0))?;
            let first = match (job, timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            Ok(first.and_then(DateTime::from_timestamp_millis))
        })
        .await
    }

    /// Keeps claimed jobs leased until `until` (a heartbeat while they run); returns the leases
    /// that were lost (expired and taken over, or settled), which are not extended.
    pub async fn extend(
        &self,
        leases: Vec<Lease>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Lease>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.extend(leases, until).await;
        }
        let until = until.timestamp_millis();
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut lost = Vec::new();
            {
                let mut extend = tx.prepare_cached(
                    "UPDATE events SET locked_until = ?3
                     WHERE id = ?1 AND leases = ?2 AND state = 'pending' AND locked_until IS NOT NULL",
                )?;
                for l in leases {
                    if extend.execute(params![l.id, l.token, until])? == 0 {
                        lost.push(l);
                    }
                }
            }
            tx.commit()?;
            Ok(lost)
        })
        .await
    }

    /// Gives claimed jobs back unfinished (a stop cut them short), so any instance may take them
    /// at once; a lease since taken over is left alone. Returns how many were freed.
    pub async fn release(&self, leases: Vec<Lease>) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.release(leases).await;
        }
        self.call(move |c| {
            let mut stmt = c.prepare_cached(RELEASE)?;
            let mut n = 0;
            for l in leases {
                n += stmt.execute(params![l.id, l.token])?;
            }
            Ok(n)
        })
        .await
    }

    /// Records how each claimed job ended, all in one transaction; returns the leases that were
    /// lost, whose results are not recorded.
    pub async fn settle(
        &self,
        results: Vec<(Lease, Settle)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Lease>, StoreError> {
        self.settle_with_clocks(results, Vec::new(), Vec::new(), now)
            .await
    }

    /// Records how each claimed job ended together with the SLA clocks those jobs moved, all in
    /// one transaction: a crash leaves both as they were or both done.
    /// `matched` names the rules the jobs' decisions matched (one entry per match), counted by
    /// hour for the console.
    /// A job whose lease was lost records nothing, and neither do its ticket's clocks: the
    /// instance that took the job over records them.
    pub async fn settle_with_clocks(
        &self,
        results: Vec<(Lease, Settle)>,
        clocks: Vec<ClockSave>,
        matched: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Lease>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.settle(results, clocks, matched, now).await;
        }
        let at = now.timestamp_millis();
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut lost = Vec::new();
            let mut lost_tickets = Vec::new();
            {
                // Each update is fenced: it changes nothing unless this claim still holds the job.
                let mut finish = tx.prepare_cached(
                    "UPDATE events SET state = ?2, outcome = ?3, last_error = COALESCE(?4, last_error),
                            finished_at = ?5, locked_until = NULL, attempts = attempts + (?4 IS NOT NULL),
                            result = CASE ?2 WHEN 'dead' THEN 'dead' ELSE json_extract(?3, '$.result') END
                     WHERE id = ?1 AND leases = ?6 AND state = 'pending'",
                )?;
                let mut defer = tx.prepare_cached(
                    "UPDATE events SET next_attempt_at = ?2, last_error = ?3, locked_until = NULL,
                            attempts = attempts + ?4
                     WHERE id = ?1 AND leases = ?5 AND state = 'pending'",
                )?;
                let mut attempt = tx.prepare_cached(
                    "INSERT INTO attempts (event_id, at, error) VALUES (?1, ?2, ?3)",
                )?;
                let mut owner =
                    tx.prepare_cached("SELECT ticket_id FROM events WHERE id = ?1")?;
                for (l, result) in results {
                    let (id, token) = (l.id, l.token);
                    // A failed try (dead or deferred) is also logged with its error.
                    let (held, failed) = match result {
                        Settle::Done { outcome } => (
                            finish.execute(params![id, "done", outcome, None::<String>, at, token])?,
                            None,
                        ),
                        Settle::Dead { outcome, error } => (
                            finish.execute(params![id, "dead", outcome, Some(&error), at, token])?,
                            Some(error),
                        ),
                        Settle::Defer {
                            until,
                            error,
                            counts,
                        } => (
                            defer.execute(params![
                                id,
                                until.timestamp_millis(),
                                error,
                                i64::from(counts),
                                token
                            ])?,
                            Some(error),
                        ),
                    };
                    if held == 0 {
                        lost.push(l);
                        let t: Option<i64> = owner.query_row([id], |r| r.get(0)).optional()?;
                        lost_tickets.extend(t.map(|t| t as u64));
                    } else if let Some(error) = failed {
                        attempt.execute(params![id, at, error])?;
                    }
                }
            }
            for save in clocks
                .iter()
                .filter(|c| !lost_tickets.contains(&c.clocks.ticket_id))
            {
                write_clocks(&tx, save, at)?;
            }
            if !matched.is_empty() {
                let mut count = tx.prepare_cached(
                    "INSERT INTO rule_matches (hour, rule, n) VALUES (?1, ?2, 1)
                     ON CONFLICT (hour, rule) DO UPDATE SET n = n + 1",
                )?;
                for rule in &matched {
                    count.execute(params![at / 3_600_000, rule])?;
                }
            }
            tx.commit()?;
            Ok(lost)
        })
        .await
    }

    /// Counts for /healthz and /metrics.
    pub async fn stats(&self, now: DateTime<Utc>) -> Result<Stats, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.stats(now).await;
        }
        let now_ms = now.timestamp_millis();
        self.call(move |c| {
            let (depth, oldest): (i64, Option<i64>) = c.query_row(
                "SELECT COUNT(*), MIN(received_at) FROM events WHERE state = 'pending'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let dead: i64 = c.query_row(
                "SELECT COUNT(*) FROM events WHERE state = 'dead'",
                [],
                |r| r.get(0),
            )?;
            Ok(Stats {
                depth,
                oldest_age_secs: oldest.map_or(0, |o| ((now_ms - o) / 1000).max(0)),
                dead_letters: dead,
            })
        })
        .await
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.dead_letters().await;
        }
        self.call(|c| {
            let mut stmt = c.prepare(
                "SELECT id, ticket_id, kind, attempts, last_error, received_at FROM events
                 WHERE state = 'dead' ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                let received: i64 = r.get(5)?;
                Ok(DeadLetter {
                    id: r.get(0)?,
                    ticket_id: r.get::<_, i64>(1)? as u64,
                    kind: r.get(2)?,
                    attempts: r.get(3)?,
                    last_error: r.get(4)?,
                    received_at: DateTime::from_timestamp_millis(received)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Puts dead letters back in the queue (all when `id` is `None`); returns how many.
    pub async fn requeue(&self, id: Option<i64>, now: DateTime<Utc>) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.requeue(id, now).await;
        }
        let at = now.timestamp_millis();
        self.call(move |c| Ok(c.execute(REQUEUE_DEAD, params![at, id])?))
            .await
    }

    /// Takes and releases the write lock: fails when the file cannot be written (read-only, full, locked).
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg.check_writable().await;
        }
        self.call(|c| {
            c.execute_batch("BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS doctor_probe(x); DROP TABLE doctor_probe; COMMIT;")?;
            Ok(())
        })
        .await
    }
}

/// A ticket's leased jobs as stored: id, payload, attempts, lease token.
type LeasedRows = Vec<(i64, String, u32, i64)>;

/// The database-thread half of [`Store::claim`]: picks the groups and leases them until `until`.
fn lease_groups(
    c: &mut Connection,
    now_ms: i64,
    until: i64,
    tickets: usize,
    per_ticket: usize,
) -> Result<Vec<LeasedRows>, StoreError> {
    // IMMEDIATE: the claim writes (leases) after reading; taking the write lock first makes a
    // second process sharing the file wait its turn (busy timeout) instead of failing to upgrade.
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let heads: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare_cached(CLAIM_HEADS)?;
        let rows = stmt.query_map(params![now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.take(tickets.max(1)).collect::<Result<_, _>>()?
    };
    let mut groups = Vec::with_capacity(heads.len());
    {
        let mut followers = tx.prepare_cached(CLAIM_FOLLOWERS)?;
        let mut lock = tx.prepare_cached(
            "UPDATE events SET locked_until = ?2, leases = leases + 1 WHERE id = ?1",
        )?;
        for (head_id, ticket_id) in heads {
            let mut rows = Vec::new();
            let mut q = followers.query(params![ticket_id, head_id])?;
            while rows.len() < per_ticket.max(1) {
                let Some(r) = q.next()? else { break };
                let free = r.get::<_, i64>(3)? <= now_ms
                    && r.get::<_, Option<i64>>(4)?.is_none_or(|l| l <= now_ms);
                // Stop at the first job that is not free: the ones after it wait for it.
                if !free {
                    break;
                }
                rows.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(5)? + 1));
            }
            for (id, _, _, _) in &rows {
                lock.execute(params![id, until])?;
            }
            groups.push(rows);
        }
    }
    tx.commit()?;
    Ok(groups)
}

fn db_thread(mut conn: Connection, mut rx: mpsc::Receiver<Msg>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::new();
        let mut after = None;
        match first {
            Msg::Run(task) => task(&mut conn),
            Msg::Enqueue(ev, reply) => {
                batch.push((ev, reply));
                // Group commit: take every insert already waiting, up to a bound.
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Msg::Enqueue(ev, reply)) => batch.push((ev, reply)),
                        Ok(Msg::Run(task)) => {
                            after = Some(task);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        if !batch.is_empty() {
            insert_batch(&mut conn, batch);
        }
        if let Some(task) = after {
            task(&mut conn);
        }
    }
}

fn insert_batch(conn: &mut Connection, batch: Vec<(Box<NewEvent>, Reply)>) {
    let result = (|| -> Result<Vec<Enqueued>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(batch.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO events
                     (dedup_key, invocation_key, ticket_id, kind, payload, received_at, next_attempt_at, lane)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            )?;
            let mut promote = tx.prepare_cached(PROMOTE)?;
            for (ne, _) in &batch {
                let payload = serde_json::to_string(&ne.event)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                let n = stmt.execute(params![
                    ne.event.dedup_key,
                    ne.invocation_key,
                    ne.event.ticket_id as i64,
                    ne.event.kind.as_str(),
                    payload,
                    ne.received_at.timestamp_millis(),
                    i64::from(ne.background),
                ])?;
                if n == 1 && !ne.background {
                    promote.execute(params![ne.event.ticket_id as i64])?;
                }
                out.push(if n == 1 {
                    Enqueued::Queued(tx.last_insert_rowid())
                } else {
                    Enqueued::Duplicate
                });
            }
        }
        tx.commit()?;
        Ok(out)
    })();
    match result {
        Ok(out) => {
            for ((_, reply), r) in batch.into_iter().zip(out) {
                let _ = reply.send(Ok(r));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(msg.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, ticket: u64) -> NewEvent {
        crate::queue::postgres::testing::event(key, ticket, Utc::now())
    }

    /// The ids `claim` hands out, one job per claim.
    async fn claim_one(s: &Store, now: DateTime<Utc>, lease: Duration) -> Option<Job> {
        let mut groups = s.claim(now, lease, 1, 1).await.unwrap();
        assert!(groups.len() <= 1);
        let mut jobs = groups.pop()?;
        assert_eq!(jobs.len(), 1);
        jobs.pop()
    }

    /// The ids of claimed groups, group by group.
    fn ids(groups: &[Vec<Job>]) -> Vec<Vec<i64>> {
        groups
            .iter()
            .map(|g| g.iter().map(|j| j.id).collect())
            .collect()
    }

    fn defer(until: DateTime<Utc>, counts: bool) -> Settle {
        Settle::Defer {
            until,
            error: "503".into(),
            counts,
        }
    }

    fn done() -> Settle {
        Settle::Done {
            outcome: "{}".into(),
        }
    }

    fn l(id: i64, token: i64) -> Lease {
        Lease { id, token }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn jobs_of_one_ticket_never_overtake_each_other() {
        let (_dir, s) = store();
        let lease = Duration::from_secs(60);
        assert_eq!(s.enqueue(event("a", 1)).await.unwrap(), Enqueued::Queued(1));
        assert_eq!(s.enqueue(event("b", 1)).await.unwrap(), Enqueued::Queued(2));
        assert_eq!(s.enqueue(event("c", 2)).await.unwrap(), Enqueued::Queued(3));
        assert_eq!(s.enqueue(event("a", 1)).await.unwrap(), Enqueued::Duplicate);
        let now = Utc::now();

        let first = claim_one(&s, now, lease).await.unwrap();
        assert_eq!(first.id, 1);
        // Job 1 is leased: job 2 (same ticket) must wait, job 3 (other ticket) may go.
        assert_eq!(claim_one(&s, now, lease).await.unwrap().id, 3);
        assert!(claim_one(&s, now, lease).await.is_none());

        // Deferring job 1 still holds job 2 back until job 1 is done.
        let later = now + chrono::Duration::seconds(30);
        s.settle(vec![(l(1, 1), defer(later, true))], now)
            .await
            .unwrap();
        assert!(claim_one(&s, now, lease).await.is_none());
        // Job 2 is due by its own time but blocked behind job 1: the next wake-up is job 1's.
        assert_eq!(
            s.next_due().await.unwrap().map(|t| t.timestamp_millis()),
            Some(later.timestamp_millis())
        );
        let again = claim_one(&s, later, lease).await.unwrap();
        assert_eq!((again.id, again.attempts), (1, 1));
        s.settle(vec![(l(1, 2), done())], later).await.unwrap();
        assert_eq!(claim_one(&s, later, lease).await.unwrap().id, 2);
    }

    #[tokio::test]
    async fn a_claim_takes_the_jobs_waiting_behind_the_head_in_order() {
        let (_dir, s) = store();
        let lease = Duration::from_secs(60);
        for (key, ticket) in [("a", 1), ("b", 2), ("c", 1), ("d", 1), ("e", 1)] {
            s.enqueue(event(key, ticket)).await.unwrap();
        }
        let now = Utc::now();
        let none: Vec<Vec<i64>> = Vec::new();
        assert_eq!(
            ids(&s.claim(now, lease, 1, 3).await.unwrap()),
            vec![vec![1, 3, 4]]
        );
        assert_eq!(
            ids(&s.claim(now, lease, 1, 3).await.unwrap()),
            vec![vec![2]]
        );
        // Job 5 waits behind the leased group of its ticket.
        assert_eq!(ids(&s.claim(now, lease, 9, 3).await.unwrap()), none);
        // A group deferred and settled in one go comes back whole, with 5 after it.
        let later = now + chrono::Duration::seconds(5);
        s.settle(
            vec![
                (l(1, 1), defer(later, false)),
                (l(3, 1), defer(later, false)),
                (l(4, 1), done()),
            ],
            now,
        )
        .await
        .unwrap();
        assert_eq!(ids(&s.claim(now, lease, 9, 9).await.unwrap()), none);
        assert_eq!(
            ids(&s.claim(later, lease, 9, 9).await.unwrap()),
            vec![vec![1, 3, 5]]
        );
    }

    #[tokio::test]
    async fn a_claim_takes_one_group_per_ticket_oldest_first() {
        let (_dir, s) = store();
        for (key, ticket) in [("a", 1), ("b", 2), ("c", 1), ("d", 3), ("e", 4)] {
            s.enqueue(event(key, ticket)).await.unwrap();
        }
        let now = Utc::now();
        let groups = s.claim(now, Duration::from_secs(60), 3, 9).await.unwrap();
        assert_eq!(ids(&groups), vec![vec![1, 3], vec![2], vec![4]]);
    }

    #[tokio::test]
    async fn a_lease_expires_and_release_frees_it_at_once() {
        let (_dir, s) = store();
        s.enqueue(event("a", 1)).await.unwrap();
        let now = Utc::now();
        let lease = Duration::from_secs(60);
        assert!(claim_one(&s, now, lease).await.is_some());
        assert!(claim_one(&s, now, lease).await.is_none());
        let after = now + chrono::Duration::seconds(61);
        assert!(claim_one(&s, after, lease).await.is_some());
        assert_eq!(s.resume_interrupted().await.unwrap(), 1);
        assert!(claim_one(&s, now, lease).await.is_some());
    }

    #[tokio::test]
    async fn concurrent_inserts_are_all_committed_once() {
        let (_dir, s) = store();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.enqueue(event(&format!("k{}", i % 150), i)).await })
            })
            .collect();
        let mut queued = 0;
        let mut dup = 0;
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Enqueued::Queued(_) => queued += 1,
                Enqueued::Duplicate => dup += 1,
            }
        }
        assert_eq!((queued, dup), (150, 50));
        assert_eq!(s.stats(Utc::now()).await.unwrap().depth, 150);
    }

    /// A plain connection to a new file that `Store::open` has given the current schema.
    fn current_schema() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        drop(Store::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        (dir, c)
    }

    /// Names of the indexes on `events` that SQLite did not create itself.
    fn indexes(path: &Path) -> Vec<String> {
        let c = Connection::open(path).unwrap();
        let mut stmt = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.collect::<Result<_, _>>().unwrap()
    }

    #[tokio::test]
    async fn a_schema_1_database_is_upgraded_and_keeps_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE events (
                     id INTEGER PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE, invocation_key TEXT UNIQUE,
                     ticket_id INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
                     received_at INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
                     attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL,
                     locked_until INTEGER, last_error TEXT, outcome TEXT, finished_at INTEGER);
                 CREATE INDEX events_by_state ON events (state, ticket_id, id);
                 CREATE INDEX events_by_state_id ON events (state, id);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
            let payload = serde_json::to_string(&event("old", 9).event).unwrap();
            c.execute(
                "INSERT INTO events (dedup_key, ticket_id, kind, payload, received_at, next_attempt_at)
                 VALUES ('old', 9, 'created', ?1, 0, 0)",
                [payload],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            indexes(&path),
            [
                "attempts_by_event",
                "dead_by_id",
                "events_by_result",
                "events_by_ticket",
                "open_clocks_by_due",
                "pending_by_lane",
                "pending_by_ticket",
                "timers_by_due"
            ]
        );
        let version: i32 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 6);
        assert_eq!(
            s.enqueue(event("old", 9)).await.unwrap(),
            Enqueued::Duplicate
        );
        let job = claim_one(&s, Utc::now(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!((job.id, job.event.ticket_id, job.token), (1, 9, 1));
    }

    #[test]
    fn a_database_from_a_newer_deskbot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v9.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 9;")
            .unwrap();
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("written by a newer deskbot (schema 9; this build knows up to 6)"),
            "{err}"
        );
    }

    #[test]
    fn the_queue_queries_read_only_the_waiting_jobs_index() {
        let (_dir, c) = current_schema();
        let plan = |sql: &str, args: usize| -> Vec<String> {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let params = vec![1i64; args];
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |r| r.get(3))
                .unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        // A walk of every job ever received would slow each claim as the audit log grows.
        assert_eq!(
            plan(CLAIM_HEADS, 1),
            [
                "SCAN e USING INDEX pending_by_lane",
                "CORRELATED SCALAR SUBQUERY 1",
                "SEARCH p USING COVERING INDEX pending_by_ticket (ticket_id=? AND id<?)"
            ]
        );
        assert_eq!(
            plan(CLAIM_FOLLOWERS, 2),
            ["SEARCH events USING INDEX pending_by_ticket (ticket_id=? AND id>?)"]
        );
        assert_eq!(
            plan(NEXT_DUE, 0),
            [
                "SEARCH e USING INDEX pending_by_ticket",
                "CORRELATED SCALAR SUBQUERY 1",
                "SEARCH p USING COVERING INDEX pending_by_ticket (ticket_id=? AND id<?)"
            ]
        );
    }

    #[test]
    fn claims_reuse_their_prepared_statements() {
        let (_dir, mut c) = current_schema();
        c.execute_batch(
            "INSERT INTO events (dedup_key, ticket_id, kind, payload, received_at, next_attempt_at)
             VALUES ('a', 1, 'k', '{}', 0, 0), ('b', 2, 'k', '{}', 0, 0), ('c', 1, 'k', '{}', 0, 0)",
        )
        .unwrap();
        // Different bindings each time, as in the worker's loop.
        for (now, tickets, per_ticket) in [(1, 1, 1), (2, 8, 64), (3, 2, 2)] {
            lease_groups(&mut c, now, now, tickets, per_ticket).unwrap();
        }
        for sql in [CLAIM_HEADS, CLAIM_FOLLOWERS] {
            let stmt = c.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
    }

    #[tokio::test]
    async fn background_jobs_wait_behind_live_ones_until_their_ticket_has_a_live_job() {
        let (_dir, s) = store();
        let background = |key: &str, ticket| NewEvent {
            background: true,
            ..event(key, ticket)
        };
        s.enqueue(background("b1", 1)).await.unwrap();
        s.enqueue(background("b2", 2)).await.unwrap();
        s.enqueue(event("live3", 3)).await.unwrap();
        let now = Utc::now() + chrono::Duration::seconds(5);
        let lease = Duration::from_secs(60);
        // The live job first, though it came last.
        assert_eq!(ids(&s.claim(now, lease, 1, 8).await.unwrap()), [[3]]);
        // A live job of ticket 2 brings ticket 2's background job forward, and they go together.
        s.enqueue(event("live2", 2)).await.unwrap();
        assert_eq!(ids(&s.claim(now, lease, 1, 8).await.unwrap()), [[2, 4]]);
        assert_eq!(ids(&s.claim(now, lease, 1, 8).await.unwrap()), [[1]]);
        assert!(s.claim(now, lease, 1, 8).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn dead_letters_are_listed_and_requeued() {
        let (_dir, s) = store();
        s.enqueue(event("a", 7)).await.unwrap();
        let now = Utc::now();
        let dead = Settle::Dead {
            outcome: "{}".into(),
            error: "Zendesk answered 422".into(),
        };
        // Never claimed: its lease count is 0.
        s.settle(vec![(l(1, 0), dead)], now).await.unwrap();
        let dead = s.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].ticket_id, dead[0].attempts), (7, 1));
        assert_eq!(dead[0].last_error.as_deref(), Some("Zendesk answered 422"));
        assert_eq!(s.requeue(None, now).await.unwrap(), 1);
        assert_eq!(s.stats(now).await.unwrap().dead_letters, 0);
        // Waiting again, it no longer counts among the dead in the console's result filter.
        let dead_filter = crate::queue::console::ActivityFilter {
            result: Some("dead".into()),
            ..Default::default()
        };
        assert_eq!(s.count_matching(dead_filter).await.unwrap(), 0);
        assert_eq!(
            claim_one(&s, now, Duration::from_secs(1))
                .await
                .unwrap()
                .attempts,
            0
        );
    }
}
