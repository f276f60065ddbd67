//! The queue on PostgreSQL: the same promises as the SQLite store (see [`QueueBackend`]), with
//! claims that several instances can make at once: head jobs are taken `FOR UPDATE SKIP LOCKED`,
//! so two instances never lease the same job, and a ticket's later job stays behind an older
//! unfinished one whichever instance holds it. One connection per instance for now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::{connect, migrate, PgError};
use crate::queue::backend::QueueBackend;
use crate::queue::store::{Enqueued, Job, NewEvent, Settle, Stats, StoreError};

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
    "SELECT id, payload, attempts, next_attempt_at, locked_until FROM events
    WHERE state = 'pending' AND ticket_id = $1 AND id >= $2
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED";

/// The queue in a PostgreSQL database.
pub struct PgQueue {
    client: Mutex<Client>,
}

impl PgQueue {
    /// Connects to `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<PgQueue, PgError> {
        let mut client = connect(url).await?;
        migrate(&mut client).await?;
        Ok(PgQueue {
            client: Mutex::new(client),
        })
    }
}

impl QueueBackend for PgQueue {
    async fn enqueue(&self, ne: NewEvent) -> Result<Enqueued, StoreError> {
        let payload =
            serde_json::to_string(&ne.event).map_err(|e| StoreError::Write(e.to_string()))?;
        let at = ne.received_at.timestamp_millis();
        let ticket = ne.event.ticket_id as i64;
        let mut c = self.client.lock().await;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "INSERT INTO events (dedup_key, invocation_key, ticket_id, kind, payload,
                                     received_at, next_attempt_at, lane)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
                 ON CONFLICT DO NOTHING RETURNING id",
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
                    tx.execute(
                        "UPDATE events SET lane = 0
                         WHERE state = 'pending' AND ticket_id = $1 AND lane <> 0",
                        &[&ticket],
                    )
                    .await?;
                }
                Enqueued::Queued(r.get(0))
            }
            None => Enqueued::Duplicate,
        };
        tx.commit().await?;
        Ok(out)
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        tickets: usize,
        per_ticket: usize,
    ) -> Result<Vec<Vec<Job>>, StoreError> {
        let now_ms = now.timestamp_millis();
        let until = now_ms + lease.as_millis() as i64;
        let mut c = self.client.lock().await;
        let tx = c.transaction().await?;
        let heads = tx
            .query(CLAIM_HEADS, &[&now_ms, &(tickets.max(1) as i64)])
            .await?;
        let mut groups = Vec::with_capacity(heads.len());
        let mut leased: Vec<i64> = Vec::new();
        for head in heads {
            let (head_id, ticket): (i64, i64) = (head.get(0), head.get(1));
            let rows = tx
                .query(
                    CLAIM_FOLLOWERS,
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
                let event = serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                    id,
                    message: e.to_string(),
                })?;
                leased.push(id);
                jobs.push(Job {
                    id,
                    event,
                    attempts: attempts.max(0) as u32,
                });
            }
            if !jobs.is_empty() {
                groups.push(jobs);
            }
        }
        tx.execute(
            "UPDATE events SET locked_until = $2, leases = leases + 1 WHERE id = ANY($1)",
            &[&leased, &until],
        )
        .await?;
        tx.commit().await?;
        Ok(groups)
    }

    async fn settle(
        &self,
        results: Vec<(i64, Settle)>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at = now.timestamp_millis();
        let mut c = self.client.lock().await;
        let tx = c.transaction().await?;
        for (id, result) in results {
            match result {
                Settle::Done { outcome } => {
                    tx.execute(
                        "UPDATE events SET state = 'done', outcome = $2::text, finished_at = $3,
                                locked_until = NULL, result = $2::text::jsonb ->> 'result'
                         WHERE id = $1",
                        &[&id, &outcome, &at],
                    )
                    .await?;
                }
                Settle::Dead { outcome, error } => {
                    tx.execute(
                        "INSERT INTO attempts (event_id, at, error) VALUES ($1, $2, $3)",
                        &[&id, &at, &error],
                    )
                    .await?;
                    tx.execute(
                        "UPDATE events SET state = 'dead', outcome = $2, last_error = $3,
                                finished_at = $4, locked_until = NULL, attempts = attempts + 1,
                                result = 'dead'
                         WHERE id = $1",
                        &[&id, &outcome, &error, &at],
                    )
                    .await?;
                }
                Settle::Defer {
                    until,
                    error,
                    counts,
                } => {
                    tx.execute(
                        "INSERT INTO attempts (event_id, at, error) VALUES ($1, $2, $3)",
                        &[&id, &at, &error],
                    )
                    .await?;
                    tx.execute(
                        "UPDATE events SET next_attempt_at = $2, last_error = $3,
                                locked_until = NULL, attempts = attempts + $4
                         WHERE id = $1",
                        &[&id, &until.timestamp_millis(), &error, &i32::from(counts)],
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<Stats, StoreError> {
        let now_ms = now.timestamp_millis();
        let c = self.client.lock().await;
        let row = c
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE state = 'pending'),
                        MIN(received_at) FILTER (WHERE state = 'pending'),
                        COUNT(*) FILTER (WHERE state = 'dead')
                 FROM events",
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
}
