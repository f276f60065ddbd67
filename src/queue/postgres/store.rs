//! The store on PostgreSQL: the same operations and promises as the SQLite store, made safe for
//! several instances on one database.
//!
//! - Claims take each ticket's head job `FOR UPDATE SKIP LOCKED` in one transaction, so two
//!   instances never lease the same job, and a ticket's later job stays behind an older unfinished
//!   one whichever instance holds it.
//! - Every claim counts the job's leases; a settle or an extension presents that count (the
//!   fencing token), so an instance whose lease expired and was taken over changes nothing.
//! - Due timers are taken `FOR UPDATE SKIP LOCKED`, deleted and turned into jobs in one
//!   transaction: each fires once, whichever instance steps first.
//! - The Zendesk rate budget is one row per limit, updated atomically (GCRA), shared by all.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use futures_util::future::BoxFuture;
use tokio_postgres::types::ToSql;

use super::{migrate, pool, pool_error, PgError, NOTIFY_JOBS};
use crate::queue::clocks::{ms, summary, timer_event, ClockCounts, ClockSave, SummaryColumns};
use crate::queue::console::{
    activity_row, filter_sql, time, ActivityFilter, ActivityRow, AdminAction, Arg, Columns,
    EventDetail, COLUMNS, MAX_BULK, PAGE,
};
use crate::queue::store::{DeadLetter, Enqueued, Job, Lease, NewEvent, Settle, Stats, StoreError};
use crate::sla::clock::{Summary, TicketClocks};
use crate::zendesk::ratelimit::SharedBudget;

/// Most timers turned into jobs in one transaction (the rest follow on the next step).
const PROMOTE_BATCH: i64 = 512;

/// The head job of each ticket that is due and free, live lane first, oldest first.
const CLAIM_HEADS: &str = "SELECT id, ticket_id FROM events e
    WHERE state = 'pending' AND next_attempt_at <= $1
      AND (locked_until IS NULL OR locked_until <= $1)
      AND NOT EXISTS (SELECT 1 FROM events p
                      WHERE p.state = 'pending' AND p.ticket_id = e.ticket_id AND p.id < e.id)
    ORDER BY lane, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED";

/// A ticket's waiting jobs from its head on.
const CLAIM_FOLLOWERS: &str =
    "SELECT id, payload, attempts, next_attempt_at, locked_until, leases FROM events
    WHERE state = 'pending' AND ticket_id = $1 AND id >= $2
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED";

/// A dead letter back in the queue from its first attempt (`$2`: one job, or NULL for all).
const REQUEUE_DEAD: &str =
    "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = $1,
        locked_until = NULL, finished_at = NULL, result = NULL
    WHERE state = 'dead' AND ($2::bigint IS NULL OR id = $2)";

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match pool_error(e) {
            PgError::Db(e) => StoreError::Postgres(e),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

fn corrupt(id: i64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id,
        message: e.to_string(),
    }
}

/// The store in a PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    url: String,
}

