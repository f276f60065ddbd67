//! Reading existing tickets from Zendesk into the queue: the Incremental Ticket Export or the
//! Search Export page by page, paced to their own rate limits, waiting out 429s and outages, and
//! restarting an expired cursor from the last ticket seen rather than from zero. Used by
//! `deskbot backfill`, the catch-up after downtime and the re-apply after a policy change.
//!
//! Updates are not made here: the tickets go to the durable queue, where the worker updates them
//! as it does a webhook's (same diff, `safe_update`, rate limiter).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ticket::{parse_time, EventKind, Ticket};
use crate::webhook::payload::{Source, TicketEvent};
use crate::zendesk::client::{ErrorClass, ExportFrom, ZendeskClient, ZendeskError};
use crate::zendesk::model::{ApiOrganization, ApiUser, ExportPage};

mod catch_up;
mod reapply;

pub use catch_up::{catch_up, keep_up, CatchUp, CatchUpError, CATCH_UP_MARGIN};
pub use reapply::{reapply, reapply_on_change, Reapplied};

/// Which tickets a backfill reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Tickets changed at or after this instant.
    pub since: DateTime<Utc>,
    /// Statuses to decide (lower case); others are read and skipped.
    pub statuses: Vec<String>,
    /// A Zendesk search (`--query`): read through the Search Export instead of the
    /// Incremental Ticket Export.
    pub query: Option<String>,
}

impl Selection {
    /// Statuses a backfill decides unless told otherwise: every one that is not finished.
    pub const OPEN: &'static [&'static str] = &["new", "open", "pending", "hold"];

    /// A key naming the selection, under which `--apply` keeps its cursor.
    pub fn key(&self) -> String {
        let mut statuses = self.statuses.clone();
        statuses.sort();
        let mut key = format!(
            "since={};status={}",
            self.since.timestamp(),
            statuses.join(",")
        );
        if let Some(q) = &self.query {
            key.push_str(";query=");
            key.push_str(q);
        }
        key
    }

    /// Whether the ticket is one to decide: in a wanted status, changed since the start.
    pub fn wants(&self, t: &Ticket) -> bool {
        let status = t
            .status
            .as_deref()
            .is_some_and(|s| self.statuses.iter().any(|w| w == s));
        status && updated(t).is_none_or(|u| u >= self.since)
    }

    /// The Zendesk search that counts about as many tickets as reading will return (the
    /// export reads every status; a search, what it finds), for a progress bar's total.
    pub fn count_query(&self) -> String {
        let mut q = vec!["type:ticket".to_string()];
        if let Some(user) = &self.query {
            q.push(user.clone());
        } else if self.since > DateTime::UNIX_EPOCH {
            let before = self.since - chrono::Duration::seconds(1);
            q.push(format!(
                "updated>{}",
                before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        q.join(" ")
    }

    /// Where reading starts when no position is kept.
    pub fn start(&self) -> Position {
        match &self.query {
            Some(q) => Position::Search {
                query: q.clone(),
                bound: None,
                after: None,
            },
            None => Position::Export(ExportFrom::Start(self.since.timestamp())),
        }
    }
}

/// How fast, and how patiently, pages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Export requests per minute (Zendesk: 10, or 30 with High Volume).
    pub per_minute: u32,
    /// Tickets per page.
    pub per_page: u32,
    /// Tries of one page while Zendesk is unreachable or failing, before giving up.
    pub attempts: u32,
    /// Longest wait for one `Retry-After` or backoff.
    pub max_wait: Duration,
}

impl Pacing {
    /// How long reading `remaining` more tickets takes at this pace: whole pages at
    /// `per_minute` (the account's export limit, not the network, sets it).
    pub fn eta(&self, remaining: u64) -> Duration {
        let pages = remaining.div_ceil(u64::from(self.per_page.max(1)));
        Duration::from_secs((pages * 60).div_ceil(u64::from(self.per_minute.max(1))))
    }
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            per_minute: 10,
            per_page: 1000,
            attempts: 6,
            max_wait: Duration::from_secs(120),
        }
    }
}

/// Why reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackfillError {
    /// Zendesk kept failing; the position is kept, so running again resumes.
    #[error("Zendesk did not answer the export after {attempts} tries ({last}); run the command again to resume where it stopped")]
    GaveUp {
        /// Tries made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// An answer no retry can change (401, 403, ...).
    #[error("{0}")]
    Refused(String),
}

/// One page read: its tickets, and where the next one starts (`None` at the end).
#[derive(Debug, Clone)]
pub struct Page {
    /// The tickets, with requester e-mails and organizations folded in.
    pub tickets: Vec<Ticket>,
    /// The next page's position, `None` after the last page.
    pub next: Option<Position>,
}

