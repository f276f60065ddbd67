//! Reading existing tickets from Zendesk, for `deskbot backfill`: the Incremental Ticket Export
//! page by page, paced to its own rate limit (10 requests a minute by default), waiting out 429s
//! and outages, and restarting an expired cursor from the last ticket seen rather than from zero.
//!
//! Decisions and updates are not made here: the command decides each ticket with the policy, and
//! `--apply` hands the tickets to the durable queue, where the worker updates them as it does a
//! webhook's (same diff, `safe_update`, rate limiter).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::metrics::Metrics;
use crate::policy::PolicyHandle;
use crate::queue::store::{Enqueued, NewEvent, Store, StoreError};
use crate::ticket::{parse_time, EventKind, Ticket};
use crate::webhook::payload::{Source, TicketEvent};
use crate::zendesk::client::{ErrorClass, ExportFrom, ZendeskClient, ZendeskError};
use crate::zendesk::model::{ApiOrganization, ApiUser, ExportPage};
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
        let missing = |ids: &mut Vec<u64>| {
            ids.sort_unstable();
            ids.dedup();
        };
        let mut want_users: Vec<u64> = page
            .results
            .iter()
            .filter_map(|t| t.requester_id)
            .filter(|id| !self.users.contains_key(id))
            .collect();
        missing(&mut want_users);
        let mut want_orgs: Vec<u64> = page
            .results
            .iter()
            .filter_map(|t| t.organization_id)
            .filter(|id| !self.orgs.contains_key(id))
            .collect();
        missing(&mut want_orgs);
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

/// How far before the last moment deskbot heard from Zendesk a catch-up starts: changes that
/// happened while a webhook was in flight are covered too.
pub const CATCH_UP_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// The kept position under which the catch-up notes up to when it has read the export.
const CAUGHT_UP: &str = "catch-up";

/// When deskbot last heard what changed in Zendesk: its newest job, or the end of its last
/// catch-up, whichever is later (`None`: a fresh database).
async fn last_heard(store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
    let newest = store.newest_received().await?;
    let read_to = store
        .cursor(CAUGHT_UP)
        .await?
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|t| DateTime::from_timestamp(t, 0));
    Ok(newest.max(read_to))
}

/// Asks Zendesk for the open tickets changed since deskbot last heard from it (less
/// [`CATCH_UP_MARGIN`]) and queues those whose change it has not heard of (no job of the ticket
/// queued at or after its `updated_at`), once per change. A fresh database has nothing to
/// catch up: it only notes the start, so that the next catch-up knows where to begin.
pub async fn catch_up(
    store: &Store,
    client: &ZendeskClient,
    pacing: Pacing,
    now: DateTime<Utc>,
) -> Result<CatchUp, CatchUpError> {
    // The export leaves out the latest minute; the next catch-up reads it.
    let read_to = (now - chrono::Duration::minutes(1)).timestamp().to_string();
    let Some(last) = last_heard(store).await? else {
        store.set_cursor(CAUGHT_UP, Some(&read_to)).await?;
        return Ok(CatchUp::default());
    };
    let since = last - CATCH_UP_MARGIN;
    let selection = Selection {
        since,
        statuses: Selection::OPEN.iter().map(|s| s.to_string()).collect(),
        query: None,
    };
    let mut reader = Reader::new(client, pacing, selection.start());
    let mut done = CatchUp {
        since: Some(last),
        ..CatchUp::default()
    };
    while let Some(page) = reader.next_page().await? {
        let wanted: Vec<&Ticket> = page.tickets.iter().filter(|t| selection.wants(t)).collect();
        let heard = store
            .last_heard(wanted.iter().map(|t| t.id).collect())
            .await?;
        for t in wanted {
            if heard
                .get(&t.id)
                .is_some_and(|h| updated(t).is_some_and(|u| *h >= u))
            {
                done.heard += 1;
                continue;
            }
            let e = store
                .enqueue(NewEvent {
                    event: job(t),
                    invocation_key: None,
                    received_at: now,
                    background: false,
                })
                .await?;
            if matches!(e, Enqueued::Queued(_)) {
                done.queued += 1;
            }
        }
    }
    store.set_cursor(CAUGHT_UP, Some(&read_to)).await?;
    Ok(done)
}

/// What a catch-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Tickets queued.
    pub queued: usize,
    /// Tickets changed in the gap whose change deskbot had heard of (not queued).
    pub heard: usize,
    /// When deskbot last heard from Zendesk before (`None`: a fresh database).
    pub since: Option<DateTime<Utc>>,
}