impl PgStore {
    /// Connects to `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<PgStore, PgError> {
        let pool = pool(url)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        migrate(&mut client).await?;
        Ok(PgStore {
            pool,
            url: url.to_string(),
        })
    }

    /// Where it connects (for the listener's own connection).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The pool's connections, for the copy command.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) async fn enqueue(&self, ne: NewEvent) -> Result<Enqueued, StoreError> {
        let payload =
            serde_json::to_string(&ne.event).map_err(|e| StoreError::Write(e.to_string()))?;
        let at = ne.received_at.timestamp_millis();
        let ticket = ne.event.ticket_id as i64;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // A 202 promises the event survives a crash: whatever the server's default, this commit
        // waits for its WAL to reach disk. One statement with the ticket's lock (see `lock_tickets`).
        let durable = tx
            .prepare_cached(
                "SELECT set_config('synchronous_commit', 'on', true), pg_advisory_xact_lock($1)",
            )
            .await?;
        tx.execute(&durable, &[&ticket]).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO events (dedup_key, invocation_key, ticket_id, kind, payload,
                                     received_at, next_attempt_at, lane)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .await?;
        let row = tx
            .query_opt(
                &insert,
                &[
                    &ne.event.dedup_key,
                    &ne.invocation_key,
                    &ticket,
                    &ne.event.kind.as_str(),
                    &payload,
                    &at,
                    &i16::from(ne.background),
                ],
            )
            .await?;
        let out = match row {
            Some(r) => {
                if !ne.background {
                    // A live job brings its ticket's background jobs forward (as in SQLite).
                    let promote = tx
                        .prepare_cached(
                            "UPDATE events SET lane = 0
                             WHERE state = 'pending' AND ticket_id = $1 AND lane <> 0",
                        )
                        .await?;
                    tx.execute(&promote, &[&ticket]).await?;
                }
                // Delivered at commit, to every instance listening.
                tx.batch_execute(NOTIFY_JOBS).await?;
                Enqueued::Queued(r.get(0))
            }
            None => Enqueued::Duplicate,
        };
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        tickets: usize,
        per_ticket: usize,
    ) -> Result<Vec<Vec<Job>>, StoreError> {
        let now_ms = now.timestamp_millis();
        let until = now_ms + lease.as_millis() as i64;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let heads_q = tx.prepare_cached(CLAIM_HEADS).await?;
        let heads = tx
            .query(&heads_q, &[&now_ms, &(tickets.max(1) as i64)])
            .await?;
        let followers = tx.prepare_cached(CLAIM_FOLLOWERS).await?;
        let mut groups = Vec::with_capacity(heads.len());
        let mut leased: Vec<i64> = Vec::new();
        for head in heads {
            let (head_id, ticket): (i64, i64) = (head.get(0), head.get(1));
            let rows = tx
                .query(
                    &followers,
                    &[&ticket, &head_id, &(per_ticket.max(1) as i64)],
                )
                .await?;
            let mut jobs = Vec::new();
            for r in rows {
                let next: i64 = r.get(3);
                let locked: Option<i64> = r.get(4);
                // Stop at the first job that is not free: the ones after it wait for it.
                if next > now_ms || locked.is_some_and(|l| l > now_ms) {
                    break;
                }
                let id: i64 = r.get(0);
                let payload: String = r.get(1);
                let attempts: i32 = r.get(2);
                let leases: i32 = r.get(5);
                let event = serde_json::from_str(&payload).map_err(|e| corrupt(id, e))?;
                leased.push(id);
                jobs.push(Job {
                    id,
                    event,
                    attempts: attempts.max(0) as u32,
                    token: i64::from(leases) + 1,
                });
            }
            if !jobs.is_empty() {
                groups.push(jobs);
            }
        }
        if !leased.is_empty() {
            tx.execute(
                "UPDATE events SET locked_until = $2, leases = leases + 1 WHERE id = ANY($1)",
                &[&leased, &until],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(groups)
    }

    pub(crate) async fn extend(
        &self,
        leases: Vec<Lease>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Lease>, StoreError> {
        let until = until.timestamp_millis();
        let c = self.pool.get().await?;
        let mut lost = Vec::new();
        for l in leases {
            let n = c
                .execute(
                    "UPDATE events SET locked_until = $3
                     WHERE id = $1 AND leases = $2 AND state = 'pending' AND locked_until IS NOT NULL",
                    &[&l.id, &(l.token as i32), &until],
                )
                .await?;
            if n == 0 {
                lost.push(l);
            }
        }
        Ok(lost)
    }

    pub(crate) async fn release(&self, leases: Vec<Lease>) -> Result<usize, StoreError> {
        let c = self.pool.get().await?;
        let mut n = 0;
        for l in leases {
            n += c
                .execute(
                    "UPDATE events SET locked_until = NULL
                     WHERE id = $1 AND leases = $2 AND state = 'pending'",
                    &[&l.id, &(l.token as i32)],
                )
                .await?;
        }
        Ok(n as usize)
    }

    pub(crate) async fn settle(
        &self,
        results: Vec<(Lease, Settle)>,
        clocks: Vec<ClockSave>,
        matched: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Lease>, StoreError> {
        let at = now.timestamp_millis();
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let mut lost = Vec::new();
        let mut lost_tickets: Vec<i64> = Vec::new();
        for (l, result) in results {
            let token = l.token as i32;
            // Each statement is fenced: it changes nothing unless this claim still holds the job.
            // A failed try (dead or deferred) is also logged with its error.
            let (ticket, failed) = match result {
                Settle::Done { outcome } => (
                    tx.query_opt(
                        "UPDATE events SET state = 'done', outcome = $3::text, finished_at = $4,
                                locked_until = NULL, result = $3::text::jsonb ->> 'result'
                         WHERE id = $1 AND leases = $2 AND state = 'pending'
                         RETURNING ticket_id",
                        &[&l.id, &token, &outcome, &at],
                    )
                    .await?,
                    None,
                ),
                Settle::Dead { outcome, error } => (
                    tx.query_opt(
                        "UPDATE events SET state = 'dead', outcome = $3, last_error = $4,
                                finished_at = $5, locked_until = NULL, attempts = attempts + 1,
                                result = 'dead'
                         WHERE id = $1 AND leases = $2 AND state = 'pending'
                         RETURNING ticket_id",
                        &[&l.id, &token, &outcome, &error, &at],
                    )
                    .await?,
                    Some(error),
                ),
                Settle::Defer {
                    until,
                    error,
                    counts,
                } => (
                    tx.query_opt(
                        "UPDATE events SET next_attempt_at = $3, last_error = $4,
                                locked_until = NULL, attempts = attempts + $5
                         WHERE id = $1 AND leases = $2 AND state = 'pending'
                         RETURNING ticket_id",
                        &[
                            &l.id,
                            &token,
                            &until.timestamp_millis(),
                            &error,
                            &i32::from(counts),
                        ],
                    )
                    .await?,
                    Some(error),
                ),
            };
            if let (Some(_), Some(error)) = (&ticket, failed) {
                tx.execute(
                    "INSERT INTO attempts (event_id, at, error) VALUES ($1, $2, $3)",
                    &[&l.id, &at, &error],
                )
                .await?;
            }
            if ticket.is_none() {
                lost.push(l);
                let owner = tx
                    .query_opt("SELECT ticket_id FROM events WHERE id = $1", &[&l.id])
                    .await?;
                lost_tickets.extend(owner.map(|r| r.get::<_, i64>(0)));
            }
        }
        for save in clocks
            .iter()
            .filter(|s| !lost_tickets.contains(&(s.clocks.ticket_id as i64)))
        {
            write_clocks(&tx, save, at).await?;
        }
        for rule in &matched {
            tx.execute(
                "INSERT INTO rule_matches (hour, rule, n) VALUES ($1, $2, 1)
                 ON CONFLICT (hour, rule) DO UPDATE SET n = rule_matches.n + 1",
                &[&(at / 3_600_000), rule],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(lost)
    }

    pub(crate) async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_one(
                "SELECT (SELECT MIN(GREATEST(next_attempt_at, COALESCE(locked_until, 0)))
                         FROM events e WHERE state = 'pending'
                           AND NOT EXISTS (SELECT 1 FROM events p WHERE p.state = 'pending'
                                           AND p.ticket_id = e.ticket_id AND p.id < e.id)),
                        (SELECT MIN(due_at) FROM sla_timers)",
                &[],
            )
            .await?;
        let (job, timer): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        let first = match (job, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(first.and_then(DateTime::from_timestamp_millis))
    }

    pub(crate) async fn stats(&self, now: DateTime<Utc>) -> Result<Stats, StoreError> {
        let now_ms = now.timestamp_millis();
        let c = self.pool.get().await?;
        // Partial indexes answer each count; a FILTER over one scan would read every job.
        let row = c
            .query_one(
                "SELECT (SELECT COUNT(*) FROM events WHERE state = 'pending'),
                        (SELECT MIN(received_at) FROM events WHERE state = 'pending'),
                        (SELECT COUNT(*) FROM events WHERE state = 'dead')",
                &[],
            )
            .await?;
        let oldest: Option<i64> = row.get(1);
        Ok(Stats {
            depth: row.get(0),
            oldest_age_secs: oldest.map_or(0, |o| ((now_ms - o) / 1000).max(0)),
            dead_letters: row.get(2),
        })
    }

    pub(crate) async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT id, ticket_id, kind, attempts, last_error, received_at FROM events
                 WHERE state = 'dead' ORDER BY id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                id: r.get(0),
                ticket_id: r.get::<_, i64>(1) as u64,
                kind: r.get(2),
                attempts: r.get::<_, i32>(3).max(0) as u32,
                last_error: r.get(4),
                received_at: DateTime::from_timestamp_millis(r.get(5))
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
            })
            .collect())
    }

    pub(crate) async fn requeue(
        &self,
        id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let c = self.pool.get().await?;
        let n = c
            .execute(REQUEUE_DEAD, &[&now.timestamp_millis(), &id])
            .await?;
        Ok(n as usize)
    }

    pub(crate) async fn check_writable(&self) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.batch_execute("CREATE TEMP TABLE doctor_probe (x int) ON COMMIT DROP")
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn clocks(&self, ticket_id: u64) -> Result<Option<TicketClocks>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT clocks FROM sla_tickets WHERE ticket_id = $1",
                &[&(ticket_id as i64)],
            )
            .await?;
        row.map(|r| {
            serde_json::from_str(r.get(0)).map_err(|e| {
                corrupt(
                    ticket_id as i64,
                    format!("SLA clocks of ticket {ticket_id}: {e}"),
                )
            })
        })
        .transpose()
    }

    pub(crate) async fn forget_clocks(&self, ticket_id: u64) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        for table in ["sla_tickets", "sla_clocks", "sla_timers"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE ticket_id = $1"),
                &[&(ticket_id as i64)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn promote_timers(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let now_ms = now.timestamp_millis();
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Taken and deleted in one statement: an instance stepping at the same moment skips the
        // rows locked here, and finds them gone once this commits.
        let due = tx
            .query(
                "DELETE FROM sla_timers t USING (
                     SELECT ticket_id, metric, instance, kind FROM sla_timers
                     WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) d
                 WHERE t.ticket_id = d.ticket_id AND t.metric = d.metric
                   AND t.instance = d.instance AND t.kind = d.kind
                 RETURNING t.ticket_id, t.metric, t.instance, t.kind, t.due_at",
                &[&now_ms, &PROMOTE_BATCH],
            )
            .await?;
        let mut tickets: Vec<i64> = due.iter().map(|r| r.get(0)).collect();
        tickets.sort_unstable();
        tickets.dedup();
        lock_tickets(&tx, &tickets).await?;
        let mut queued = 0;
        for r in &due {
            let instance: i32 = r.get(2);
            let Some(event) = timer_event(
                r.get(0),
                r.get(1),
                instance.max(0) as u32,
                r.get(3),
                r.get(4),
            ) else {
                continue;
            };
            let payload =
                serde_json::to_string(&event).map_err(|e| StoreError::Write(e.to_string()))?;
            queued += tx
                .execute(
                    "INSERT INTO events (dedup_key, ticket_id, kind, payload, received_at, next_attempt_at)
                     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING",
                    &[
                        &event.dedup_key,
                        &(event.ticket_id as i64),
                        &event.kind.as_str(),
                        &payload,
                        &now_ms,
                    ],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(queued as usize)
    }

    pub(crate) async fn list_clocks(
        &self,
        ticket: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Summary>, StoreError> {
        let now_ms = now.timestamp_millis();
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT ticket_id, metric, instance, state, started_at, target, consumed_secs,
                        at_risk_at, due_at, fulfilled_at, zone
                 FROM sla_clocks
                 WHERE ($1::bigint IS NULL AND fulfilled_at IS NULL) OR ticket_id = $1
                 ORDER BY due_at IS NULL, due_at, ticket_id, metric, instance",
                &[&ticket.map(|t| t as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let ticket: i64 = r.get(0);
                summary(
                    SummaryColumns {
                        ticket,
                        metric: r.get(1),
                        instance: r.get::<_, i32>(2).max(0) as u32,
                        state: r.get(3),
                        started: r.get(4),
                        target: r.get(5),
                        consumed_secs: r.get(6),
                        at_risk: r.get(7),
                        due: r.get(8),
                        fulfilled: r.get(9),
                        zone: r.get(10),
                    },
                    now_ms,
                )
                .map_err(|e| corrupt(ticket, e))
            })
            .collect()
    }

    pub(crate) async fn clock_counts(&self, now: DateTime<Utc>) -> Result<ClockCounts, StoreError> {
        let now_ms = now.timestamp_millis();
        let c = self.pool.get().await?;
        let r = c
            .query_one(
                "SELECT
                    COUNT(*) FILTER (WHERE state = 'active' AND (due_at IS NULL OR due_at > $1)),
                    COUNT(*) FILTER (WHERE state = 'paused' AND (due_at IS NULL OR due_at > $1)),
                    COUNT(*) FILTER (WHERE state = 'active' AND at_risk_at <= $1
                                     AND (due_at IS NULL OR due_at > $1)),
                    COUNT(*) FILTER (WHERE due_at <= $1),
                    (SELECT COUNT(*) FROM sla_timers WHERE due_at <= $1)
                 FROM sla_clocks WHERE fulfilled_at IS NULL",
                &[&now_ms],
            )
            .await?;
        Ok(ClockCounts {
            running: r.get(0),
            paused: r.get(1),
            at_risk: r.get(2),
            breached: r.get(3),
            timers_due: r.get(4),
        })
    }

    pub(crate) async fn newest_received(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT received_at FROM events ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await?;
        Ok(row.and_then(|r| DateTime::from_timestamp_millis(r.get(0))))
    }

    pub(crate) async fn last_heard(
        &self,
        tickets: Vec<u64>,
    ) -> Result<HashMap<u64, DateTime<Utc>>, StoreError> {
        let ids: Vec<i64> = tickets.iter().map(|t| *t as i64).collect();
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT ticket_id, MAX(received_at) FROM events
                 WHERE ticket_id = ANY($1) GROUP BY ticket_id",
                &[&ids],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let at = DateTime::from_timestamp_millis(r.get(1))?;
                Some((r.get::<_, i64>(0) as u64, at))
            })
            .collect())
    }

    pub(crate) async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt("SELECT position FROM cursors WHERE name = $1", &[&name])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(crate) async fn set_cursor(
        &self,
        name: &str,
        position: Option<&str>,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        match position {
            Some(p) => {
                c.execute(
                    "INSERT INTO cursors (name, position, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET position = $2, updated_at = $3",
                    &[&name, &p, &Utc::now().timestamp()],
                )
                .await?
            }
            None => {
                c.execute("DELETE FROM cursors WHERE name = $1", &[&name])
                    .await?
            }
        };
        Ok(())
    }

    pub(crate) async fn activity(&self, f: ActivityFilter) -> Result<Vec<ActivityRow>, StoreError> {
        let c = self.pool.get().await?;
        let (cond, args) = conditions(&c, &f).await?;
        let rows = c
            .query(
                &format!("SELECT {COLUMNS} FROM events WHERE {cond} ORDER BY id DESC LIMIT {PAGE}"),
                &params(&args),
            )
            .await?;
        Ok(rows.iter().map(activity).collect())
    }

    pub(crate) async fn count_matching(&self, f: ActivityFilter) -> Result<usize, StoreError> {
        let c = self.pool.get().await?;
        let (cond, args) = conditions(&c, &f).await?;
        let n: i64 = c
            .query_one(
                &format!("SELECT COUNT(*) FROM events WHERE {cond}"),
                &params(&args),
            )
            .await?
            .get(0);
        Ok(n as usize)
    }

    pub(crate) async fn matching_ids(&self, f: ActivityFilter) -> Result<Vec<i64>, StoreError> {
        let c = self.pool.get().await?;
        let (cond, args) = conditions(&c, &f).await?;
        let rows = c
            .query(
                &format!("SELECT id FROM events WHERE {cond} ORDER BY id DESC LIMIT {MAX_BULK}"),
                &params(&args),
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) async fn event_detail(&self, id: i64) -> Result<Option<EventDetail>, StoreError> {
        let c = self.pool.get().await?;
        let Some(r) = c
            .query_opt(
                &format!(
                    "SELECT {COLUMNS}, dedup_key, payload, last_error, lane FROM events WHERE id = $1"
                ),
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let payload: String = r.get(10);
        let outcome: Option<String> = r.get(5);
        let failures = c
            .query(
                "SELECT at, error FROM attempts WHERE event_id = $1 ORDER BY at, ctid",
                &[&id],
            )
            .await?
            .iter()
            .map(|t| (time(t.get(0)), t.get(1)))
            .collect();
        Ok(Some(EventDetail {
            row: activity(&r),
            dedup_key: r.get(9),
            payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
            outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
            last_error: r.get(11),
            failures,
            background: r.get::<_, i16>(12) != 0,
        }))
    }

    pub(crate) async fn requeue_jobs(
        &self,
        ids: Vec<i64>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let at = now.timestamp_millis();
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let tickets: Vec<i64> = tx
            .query(
                "SELECT DISTINCT ticket_id FROM events WHERE id = ANY($1) ORDER BY ticket_id",
                &[&ids],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        lock_tickets(&tx, &tickets).await?;
        let mut n = 0;
        for id in &ids {
            n += tx.execute(REQUEUE_DEAD, &[&at, id]).await?;
            n += tx
                .execute(
                    "INSERT INTO events
                         (dedup_key, ticket_id, kind, payload, received_at, next_attempt_at, lane)
                     SELECT 'requeue:' || id || ':' || $2::bigint, ticket_id, kind, payload, $2, $2, 0
                     FROM events WHERE id = $1 AND state = 'done'
                     ON CONFLICT DO NOTHING",
                    &[id, &at],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(n as usize)
    }

    pub(crate) async fn record_action(&self, a: AdminAction) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO admin_actions (at, source, action, detail) VALUES ($1, $2, $3, $4)",
            &[&a.at.timestamp_millis(), &a.source, &a.action, &a.detail],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn recent_actions(
        &self,
        limit: usize,
    ) -> Result<Vec<AdminAction>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT at, source, action, detail FROM admin_actions ORDER BY id DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AdminAction {
                at: time(r.get(0)),
                source: r.get(1),
                action: r.get(2),
                detail: r.get(3),
            })
            .collect())
    }

    pub(crate) async fn hourly(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, u64, u64)>, StoreError> {
        let c = self.pool.get().await?;
        let from = id_at(&c, now - chrono::Duration::hours(24)).await?;
        let rows = c
            .query(
                "SELECT received_at / 3600000, COUNT(*), COUNT(*) FILTER (WHERE result = 'updated')
                 FROM events WHERE id >= $1 GROUP BY 1 ORDER BY 1",
                &[&from],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, i64>(1) as u64,
                    r.get::<_, i64>(2) as u64,
                )
            })
            .collect())
    }

    pub(crate) async fn rule_counts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, (u64, u64)>, StoreError> {
        let hour = now.timestamp_millis() / 3_600_000;
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT rule, SUM(CASE WHEN hour > $1::bigint - 24 THEN n ELSE 0 END)::bigint, SUM(n)::bigint
                 FROM rule_matches WHERE hour > $1::bigint - 168 GROUP BY rule",
                &[&hour],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    (r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64),
                )
            })
            .collect())
    }

    /// Takes one request from the shared budget `name` (`limit` per `span`): zero when granted,
    /// else how long until one may be (the budget's pause after a 429 included). GCRA on one row:
    /// an emission interval of `span / (limit - burst + 1)` and a tolerance of `burst - 1`
    /// intervals let no window of `span` hold more than `limit` grants, across every instance.
    pub(crate) async fn take_rate(
        &self,
        name: &str,
        limit: u32,
        span: Duration,
        now: DateTime<Utc>,
    ) -> Result<Duration, StoreError> {
        let now_ms = now.timestamp_millis();
        let (emission, tolerance) = gcra(limit, span);
        let c = self.pool.get().await?;
        loop {
            // One atomic statement decides the grant: instances racing for the row queue on its
            // lock, and each sees the tat the one before left.
            let granted = c
                .query_opt(
                    "UPDATE rate_budget SET tat = GREATEST(tat, $2) + $3
                     WHERE name = $1 AND paused_until <= $2 AND GREATEST(tat, $2) - $2 <= $4
                     RETURNING tat",
                    &[&name, &now_ms, &emission, &tolerance],
                )
                .await?;
            if granted.is_some() {
                return Ok(Duration::ZERO);
            }
            let row = c
                .query_opt(
                    "SELECT tat, paused_until FROM rate_budget WHERE name = $1",
                    &[&name],
                )
                .await?;
            match row {
                Some(r) => return Ok(rate_wait(r.get(0), r.get(1), now_ms, tolerance)),
                None => {
                    c.execute(
                        "INSERT INTO rate_budget (name, tat, paused_until) VALUES ($1, 0, 0)
                         ON CONFLICT (name) DO NOTHING",
                        &[&name],
                    )
                    .await?;
                }
            }
        }
    }

    /// Pauses the shared budget `name` until `until` (Zendesk's Retry-After), for every instance.
    pub(crate) async fn pause_rate(
        &self,
        name: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO rate_budget AS b (name, tat, paused_until) VALUES ($1, 0, $2)
             ON CONFLICT (name) DO UPDATE SET paused_until = GREATEST(b.paused_until, $2)",
            &[&name, &until.timestamp_millis()],
        )
        .await?;
        Ok(())
    }
}