/// Where reading stands in one of the two feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The Incremental Ticket Export (tickets by change time).
    Export(ExportFrom),
    /// The Search Export (tickets matching a query, by creation time).
    Search {
        /// The query as asked.
        query: String,
        /// A `created` bound added after a cursor expired: the restart from the last ticket seen.
        bound: Option<String>,
        /// The next page's cursor (`None`: the first page).
        after: Option<String>,
    },
}

impl Position {
    /// The text kept in the database to resume from (`None`: nothing worth keeping, start over).
    pub fn keep(&self) -> Option<String> {
        match self {
            Position::Export(ExportFrom::Cursor(c)) => Some(c.clone()),
            Position::Export(ExportFrom::Start(_)) => None,
            Position::Search {
                query,
                bound,
                after,
            } => Some(
                serde_json::json!({"search": query, "bound": bound, "after": after}).to_string(),
            ),
        }
    }

    /// The position a kept text names.
    pub fn resume(kept: &str) -> Position {
        #[derive(serde::Deserialize)]
        struct Kept {
            search: String,
            bound: Option<String>,
            after: Option<String>,
        }
        match serde_json::from_str::<Kept>(kept) {
            Ok(k) => Position::Search {
                query: k.search,
                bound: k.bound,
                after: k.after,
            },
            Err(_) => Position::Export(ExportFrom::Cursor(kept.to_string())),
        }
    }
}

/// The export, read page by page.
pub struct Reader<'c> {
    client: &'c ZendeskClient,
    pacing: Pacing,
    from: Option<Position>,
    /// The newest `updated_at` seen, to restart an expired export cursor from.
    last_seen: Option<DateTime<Utc>>,
    /// The `created_at` of the first and of the latest ticket a search returned: its order
    /// (UNCONFIRMED whether ascending or descending), and where to restart an expired cursor.
    created: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Requesters and organizations read for earlier search pages: each is read once a run.
    users: HashMap<u64, ApiUser>,
    orgs: HashMap<u64, ApiOrganization>,
    last_request: Option<tokio::time::Instant>,
}

impl<'c> Reader<'c> {
    /// A reader starting at `from` (the selection's start, or a kept position).
    pub fn new(client: &'c ZendeskClient, pacing: Pacing, from: Position) -> Self {
        Reader {
            client,
            pacing,
            from: Some(from),
            last_seen: None,
            created: None,
            users: HashMap::new(),
            orgs: HashMap::new(),
            last_request: None,
        }
    }

    /// Where the next page starts (`None` once the feed is read to its end).
    pub fn position(&self) -> Option<&Position> {
        self.from.as_ref()
    }

    /// The next page, or `Ok(None)` at the end of the feed.
    pub async fn next_page(&mut self) -> Result<Option<Page>, BackfillError> {
        match self.from.clone() {
            None => Ok(None),
            Some(Position::Export(from)) => self.next_export_page(from).await,
            Some(Position::Search {
                query,
                bound,
                after,
            }) => self.next_search_page(query, bound, after).await,
        }
    }

    /// Waits out a failed request: `Ok(wait)` to try again, `Err` to stop.
    fn wait_for(&self, err: &ZendeskError, tries: &mut u32) -> Result<Duration, BackfillError> {
        let wait = match err.class() {
            ErrorClass::RateLimited(after) => {
                // A 429 says how long; it is not a failure of the export.
                *tries -= 1;
                after.unwrap_or(Duration::from_secs(60))
            }
            ErrorClass::Unavailable(after) | ErrorClass::Transient(after) => {
                after.unwrap_or(Duration::from_secs(1 << (*tries).min(6)))
            }
            ErrorClass::Permanent | ErrorClass::Conflict | ErrorClass::NotFound => {
                return Err(BackfillError::Refused(err.advice()))
            }
        };
        if *tries >= self.pacing.attempts {
            return Err(BackfillError::GaveUp {
                attempts: *tries,
                last: err.to_string(),
            });
        }
        Ok(wait.min(self.pacing.max_wait))
    }

