//! SLA clocks and timers in the queue's database: a ticket's clocks are saved with their summary
//! rows and their wake-ups in one transaction, and due wake-ups become jobs in the same queue.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::store::{Store, StoreError};
use crate::sla::clock::{Metric, State, Summary, TicketClocks, Timer, TimerKind};
use crate::webhook::payload::TicketEvent;

/// Most timers turned into jobs in one transaction (the rest follow on the next step).
const PROMOTE_BATCH: usize = 512;

/// Counts of clocks for /healthz and /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClockCounts {
    /// Open clocks running (not paused), not yet breached.
    pub running: i64,
    /// Open clocks paused.
    pub paused: i64,
    /// Running clocks past their at-risk instant, not yet breached.
    pub at_risk: i64,
    /// Open clocks past their due instant.
    pub breached: i64,
    /// Timers due now and not yet turned into jobs.
    pub timers_due: i64,
}

/// A ticket's clocks to save, with their summary rows and the wake-ups still to come.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockSave {
    /// The clocks.
    pub clocks: TicketClocks,
    /// One row per metric instance.
    pub summaries: Vec<Summary>,
    /// Timers still to act.
    pub timers: Vec<Timer>,
}

/// Replaces what is stored for the ticket with `save`, inside the caller's transaction (so a
/// job's outcome and its ticket's clocks are committed together).
pub(crate) fn write_clocks(
    tx: &rusqlite::Transaction<'_>,
    save: &ClockSave,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let id = save.clocks.ticket_id as i64;
    let json = serde_json::to_string(&save.clocks)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached(
        "INSERT INTO sla_tickets (ticket_id, clocks, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (ticket_id) DO UPDATE SET clocks = ?2, updated_at = ?3",
    )?
    .execute(params![id, json, now_ms])?;
    tx.prepare_cached("DELETE FROM sla_clocks WHERE ticket_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM sla_timers WHERE ticket_id = ?1")?
        .execute([id])?;
    let mut row = tx.prepare_cached(
        "INSERT INTO sla_clocks (ticket_id, metric, instance, state, started_at, target,
             consumed_secs, at_risk_at, due_at, fulfilled_at, zone)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for s in &save.summaries {
        row.execute(params![
            id,
            s.metric.as_str(),
            s.instance,
            s.state.as_str(),
            s.started_at.timestamp_millis(),
            s.target,
            s.consumed_secs,
            ms(s.at_risk_at),
            ms(s.due_at),
            ms(s.fulfilled_at),
            s.zone,
        ])?;
    }
    let mut timer = tx.prepare_cached(
        "INSERT OR REPLACE INTO sla_timers (ticket_id, metric, instance, kind, due_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for t in &save.timers {
        timer.execute(params![
            id,
            t.metric.as_str(),
            t.instance,
            t.kind.as_str(),
            t.at.timestamp_millis()
        ])?;
    }
    Ok(())
}

/// The job a due timer row becomes; `None` for a row this build cannot read (written by hand or
/// by a newer deskbot), which is dropped rather than retried forever.
pub(crate) fn timer_event(
    ticket: i64,
    metric: &str,
    instance: u32,
    kind: &str,
    at: i64,
) -> Option<TicketEvent> {
    Some(TicketEvent::timer(
        ticket as u64,
        Timer {
            at: DateTime::from_timestamp_millis(at)?,
            metric: Metric::parse(metric)?,
            instance,
            kind: TimerKind::parse(kind)?,
        },
    ))
}

/// One `sla_clocks` row as read from either database.
pub(crate) struct SummaryColumns {
    pub ticket: i64,
    pub metric: String,
    pub instance: u32,
    pub state: String,
    pub started: i64,
    pub target: Option<String>,
    pub consumed_secs: i64,
    pub at_risk: Option<i64>,
    pub due: Option<i64>,
    pub fulfilled: Option<i64>,
    pub zone: String,
}

/// A clock's summary at `now_ms` from its stored row; the error says what is unreadable.
pub(crate) fn summary(c: SummaryColumns, now_ms: i64) -> Result<Summary, String> {
    let tid = c.ticket;
    let metric = Metric::parse(&c.metric)
        .ok_or_else(|| format!("SLA clock row of ticket {tid}: unknown metric"))?;
    // The stored state is as of the last event; a due instant since passed means breached.
    let state = match State::parse(&c.state) {
        Some(s @ (State::Fulfilled | State::Breached)) => s,
        _ if c.due.is_some_and(|d| d <= now_ms) => State::Breached,
        stored => stored.unwrap_or(State::Active),
    };
    Ok(Summary {
        ticket_id: tid as u64,
        metric,
        instance: c.instance,
        state,
        started_at: time(Some(c.started))
            .ok_or_else(|| format!("SLA clock row of ticket {tid}: bad start"))?,
        target: c.target,
        consumed_secs: c.consumed_secs,
        at_risk_at: time(c.at_risk),
        due_at: time(c.due),
        fulfilled_at: time(c.fulfilled),
        zone: c.zone,
    })
}