/// Why a catch-up stopped.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Reading the export failed.
    #[error(transparent)]
    Export(#[from] BackfillError),
    /// The queue could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Catches up at start, then whenever nothing has been heard from Zendesk for `idle` (no
/// webhook: deskbot was unreachable, suspended, or the account is quiet), until `shutdown`.
pub async fn keep_up(
    store: Store,
    client: ZendeskClient,
    idle: std::time::Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let tick = (idle / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    let mut first = true;
    loop {
        let now = Utc::now();
        let due = match last_heard(&store).await {
            Ok(Some(last)) => (now - last).to_std().is_ok_and(|gap| gap >= idle),
            Ok(None) => true,
            Err(e) => {
                warn!(error = %e, "cannot read when deskbot last heard from Zendesk");
                false
            }
        };
        if first || due {
            let why = if first { "start" } else { "idle" };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = catch_up(&store, &client, Pacing::default(), now) => report(r, why, now, &metrics),
            }
        }
        first = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

fn report(r: Result<CatchUp, CatchUpError>, why: &str, now: DateTime<Utc>, metrics: &Metrics) {
    match r {
        Ok(done) => {
            metrics.caught_up(done.queued);
            if done.queued > 0 || done.heard > 0 {
                info!(
                    reason = why,
                    queued = done.queued,
                    already_heard = done.heard,
                    gap_mins = done.since.map(|t| (now - t).num_minutes()),
                    "caught up: tickets changed while deskbot heard nothing are queued"
                );
            }
        }
        Err(e) => {
            warn!(reason = why, error = %e, "catch-up failed; it is tried again after the next quiet spell, or run `deskbot backfill --since <when it stopped> --apply`")
        }
    }
}

/// What a re-apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reapplied {
    /// Open tickets decided.
    pub decided: usize,
    /// Of those, queued because their update would change something.
    pub changed: usize,
}

/// The open tickets, as the re-apply reads them (Search Export: only open tickets are read).
const OPEN_QUERY: &str = "status<solved";

/// After a policy change: re-decides every open ticket with the policies in force and queues,
/// in the background lane, those whose update would change something, each once per policy
/// `version` and ticket change. Each change is logged.
pub async fn reapply(
    store: &Store,
    client: &ZendeskClient,
    policy: &PolicyHandle,
    version: &str,
    metrics: &Metrics,
    now: DateTime<Utc>,
) -> Result<Reapplied, CatchUpError> {
    let set = policy.current();
    let selection = Selection {
        since: DateTime::UNIX_EPOCH,
        statuses: Selection::OPEN.iter().map(|s| s.to_string()).collect(),
        query: Some(OPEN_QUERY.to_string()),
    };
    let pacing = Pacing {
        per_minute: 60,
        per_page: 100,
        ..Pacing::default()
    };
    let mut reader = Reader::new(client, pacing, selection.start());
    let mut done = Reapplied::default();
    let mut seen = std::collections::HashSet::new();
    while let Some(page) = reader.next_page().await? {
        let mut changed = 0;
        let mut decided = 0;
        for mut t in page.tickets {
            if !selection.wants(&t) || !seen.insert(t.id) {
                continue;
            }
            decided += 1;
            t.event = Some(EventKind::new(EventKind::CREATED));
            let decision = set.decide(&t, now);
            let Some(what) = crate::update::described(&t, &decision) else {
                continue;
            };
            changed += 1;
            info!(ticket = t.id, change = %what.join(", "), policy_version = version, "re-apply: the changed policy decides this open ticket differently");
            let mut ev = job(&t);
            ev.dedup_key = ev
                .dedup_key
                .replacen("backfill:", &format!("reapply:{version}:"), 1);
            store
                .enqueue(NewEvent {
                    event: ev,
                    invocation_key: None,
                    received_at: now,
                    background: true,
                })
                .await?;
        }
        metrics.reapplied("changed", changed);
        metrics.reapplied("unchanged", decided - changed);
        done.changed += changed;
        done.decided += decided;
    }
    Ok(done)
}

/// Re-applies after each policy change `changes` announces (its value: the new version),
/// until `shutdown`. A change during a run stops that run and starts over with the newer
/// policy.
pub async fn reapply_on_change(
    store: Store,
    client: ZendeskClient,
    policy: PolicyHandle,
    mut changes: tokio::sync::watch::Receiver<Option<String>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        loop {
            let Some(version) = changes.borrow_and_update().clone() else {
                break;
            };
            info!(policy_version = %version, "re-apply: deciding the open tickets again with the changed policy");
            let run = reapply(&store, &client, &policy, &version, &metrics, Utc::now());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changes.changed() => {
                    metrics.reapply_run("superseded");
                    info!(policy_version = %version, "re-apply: the policy changed again; starting over");
                    continue;
                }
                r = run => {
                    match r {
                        Ok(done) => {
                            metrics.reapply_run("done");
                            info!(policy_version = %version, decided = done.decided, queued = done.changed, "re-apply done: updates queued behind live webhooks");
                        }
                        Err(e) => {
                            metrics.reapply_run("failed");
                            warn!(policy_version = %version, error = %e, "re-apply failed; it runs again at the next policy change, or run `deskbot backfill --apply`");
                        }
                    }
                    break;
                }
            }
        }
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

fn updated(t: &Ticket) -> Option<DateTime<Utc>> {
    t.updated_at.as_deref().and_then(parse_time)
}

/// The queued job that has the worker decide and update an existing ticket. Its key names the
/// ticket and the change it was read at, so running a backfill again enqueues nothing new until
/// the ticket changes.
pub fn job(ticket: &Ticket) -> TicketEvent {
    let stamp =
        updated(ticket).map_or_else(|| "unknown".to_string(), |t| t.timestamp().to_string());
    let mut snapshot = ticket.clone();
    snapshot.event = Some(EventKind::new(EventKind::CREATED));
    TicketEvent {
        dedup_key: format!("backfill:{}:{stamp}", ticket.id),
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