    async fn next_search_page(
        &mut self,
        query: String,
        mut bound: Option<String>,
        mut after: Option<String>,
    ) -> Result<Option<Page>, BackfillError> {
        let mut tries = 0;
        let page = loop {
            self.pace().await;
            tries += 1;
            let full = match &bound {
                Some(b) => format!("{query} {b}"),
                None => query.clone(),
            };
            let err = match self
                .client
                .search_tickets(&full, after.as_deref(), self.pacing.per_page)
                .await
            {
                Ok(page) => break page,
                Err(e) => e,
            };
            // An expired cursor (it lives an hour): the same query again, from the last ticket
            // seen on, not from zero (a ticket seen twice is decided twice, never skipped).
            if let (
                Some(_),
                Some(b),
                ZendeskError::Status {
                    status: 422 | 400, ..
                },
            ) = (&after, restart_bound(self.created), &err)
            {
                bound = Some(b);
                after = None;
                continue;
            }
            let wait = self.wait_for(&err, &mut tries)?;
            tokio::time::sleep(wait).await;
        };
        let next = match (
            &page.meta.after_cursor,
            page.meta.has_more && !page.results.is_empty(),
        ) {
            (Some(c), true) => Some(Position::Search {
                query,
                bound,
                after: Some(c.clone()),
            }),
            _ => None,
        };
        for t in &page.results {
            if let Some(c) = t.created_at.as_deref().and_then(parse_time) {
                self.created = Some(self.created.map_or((c, c), |(first, _)| (first, c)));
            }
        }
        let tickets = self.with_people(page).await?;
        self.from = next.clone();
        Ok(Some(Page { tickets, next }))
    }

    /// A search page's tickets with their requesters and organizations: side-loaded when
    /// Zendesk did, known from an earlier page, or else read with one `show_many` call per
    /// hundred missing.
    async fn with_people(
        &mut self,
        page: crate::zendesk::model::SearchPage,
    ) -> Result<Vec<Ticket>, BackfillError> {
        self.users.extend(page.users.into_iter().map(|u| (u.id, u)));
        self.orgs
            .extend(page.organizations.into_iter().map(|o| (o.id, o)));
        // The ids a page names that are not known yet, each once.
        let unknown = |ids: &mut dyn Iterator<Item = u64>, known: &dyn Fn(&u64) -> bool| {
            let mut v: Vec<u64> = ids.filter(|id| !known(id)).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let want_users = unknown(
            &mut page.results.iter().filter_map(|t| t.requester_id),
            &|id| self.users.contains_key(id),
        );
        let want_orgs = unknown(
            &mut page.results.iter().filter_map(|t| t.organization_id),
            &|id| self.orgs.contains_key(id),
        );
        for ids in want_users.chunks(100) {
            let users = self.read(|c| c.users_many(ids)).await?;
            self.users.extend(users.into_iter().map(|u| (u.id, u)));
        }
        for ids in want_orgs.chunks(100) {
            let orgs = self.read(|c| c.organizations_many(ids)).await?;
            self.orgs.extend(orgs.into_iter().map(|o| (o.id, o)));
        }
        let people = |t: &crate::zendesk::model::ApiTicket| {
            (
                t.requester_id.and_then(|id| self.users.get(&id).cloned()),
                t.organization_id.and_then(|id| self.orgs.get(&id).cloned()),
            )
        };
        let (users, organizations) = page.results.iter().map(people).fold(
            (Vec::new(), Vec::new()),
            |(mut us, mut os), (u, o)| {
                us.extend(u);
                os.extend(o);
                (us, os)
            },
        );
        Ok(ExportPage {
            tickets: page.results,
            users,
            organizations,
            ..ExportPage::default()
        }
        .into_tickets())
    }

    /// One read with the feed's patience (429s, outages).
    async fn read<'a, T, F, Fut>(&'a self, f: F) -> Result<T, BackfillError>
    where
        F: Fn(&'c ZendeskClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, ZendeskError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match f(self.client).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let wait = self.wait_for(&e, &mut tries)?;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn next_export_page(&mut self, from: ExportFrom) -> Result<Option<Page>, BackfillError> {
        let mut tries = 0;
        let mut from = from;
        let page = loop {
            self.pace().await;
            tries += 1;
            let result = self
                .client
                .export_tickets(&from, self.pacing.per_page)
                .await;
            let err = match result {
                Ok(page) => break page,
                Err(e) => e,
            };
            // An expired or unknown cursor: start again from the last change seen (a ticket
            // seen twice is decided twice, never skipped).
            if let (
                ExportFrom::Cursor(_),
                Some(seen),
                ZendeskError::Status {
                    status: 422 | 400, ..
                },
            ) = (&from, self.last_seen, &err)
            {
                from = ExportFrom::Start(seen.timestamp());
                continue;
            }
            let wait = self.wait_for(&err, &mut tries)?;
            tokio::time::sleep(wait).await;
        };
        let done = page.end_of_stream || page.tickets.is_empty();
        let next = match (&page.after_cursor, done) {
            (Some(c), false) => Some(Position::Export(ExportFrom::Cursor(c.clone()))),
            _ => None,
        };
        let tickets = page.into_tickets();
        if let Some(newest) = tickets.iter().filter_map(updated).max() {
            self.last_seen = Some(self.last_seen.map_or(newest, |s| s.max(newest)));
        }
        self.from = next.clone();
        Ok(Some(Page { tickets, next }))
    }