pub(crate) fn ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

impl Store {
    /// A ticket's clocks, if it has any.
    pub async fn clocks(&self, ticket_id: u64) -> Result<Option<TicketClocks>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.clocks(ticket_id).await;
        }
        self.call(move |c| {
            let json: Option<String> = c
                .prepare_cached("SELECT clocks FROM sla_tickets WHERE ticket_id = ?1")?
                .query_row([ticket_id as i64], |r| r.get(0))
                .optional()?;
            json.map(|j| {
                serde_json::from_str(&j).map_err(|e| StoreError::Corrupt {
                    id: ticket_id as i64,
                    message: format!("SLA clocks of ticket {ticket_id}: {e}"),
                })
            })
            .transpose()
        })
        .await
    }

    /// Forgets a ticket's clocks and timers (the ticket is gone).
    pub async fn forget_clocks(&self, ticket_id: u64) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg.forget_clocks(ticket_id).await;
        }
        self.call(move |c| {
            let tx = c.transaction()?;
            for table in ["sla_tickets", "sla_clocks", "sla_timers"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE ticket_id = ?1"),
                    [ticket_id as i64],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Turns every timer due at `now` into a job of its ticket, in one transaction that takes the
    /// write lock first, so two processes sharing the file cannot both take one timer. Returns
    /// how many jobs were queued.
    pub async fn promote_timers(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            let n = pg.promote_timers(now).await?;
            if n > 0 {
                self.wake();
            }
            return Ok(n);
        }
        let now_ms = now.timestamp_millis();
        let queued = self
            .call(move |c| {
                // Most steps find nothing due: answer from the index without taking the write lock.
                let any: Option<i64> = c
                    .prepare_cached("SELECT 1 FROM sla_timers WHERE due_at <= ?1 LIMIT 1")?
                    .query_row([now_ms], |r| r.get(0))
                    .optional()?;
                if any.is_none() {
                    return Ok(0);
                }
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut queued = 0;
                {
                    let mut due = tx.prepare_cached(
                        "SELECT ticket_id, metric, instance, kind, due_at FROM sla_timers
                         WHERE due_at <= ?1 ORDER BY due_at",
                    )?;
                    let rows: Vec<(i64, String, u32, String, i64)> = due
                        .query_map([now_ms], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                        })?
                        .take(PROMOTE_BATCH)
                        .collect::<Result<_, _>>()?;
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO events
                             (dedup_key, ticket_id, kind, payload, received_at, next_attempt_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    )?;
                    let mut delete = tx.prepare_cached(
                        "DELETE FROM sla_timers
                         WHERE ticket_id = ?1 AND metric = ?2 AND instance = ?3 AND kind = ?4",
                    )?;
                    for (ticket, metric, instance, kind, at) in rows {
                        delete.execute(params![ticket, metric, instance, kind])?;
                        let Some(event) = timer_event(ticket, &metric, instance, &kind, at) else {
                            continue;
                        };
                        let payload = serde_json::to_string(&event)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                        queued += insert.execute(params![
                            event.dedup_key,
                            ticket,
                            event.kind.as_str(),
                            payload,
                            now_ms
                        ])?;
                    }
                }
                tx.commit()?;
                Ok(queued)
            })
            .await?;
        if queued > 0 {
            self.wake();
        }
        Ok(queued)
    }

    /// Open clocks (or every clock of one ticket), soonest breach first, computed at `now`.
    pub async fn list_clocks(
        &self,
        ticket: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Summary>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.list_clocks(ticket, now).await;
        }
        let now_ms = now.timestamp_millis();
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT ticket_id, metric, instance, state, started_at, target, consumed_secs,
                        at_risk_at, due_at, fulfilled_at, zone
                 FROM sla_clocks
                 WHERE (?1 IS NULL AND fulfilled_at IS NULL) OR ticket_id = ?1
                 ORDER BY due_at IS NULL, due_at, ticket_id, metric, instance",
            )?;
            let rows = stmt.query_map([ticket.map(|t| t as i64)], |r| {
                summary(
                    SummaryColumns {
                        ticket: r.get(0)?,
                        metric: r.get(1)?,
                        instance: r.get(2)?,
                        state: r.get(3)?,
                        started: r.get(4)?,
                        target: r.get(5)?,
                        consumed_secs: r.get(6)?,
                        at_risk: r.get(7)?,
                        due: r.get(8)?,
                        fulfilled: r.get(9)?,
                        zone: r.get(10)?,
                    },
                    now_ms,
                )
                .map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Clock and timer counts at `now`.
    pub async fn clock_counts(&self, now: DateTime<Utc>) -> Result<ClockCounts, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.clock_counts(now).await;
        }
        let now_ms = now.timestamp_millis();
        self.call(move |c| {
            let counts = c
                .prepare_cached(
                    "SELECT
                        COALESCE(SUM(state = 'active' AND (due_at IS NULL OR due_at > ?1)), 0),
                        COALESCE(SUM(state = 'paused' AND (due_at IS NULL OR due_at > ?1)), 0),
                        COALESCE(SUM(state = 'active' AND at_risk_at <= ?1 AND (due_at IS NULL OR due_at > ?1)), 0),
                        COALESCE(SUM(due_at <= ?1), 0)
                     FROM sla_clocks WHERE fulfilled_at IS NULL",
                )?
                .query_row([now_ms], |r| {
                    Ok(ClockCounts {
                        running: r.get(0)?,
                        paused: r.get(1)?,
                        at_risk: r.get(2)?,
                        breached: r.get(3)?,
                        timers_due: 0,
                    })
                })?;
            let timers_due: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM sla_timers WHERE due_at <= ?1")?
                .query_row([now_ms], |r| r.get(0))?;
            Ok(ClockCounts {
                timers_due,
                ..counts
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Calendar;
    use crate::sla::clock::{Rules, Targets, Warn};
    use std::time::Duration;

    fn cal() -> Calendar {
        crate::calendar::weekdays("America/Los_Angeles", "08:00-18:00")
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rules() -> Rules {
        Rules {
            warn: Some(Warn::Before("30 business minutes".parse().unwrap())),
            ..Rules::default()
        }
    }

    async fn saved(store: &Store, ticket: u64, created: &str) -> TicketClocks {
        let targets = Targets {
            first_response: Some("3 business hours".parse().unwrap()),
            resolution: Some("1 business day".parse().unwrap()),
            ..Targets::default()
        };
        let (tc, _) = TicketClocks::start(ticket, t(created), None, &targets, &rules());
        let now = t(created);
        let save = ClockSave {
            clocks: tc.clone(),
            summaries: tc.summaries(&cal(), &rules(), now),
            timers: tc.timers(&cal(), &rules()),
        };
        store
            .settle_with_clocks(Vec::new(), vec![save], Vec::new(), now)
            .await
            .unwrap();
        tc
    }

    #[tokio::test]
    async fn clocks_and_timers_round_trip_and_timers_become_jobs_once() {
        for (_, store, other) in crate::queue::postgres::testing::backends().await.pairs {
            round_trip_and_fire_once(store, other).await;
        }
    }

    async fn round_trip_and_fire_once(store: Store, other: Store) {
        let tc = saved(&store, 7, "2026-11-30T09:00:00-08:00").await;
        assert_eq!(store.clocks(7).await.unwrap(), Some(tc));
        assert_eq!(store.clocks(8).await.unwrap(), None);
        // The first wake-up is first response's at-risk, Monday 11:30.
        assert_eq!(
            store.next_due().await.unwrap(),
            Some(t("2026-11-30T11:30:00-08:00"))
        );
        let listed = store
            .list_clocks(None, t("2026-11-30T12:30:00-08:00"))
            .await
            .unwrap();
        let view: Vec<(Metric, State, Option<DateTime<Utc>>)> = listed
            .iter()
            .map(|s| (s.metric, s.state, s.due_at))
            .collect();
        assert_eq!(
            view,
            vec![
                (
                    Metric::FirstResponse,
                    State::Breached,
                    Some(t("2026-11-30T12:00:00-08:00"))
                ),
                (
                    Metric::Resolution,
                    State::Active,
                    Some(t("2026-12-01T09:00:00-08:00"))
                ),
            ]
        );
        let counts = store
            .clock_counts(t("2026-11-30T11:45:00-08:00"))
            .await
            .unwrap();
        assert_eq!(
            counts,
            ClockCounts {
                running: 2,
                paused: 0,
                at_risk: 1,
                breached: 0,
                timers_due: 1
            }
        );

        // Two processes on one file (or instances on one database): each promotes; the timer
        // becomes one job.
        let now = t("2026-11-30T12:00:00-08:00");
        let (a, b) = tokio::join!(store.promote_timers(now), other.promote_timers(now));
        assert_eq!(a.unwrap() + b.unwrap(), 2, "at risk and breach, once each");
        assert_eq!(store.promote_timers(now).await.unwrap(), 0);
        let jobs = store
            .claim(now, Duration::from_secs(60), 8, 8)
            .await
            .unwrap();
        let kinds: Vec<(String, Option<TimerKind>)> = jobs
            .iter()
            .flatten()
            .map(|j| (j.event.kind.to_string(), j.event.timer.map(|x| x.kind)))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("sla.at_risk".to_string(), Some(TimerKind::AtRisk)),
                ("sla.breached".to_string(), Some(TimerKind::Breached)),
            ]
        );
        store.forget_clocks(7).await.unwrap();
        assert_eq!(store.clocks(7).await.unwrap(), None);
        assert!(store.list_clocks(Some(7), now).await.unwrap().is_empty());
    }
}
