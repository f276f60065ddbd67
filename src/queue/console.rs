//! What the admin console reads and changes in the store: the activity list (keyset pages over
//! the jobs, newest first), one job whole with its failed tries, counts for the overview and the
//! policy page, requeues, and the log of console actions.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde_json::Value;

use super::store::{Store, StoreError, REQUEUE_DEAD};

/// Rows on one activity page.
pub const PAGE: usize = 50;
/// The most jobs one bulk requeue touches.
pub const MAX_BULK: usize = 10_000;

/// Which jobs the activity list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    /// `queued`, or a finished job's result (`updated`, `no_change`, `dry_run`, `dead`...).
    pub result: Option<String>,
    /// One ticket's jobs.
    pub ticket: Option<u64>,
    /// One event type (`created`, `comment_added`...).
    pub kind: Option<String>,
    /// Received at or after.
    pub from: Option<DateTime<Utc>>,
    /// Received before.
    pub to: Option<DateTime<Utc>>,
    /// Only jobs older than this id (the next page).
    pub before: Option<i64>,
}

/// One row of the activity list.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRow {
    /// Job id.
    pub id: i64,
    /// When the event was stored.
    pub received_at: DateTime<Utc>,
    /// Ticket.
    pub ticket_id: u64,
    /// Event type.
    pub kind: String,
    /// `queued` while waiting, else the result.
    pub result: String,
    /// The decided priority, if any.
    pub priority: Option<String>,
    /// The tags the decision adds.
    pub tags: Vec<String>,
    /// From storing the event to finishing its job.
    pub latency_ms: Option<i64>,
    /// Failed tries so far.
    pub attempts: u32,
}

/// One job whole.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDetail {
    /// The row as listed.
    pub row: ActivityRow,
    /// Its deduplication key (the webhook's event id, or `backfill:…`).
    pub dedup_key: String,
    /// The stored event (JSON).
    pub payload: Value,
    /// How it ended (JSON: the decision and the update sent), once finished.
    pub outcome: Option<Value>,
    /// The last error, if any try failed.
    pub last_error: Option<String>,
    /// Every failed try: when, and why.
    pub failures: Vec<(DateTime<Utc>, String)>,
    /// Waiting behind live jobs.
    pub background: bool,
}

/// An action taken in the console, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAction {
    /// When.
    pub at: DateTime<Utc>,
    /// From where (address, and the forwarded-for chain behind a proxy).
    pub source: String,
    /// What (`requeue`, `bulk requeue`).
    pub action: String,
    /// Which jobs.
    pub detail: String,
}

pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(crate) const COLUMNS: &str =
    "id, received_at, ticket_id, kind, state, outcome, attempts, finished_at, result";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActivityRow> {
    Ok(activity_row(Columns {
        id: r.get(0)?,
        received: r.get(1)?,
        ticket: r.get(2)?,
        kind: r.get(3)?,
        state: r.get(4)?,
        outcome: r.get(5)?,
        attempts: r.get(6)?,
        finished: r.get(7)?,
        result: r.get(8)?,
    }))
}

/// The [`COLUMNS`] of one job as read from either database.
pub(crate) struct Columns {
    pub id: i64,
    pub received: i64,
    pub ticket: i64,
    pub kind: String,
    pub state: String,
    pub outcome: Option<String>,
    pub attempts: u32,
    pub finished: Option<i64>,
    pub result: Option<String>,
}