impl SharedBudget for PgStore {
    fn take(
        &self,
        name: &'static str,
        limit: u32,
        span: Duration,
    ) -> BoxFuture<'_, Result<Duration, String>> {
        Box::pin(async move {
            self.take_rate(name, limit, span, Utc::now())
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn pause(&self, name: &'static str, wait: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.pause_rate(name, Utc::now() + wait)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// GCRA's emission interval and tolerance, in milliseconds, for `limit` per `span`.
fn gcra(limit: u32, span: Duration) -> (i64, i64) {
    let limit = i64::from(limit.max(1));
    let burst = (limit / 10).max(1);
    // Rounded up: a shorter interval would let a window hold one grant too many.
    let emission = (span.as_millis() as u64)
        .div_ceil((limit - burst + 1) as u64)
        .max(1) as i64;
    (emission, (burst - 1) * emission)
}

/// How long a refused take waits: until the pause after a 429 ends, or until the budget's tat
/// is back within the tolerance.
fn rate_wait(tat: i64, paused: i64, now_ms: i64, tolerance: i64) -> Duration {
    let until = paused.max(tat - tolerance);
    Duration::from_millis((until - now_ms).max(1) as u64)
}

/// Serializes the inserts of each of `tickets` (ascending, so two callers cannot deadlock) until
/// the transaction ends. Ids come from a sequence when a row is inserted, but rows become visible
/// when their transaction commits: without this, a ticket's job with a higher id could commit
/// first, be claimed as the ticket's head and finish before an older job still committing.
async fn lock_tickets(
    tx: &deadpool_postgres::Transaction<'_>,
    tickets: &[i64],
) -> Result<(), StoreError> {
    for t in tickets {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[t]).await?;
    }
    Ok(())
}

async fn write_clocks(
    tx: &deadpool_postgres::Transaction<'_>,
    save: &ClockSave,
    now_ms: i64,
) -> Result<(), StoreError> {
    let id = save.clocks.ticket_id as i64;
    let json = serde_json::to_string(&save.clocks).map_err(|e| StoreError::Write(e.to_string()))?;
    tx.execute(
        "INSERT INTO sla_tickets (ticket_id, clocks, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (ticket_id) DO UPDATE SET clocks = $2, updated_at = $3",
        &[&id, &json, &now_ms],
    )
    .await?;
    tx.execute("DELETE FROM sla_clocks WHERE ticket_id = $1", &[&id])
        .await?;
    tx.execute("DELETE FROM sla_timers WHERE ticket_id = $1", &[&id])
        .await?;
    for s in &save.summaries {
        tx.execute(
            "INSERT INTO sla_clocks (ticket_id, metric, instance, state, started_at, target,
                 consumed_secs, at_risk_at, due_at, fulfilled_at, zone)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &id,
                &s.metric.as_str(),
                &(s.instance as i32),
                &s.state.as_str(),
                &s.started_at.timestamp_millis(),
                &s.target,
                &s.consumed_secs,
                &ms(s.at_risk_at),
                &ms(s.due_at),
                &ms(s.fulfilled_at),
                &s.zone,
            ],
        )
        .await?;
    }
    for t in &save.timers {
        tx.execute(
            "INSERT INTO sla_timers (ticket_id, metric, instance, kind, due_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (ticket_id, metric, instance, kind) DO UPDATE SET due_at = $5",
            &[
                &id,
                &t.metric.as_str(),
                &(t.instance as i32),
                &t.kind.as_str(),
                &t.at.timestamp_millis(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// One activity row from a row of [`COLUMNS`].
fn activity(r: &tokio_postgres::Row) -> ActivityRow {
    activity_row(Columns {
        id: r.get(0),
        received: r.get(1),
        ticket: r.get(2),
        kind: r.get(3),
        state: r.get(4),
        outcome: r.get(5),
        attempts: r.get::<_, i32>(6).max(0) as u32,
        finished: r.get(7),
        result: r.get(8),
    })
}

fn params(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| match a {
            Arg::Text(s) => s as &(dyn ToSql + Sync),
            Arg::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect()
}

/// The WHERE clause and its values for `f` in PostgreSQL.
async fn conditions(c: &Object, f: &ActivityFilter) -> Result<(String, Vec<Arg>), StoreError> {
    let from_id = match f.from {
        Some(t) => Some(id_at(c, t).await?),
        None => None,
    };
    let to_id = match f.to {
        Some(t) => Some(id_at(c, t).await?),
        None => None,
    };
    Ok(filter_sql(f, from_id, to_id, |n| format!("${n}")))
}

/// The smallest job id received at or after `t` (ids grow with time), found through the key.
async fn id_at(c: &Object, t: DateTime<Utc>) -> Result<i64, StoreError> {
    let ms = t.timestamp_millis();
    let r = c
        .query_one(
            "SELECT COALESCE((SELECT MIN(id) FROM events), 0),
                    COALESCE((SELECT MAX(id) FROM events), 0) + 1",
            &[],
        )
        .await?;
    let (mut lo, mut hi): (i64, i64) = (r.get(0), r.get(1));
    let at = c
        .prepare_cached("SELECT received_at FROM events WHERE id >= $1 ORDER BY id LIMIT 1")
        .await?;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let received: Option<i64> = c.query_opt(&at, &[&mid]).await?.map(|r| r.get(0));
        match received {
            Some(r) if r < ms => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_never_lets_a_window_hold_more_than_the_limit() {
        // Simulate callers asking every millisecond for 3 spans: count grants per sliding window.
        for limit in [1u32, 7, 100, 700] {
            let span = Duration::from_secs(60);
            let (emission, tolerance) = gcra(limit, span);
            let mut tat = 0i64;
            let mut grants = Vec::new();
            let mut now = 0i64;
            while now < 180_000 {
                if tat.max(now) - now <= tolerance {
                    tat = tat.max(now) + emission;
                    grants.push(now);
                }
                now += 1;
            }
            let worst = grants
                .iter()
                .map(|s| {
                    grants
                        .iter()
                        .filter(|g| **g >= *s && **g < s + 60_000)
                        .count()
                })
                .max()
                .unwrap_or(0);
            // Never over; within 1 % of the limit (the interval is rounded up to a millisecond).
            assert!(worst <= limit as usize, "limit {limit}: {worst}");
            assert!(worst * 100 >= limit as usize * 99, "limit {limit}: {worst}");
        }
    }

    #[test]
    fn a_refused_take_says_how_long_to_wait() {
        let (emission, tolerance) = gcra(100, Duration::from_secs(60));
        assert_eq!((emission, tolerance), (660, 5940));
        // tat far ahead: wait until it is back within the tolerance.
        assert_eq!(
            rate_wait(10_000, 0, 1_000, tolerance),
            Duration::from_millis(10_000 - 5_940 - 1_000)
        );
        // Paused after a 429: the pause decides.
        assert_eq!(
            rate_wait(0, 9_000, 1_000, tolerance),
            Duration::from_secs(8)
        );
    }
}