    /// Waits so that export requests keep to `per_minute`.
    async fn pace(&mut self) {
        let gap = Duration::from_secs(60) / self.pacing.per_minute.max(1);
        if let Some(last) = self.last_request {
            tokio::time::sleep_until(last + gap).await;
        }
        self.last_request = Some(tokio::time::Instant::now());
    }
}

/// The `created` bound that restarts an expired search just before (in the search's order)
/// the last ticket seen, from the first and the latest creation time seen; `None` before any.
fn restart_bound(created: Option<(DateTime<Utc>, DateTime<Utc>)>) -> Option<String> {
    let (first, last) = created?;
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let second = chrono::Duration::seconds(1);
    Some(if last >= first {
        format!("created>{}", stamp(last - second))
    } else {
        format!("created<{}", stamp(last + second))
    })
}

pub(crate) fn updated(t: &Ticket) -> Option<DateTime<Utc>> {
    t.updated_at.as_deref().and_then(parse_time)
}

/// The queued job that has the worker decide and update an existing ticket. Its key names the
/// ticket and the change it was read at, so running a backfill again enqueues nothing new until
/// the ticket changes.
pub fn job(ticket: &Ticket) -> TicketEvent {
    job_keyed("backfill", ticket)
}

/// [`job`], its key starting with `prefix` instead (a re-apply's names the policy version).
pub(crate) fn job_keyed(prefix: &str, ticket: &Ticket) -> TicketEvent {
    let stamp =
        updated(ticket).map_or_else(|| "unknown".to_string(), |t| t.timestamp().to_string());
    let mut snapshot = ticket.clone();
    snapshot.event = Some(EventKind::new(EventKind::CREATED));
    TicketEvent {
        dedup_key: format!("{prefix}:{}:{stamp}", ticket.id),
        source: Source::Backfill,
        ticket_id: ticket.id,
        kind: EventKind::new(EventKind::CREATED),
        occurred_at: updated(ticket),
        snapshot,
        comment: None,
        current: None,
        timer: None,
        notice: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn an_expired_search_restarts_at_the_last_ticket_in_either_order() {
        assert_eq!(restart_bound(None), None);
        // Oldest first (UNCONFIRMED which order Zendesk uses; both are handled).
        assert_eq!(
            restart_bound(Some((t("2026-10-01T10:00:00Z"), t("2026-10-06T10:00:00Z")))),
            Some("created>2026-10-06T09:59:59Z".into())
        );
        assert_eq!(
            restart_bound(Some((t("2026-10-06T10:00:00Z"), t("2026-10-01T10:00:00Z")))),
            Some("created<2026-10-01T10:00:01Z".into())
        );
    }

    #[test]
    fn the_eta_counts_whole_pages_at_the_rate_limit() {
        let p = Pacing {
            per_minute: 10,
            per_page: 1000,
            ..Pacing::default()
        };
        assert_eq!(p.eta(0), Duration::ZERO);
        assert_eq!(p.eta(1), Duration::from_secs(6));
        assert_eq!(p.eta(25_000), Duration::from_secs(150));
        let search = Pacing {
            per_minute: 100,
            per_page: 100,
            ..Pacing::default()
        };
        assert_eq!(search.eta(10_001), Duration::from_secs(61));
    }

    #[test]
    fn the_count_query_follows_the_selection() {
        let mut s = Selection {
            since: DateTime::UNIX_EPOCH,
            statuses: vec!["open".into()],
            query: None,
        };
        assert_eq!(s.count_query(), "type:ticket");
        s.since = t("2026-11-01T00:00:00Z");
        assert_eq!(s.count_query(), "type:ticket updated>2026-10-31T23:59:59Z");
        s.query = Some("tags:vip".into());
        assert_eq!(s.count_query(), "type:ticket tags:vip");
    }

    #[test]
    fn kept_positions_resume_in_their_feed() {
        let search = Position::Search {
            query: "tags:vip".into(),
            bound: Some("created>2026-10-06T09:59:59Z".into()),
            after: Some("abc".into()),
        };
        assert_eq!(Position::resume(&search.keep().unwrap()), search);
        let export = Position::Export(ExportFrom::Cursor("pos 4".into()));
        assert_eq!(Position::resume(&export.keep().unwrap()), export);
        assert_eq!(Position::Export(ExportFrom::Start(0)).keep(), None);
    }
}