/// One activity row from its stored columns.
pub(crate) fn activity_row(c: Columns) -> ActivityRow {
    let outcome = c
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .unwrap_or(Value::Null);
    let decision = &outcome["decision"];
    // Jobs finished before schema 5 have no `result` column value; their outcome says it.
    let result = c
        .result
        .or_else(|| outcome["result"].as_str().map(str::to_string));
    ActivityRow {
        id: c.id,
        received_at: time(c.received),
        ticket_id: c.ticket as u64,
        kind: c.kind,
        result: match (c.state.as_str(), result) {
            ("pending", _) => "queued".to_string(),
            (_, Some(r)) => r,
            (s, None) => s.to_string(),
        },
        priority: decision["priority"].as_str().map(str::to_string),
        tags: decision["add_tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        latency_ms: c.finished.map(|f| f - c.received),
        attempts: c.attempts,
    }
}

/// The smallest job id received at or after `t` (ids grow with time): a time bound becomes an id
/// bound the primary key answers, instead of a scan of every job.
fn id_at(c: &Connection, t: DateTime<Utc>) -> rusqlite::Result<i64> {
    let ms = t.timestamp_millis();
    let (mut lo, mut hi): (i64, i64) = c.query_row(
        // Two subqueries: SQLite answers a lone MIN or MAX from the key, but not both at once.
        "SELECT COALESCE((SELECT MIN(id) FROM events), 0), COALESCE((SELECT MAX(id) FROM events), 0) + 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut at =
        c.prepare_cached("SELECT received_at FROM events WHERE id >= ?1 ORDER BY id LIMIT 1")?;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let received: Option<i64> = at.query_row([mid], |r| r.get(0)).optional()?;
        match received {
            Some(r) if r < ms => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// A filter's value, typed for its column.
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// The WHERE clause of `f` and its values (without the page bound), each value's placeholder
/// written by `mark` from its 1-based position; `from_id` and `to_id` are the id bounds its
/// times become (see `id_at`). Both databases filter through this one function.
pub(crate) fn filter_sql(
    f: &ActivityFilter,
    from_id: Option<i64>,
    to_id: Option<i64>,
    mark: fn(usize) -> String,
) -> (String, Vec<Arg>) {
    let mut sql = vec!["1 = 1".to_string()];
    let mut args = Vec::new();
    let mut push = |cond: &str, arg: Arg, sql: &mut Vec<String>| {
        args.push(arg);
        sql.push(format!("{cond} {}", mark(args.len())));
    };
    match f.result.as_deref() {
        Some("queued") => sql.push("state = 'pending'".into()),
        Some(r) => push("result =", Arg::Text(r.to_string()), &mut sql),
        None => {}
    }
    if let Some(t) = f.ticket {
        push("ticket_id =", Arg::Int(t as i64), &mut sql);
    }
    if let Some(k) = &f.kind {
        push("kind =", Arg::Text(k.clone()), &mut sql);
    }
    if let (Some(from), Some(id)) = (f.from, from_id) {
        push("id >=", Arg::Int(id), &mut sql);
        push(
            "received_at >=",
            Arg::Int(from.timestamp_millis()),
            &mut sql,
        );
    }
    if let Some(id) = to_id {
        push("id <", Arg::Int(id), &mut sql);
    }
    if let Some(b) = f.before {
        push("id <", Arg::Int(b), &mut sql);
    }
    (sql.join(" AND "), args)
}

/// The WHERE clause and its values for `f` in SQLite.
fn conditions(
    c: &Connection,
    f: &ActivityFilter,
) -> rusqlite::Result<(String, Vec<rusqlite::types::Value>)> {
    use rusqlite::types::Value as V;
    let from_id = f.from.map(|t| id_at(c, t)).transpose()?;
    let to_id = f.to.map(|t| id_at(c, t)).transpose()?;
    let (sql, args) = filter_sql(f, from_id, to_id, |n| format!("?{n}"));
    let args = args
        .into_iter()
        .map(|a| match a {
            Arg::Text(s) => V::Text(s),
            Arg::Int(i) => V::Integer(i),
        })
        .collect();
    Ok((sql, args))
}

impl Store {
    /// One page of jobs matching `f`, newest first ([`PAGE`] at most).
    pub async fn activity(&self, f: ActivityFilter) -> Result<Vec<ActivityRow>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.activity(f).await;
        }
        self.call(move |c| {
            let (cond, args) = conditions(c, &f)?;
            let sql =
                format!("SELECT {COLUMNS} FROM events WHERE {cond} ORDER BY id DESC LIMIT {PAGE}");
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// How many jobs match `f` (for a bulk requeue's confirmation).
    pub async fn count_matching(&self, f: ActivityFilter) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.count_matching(f).await;
        }
        self.call(move |c| {
            let (cond, args) = conditions(c, &f)?;
            let n: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM events WHERE {cond}"),
                params_from_iter(args),
                |r| r.get(0),
            )?;
            Ok(n as usize)
        })
        .await
    }

    /// One job whole, with its failed tries.
    pub async fn event_detail(&self, id: i64) -> Result<Option<EventDetail>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.event_detail(id).await;
        }
        self.call(move |c| {
            let found = c
                .query_row(
                    &format!("SELECT {COLUMNS}, dedup_key, payload, last_error, lane FROM events WHERE id = ?1"),
                    [id],
                    |r| {
                        let payload: String = r.get(10)?;
                        let outcome: Option<String> = r.get(5)?;
                        Ok(EventDetail {
                            row: row(r)?,
                            dedup_key: r.get(9)?,
                            payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
                            outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
                            last_error: r.get(11)?,
                            failures: Vec::new(),
                            background: r.get::<_, i64>(12)? != 0,
                        })
                    },
                )
                .optional()?;
            let Some(mut d) = found else { return Ok(None) };
            let mut stmt = c.prepare_cached(
                "SELECT at, error FROM attempts WHERE event_id = ?1 ORDER BY rowid",
            )?;
            let tries = stmt.query_map([id], |r| Ok((time(r.get(0)?), r.get(1)?)))?;
            d.failures = tries.collect::<Result<_, _>>()?;
            Ok(Some(d))
        })
        .await
    }

    /// Puts jobs back in the queue: a dead letter is tried again from its first attempt; a
    /// finished job is queued again as a new job with the same event (its record stays). A
    /// job still waiting is left as it is. Returns the jobs queued.
    pub async fn requeue_jobs(
        &self,
        ids: Vec<i64>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            let n = pg.requeue_jobs(ids, now).await?;
            if n > 0 {
                self.wake();
            }
            return Ok(n);
        }
        let at = now.timestamp_millis();
        let n = self
            .call(move |c| {
                let tx = c.transaction()?;
                let mut n = 0;
                {
                    let mut dead = tx.prepare_cached(REQUEUE_DEAD)?;
                    let mut again = tx.prepare_cached(
                        "INSERT OR IGNORE INTO events
                             (dedup_key, ticket_id, kind, payload, received_at, next_attempt_at, lane)
                         SELECT 'requeue:' || id || ':' || ?2, ticket_id, kind, payload, ?2, ?2, 0
                         FROM events WHERE id = ?1 AND state = 'done'",
                    )?;
                    for id in &ids {
                        n += dead.execute(params![at, id])?;
                        n += again.execute(params![id, at])?;
                    }
                }
                tx.commit()?;
                Ok(n)
            })
            .await?;
        if n > 0 {
            self.wake();
        }
        Ok(n)
    }

    /// The ids of the jobs matching `f`, newest first, at most [`MAX_BULK`].
    pub async fn matching_ids(&self, f: ActivityFilter) -> Result<Vec<i64>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.matching_ids(f).await;
        }
        self.call(move |c| {
            let (cond, args) = conditions(c, &f)?;
            let sql =
                format!("SELECT id FROM events WHERE {cond} ORDER BY id DESC LIMIT {MAX_BULK}");
            let mut stmt = c.prepare(&sql)?;
            let ids = stmt.query_map(params_from_iter(args), |r| r.get(0))?;
            Ok(ids.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Logs a console action.
    pub async fn record_action(&self, a: AdminAction) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg.record_action(a).await;
        }
        self.call(move |c| {
            c.execute(
                "INSERT INTO admin_actions (at, source, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![a.at.timestamp_millis(), a.source, a.action, a.detail],
            )?;
            Ok(())
        })
        .await
    }

    /// The latest console actions, newest first.
    pub async fn recent_actions(&self, limit: usize) -> Result<Vec<AdminAction>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.recent_actions(limit).await;
        }
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT at, source, action, detail FROM admin_actions ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(AdminAction {
                    at: time(r.get(0)?),
                    source: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Events received and updates sent in each of the last 24 hours (oldest first; the hour
    /// as hours since the epoch).
    pub async fn hourly(&self, now: DateTime<Utc>) -> Result<Vec<(i64, u64, u64)>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.hourly(now).await;
        }
        self.call(move |c| {
            let from = id_at(c, now - chrono::Duration::hours(24))?;
            let mut stmt = c.prepare_cached(
                "SELECT received_at / 3600000, COUNT(*), SUM(result = 'updated') FROM events
                 WHERE id >= ?1 GROUP BY 1 ORDER BY 1",
            )?;
            let rows = stmt.query_map([from], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// How often each rule matched in the last 24 hours and the last 7 days.
    pub async fn rule_counts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, (u64, u64)>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.rule_counts(now).await;
        }
        let hour = now.timestamp_millis() / 3_600_000;
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT rule, SUM(CASE WHEN hour > ?1 - 24 THEN n ELSE 0 END), SUM(n)
                 FROM rule_matches WHERE hour > ?1 - 168 GROUP BY rule",
            )?;
            let rows = stmt.query_map([hour], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        time(ms)
    }

    /// The jobs of the fixture: 1..=10 received at 1000, 2000, … ms; job 3 finished before
    /// schema 5 (no `result`, an outcome saying `updated`), job 7 dead, the others waiting.
    /// key, ticket, received at, state, outcome, result.
    type Row = (
        String,
        i64,
        i64,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );

    fn fixture() -> Vec<Row> {
        (1..=10i64)
            .map(|i| {
                let (state, outcome, result) = match i {
                    3 => ("done", Some(r#"{"result":"updated","decision":{"priority":"urgent","add_tags":["x"]}}"#), None),
                    7 => ("dead", Some(r#"{"result":"dead","error":"400"}"#), Some("dead")),
                    _ => ("pending", None, None),
                };
                (format!("k{i}"), 100 + i % 3, i * 1000, state, outcome, result)
            })
            .collect()
    }

    /// Each backend's store holding the fixture's jobs.
    async fn stores() -> (crate::queue::postgres::testing::Backends, Vec<Store>) {
        let b = crate::queue::postgres::testing::backends().await;
        let mut out = Vec::new();
        for (_, s, _) in &b.pairs {
            match s.pg() {
                Some(pg) => {
                    let c = pg.pool().get().await.unwrap();
                    for (key, ticket, at, state, outcome, result) in fixture() {
                        c.execute(
                            "INSERT INTO events (dedup_key, ticket_id, kind, payload, received_at, next_attempt_at, state, outcome, result)
                             VALUES ($1, $2, 'created', '{}', $3, $3, $4, $5, $6)",
                            &[&key, &ticket, &at, &state, &outcome, &result],
                        )
                        .await
                        .unwrap();
                    }
                }
                None => s
                    .call(|c| {
                        for (key, ticket, at, state, outcome, result) in fixture() {
                            c.execute(
                                "INSERT INTO events (dedup_key, ticket_id, kind, payload, received_at, next_attempt_at, state, outcome, result)
                                 VALUES (?1, ?2, 'created', '{}', ?3, ?3, ?4, ?5, ?6)",
                                params![key, ticket, at, state, outcome, result],
                            )?;
                        }
                        Ok(())
                    })
                    .await
                    .unwrap(),
            }
            out.push(s.clone());
        }
        (b, out)
    }

    fn ids(rows: &[ActivityRow]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn time_bounds_become_id_bounds() {
        let (_b, stores) = stores().await;
        for s in stores {
            time_bounds(s).await;
        }
    }

    async fn time_bounds(s: Store) {
        let f = |from: Option<i64>, to: Option<i64>| ActivityFilter {
            from: from.map(at),
            to: to.map(at),
            ..ActivityFilter::default()
        };
        assert_eq!(
            ids(&s.activity(f(Some(4000), Some(6500))).await.unwrap()),
            [6, 5, 4]
        );
        assert_eq!(ids(&s.activity(f(Some(9500), None)).await.unwrap()), [10]);
        assert_eq!(
            ids(&s.activity(f(None, Some(1000))).await.unwrap()),
            Vec::<i64>::new()
        );
        assert_eq!(s.activity(f(Some(20_000), None)).await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn results_and_tickets_filter_and_old_jobs_show_their_outcome() {
        let (_b, stores) = stores().await;
        for s in stores {
            results_and_tickets(s).await;
        }
    }

    async fn results_and_tickets(s: Store) {
        let all = s.activity(ActivityFilter::default()).await.unwrap();
        assert_eq!(ids(&all), [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
        let old = all.iter().find(|r| r.id == 3).unwrap();
        assert_eq!(
            (
                old.result.as_str(),
                old.priority.as_deref(),
                old.tags.clone()
            ),
            ("updated", Some("urgent"), vec!["x".to_string()])
        );
        assert_eq!(all[0].result, "queued");
        let dead = ActivityFilter {
            result: Some("dead".into()),
            ..ActivityFilter::default()
        };
        assert_eq!(ids(&s.activity(dead.clone()).await.unwrap()), [7]);
        assert_eq!(s.count_matching(dead).await.unwrap(), 1);
        let ticket = ActivityFilter {
            ticket: Some(101),
            before: Some(7),
            ..ActivityFilter::default()
        };
        assert_eq!(ids(&s.activity(ticket).await.unwrap()), [4, 1]);
        // A dead letter goes back to waiting; a finished job is copied; a waiting one is left.
        assert_eq!(s.requeue_jobs(vec![7, 3, 2], at(50_000)).await.unwrap(), 2);
        let queued = ActivityFilter {
            result: Some("queued".into()),
            ..ActivityFilter::default()
        };
        assert_eq!(s.count_matching(queued).await.unwrap(), 10);
    }
}

#[cfg(test)]
mod both_backends {
    use super::*;
    use crate::queue::postgres::testing::event;
    use crate::queue::store::{Lease, Settle};

    /// Hourly counts, rule counts, the action log and an event's failed tries read the same on
    /// every backend.
    #[tokio::test]
    async fn counts_actions_and_failures_read_alike() {
        for (name, s, _) in crate::queue::postgres::testing::backends().await.pairs {
            let now = DateTime::parse_from_rfc3339("2026-11-30T10:30:00Z")
                .unwrap()
                .with_timezone(&Utc);
            let hour_ago = now - chrono::Duration::minutes(60);
            s.enqueue(event("a", 1, hour_ago)).await.unwrap();
            s.enqueue(event("b", 2, now)).await.unwrap();
            let jobs = s
                .claim(now, std::time::Duration::from_secs(60), 8, 8)
                .await
                .unwrap();
            let (a, b) = (jobs[0][0].lease(), jobs[1][0].lease());
            let failed = Settle::Defer {
                until: now,
                error: "Zendesk answered 503".into(),
                counts: true,
            };
            s.settle(vec![(a, failed)], now).await.unwrap();
            let a2 = s
                .claim(now, std::time::Duration::from_secs(60), 8, 8)
                .await
                .unwrap()[0][0]
                .lease();
            assert_eq!(a2, Lease { id: a.id, token: 2 }, "{name}");
            let updated = Settle::Done {
                outcome: r#"{"result":"updated"}"#.into(),
            };
            s.settle_with_clocks(
                vec![(a2, updated.clone()), (b, updated)],
                Vec::new(),
                vec!["urgent".into(), "urgent".into(), "vip".into()],
                now,
            )
            .await
            .unwrap();
            let hour = now.timestamp_millis() / 3_600_000;
            assert_eq!(
                s.hourly(now).await.unwrap(),
                vec![(hour - 1, 1, 1), (hour, 1, 1)],
                "{name}"
            );
            let rules = s.rule_counts(now).await.unwrap();
            assert_eq!(rules.get("urgent"), Some(&(2, 2)), "{name}");
            assert_eq!(rules.get("vip"), Some(&(1, 1)), "{name}");
            for (i, what) in ["requeue", "bulk requeue"].iter().enumerate() {
                s.record_action(AdminAction {
                    at: now + chrono::Duration::seconds(i as i64),
                    source: "127.0.0.1".into(),
                    action: what.to_string(),
                    detail: format!("event {i}"),
                })
                .await
                .unwrap();
            }
            let actions: Vec<String> = s
                .recent_actions(5)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.action)
                .collect();
            assert_eq!(actions, ["bulk requeue", "requeue"], "{name}");
            let d = s.event_detail(a.id).await.unwrap().unwrap();
            assert_eq!(
                (d.row.result.as_str(), d.row.attempts, d.failures.len()),
                ("updated", 1, 1),
                "{name}"
            );
            assert_eq!(d.failures[0], (now, "Zendesk answered 503".to_string()));
            assert_eq!(d.dedup_key, "a");
            assert!(s.event_detail(999).await.unwrap().is_none());
        }
    }
}
