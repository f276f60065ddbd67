//! Reading existing tickets from Zendesk, for `deskbot backfill`: the Incremental Ticket Export
//! page by page, paced to its own rate limit (10 requests a minute by default), waiting out 429s
//! and outages, and restarting an expired cursor from the last ticket seen rather than from zero.
//!
//! Decisions and updates are not made here: the command decides each ticket with the policy, and
//! `--apply` hands the tickets to the durable queue, where the worker updates them as it does a
//! webhook's (same diff, `safe_update`, rate limiter).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ticket::{parse_time, EventKind, Ticket};
use crate::webhook::payload::{Source, TicketEvent};
use crate::zendesk::client::{ErrorClass, ExportFrom, ZendeskClient, ZendeskError};

/// Which tickets a backfill reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Tickets changed at or after this instant.
    pub since: DateTime<Utc>,
    /// Statuses to decide (lower case); others are read and skipped.
    pub statuses: Vec<String>,
}

impl Selection {
    /// Statuses a backfill decides unless told otherwise: every one that is not finished.
    pub const OPEN: &'static [&'static str] = &["new", "open", "pending", "hold"];

    /// A key naming the selection, under which `--apply` keeps its cursor.
    pub fn key(&self) -> String {
        let mut statuses = self.statuses.clone();
        statuses.sort();
        format!(
            "since={};status={}",
            self.since.timestamp(),
            statuses.join(",")
        )
    }

    /// Whether the ticket is one to decide.
    pub fn wants(&self, t: &Ticket) -> bool {
        t.status
            .as_deref()
            .is_some_and(|s| self.statuses.iter().any(|w| w == s))
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
    pub next: Option<ExportFrom>,
}

/// The export, read page by page.
pub struct Reader<'c> {
    client: &'c ZendeskClient,
    pacing: Pacing,
    from: Option<ExportFrom>,
    /// The newest `updated_at` seen, to restart an expired cursor from.
    last_seen: Option<DateTime<Utc>>,
    last_request: Option<tokio::time::Instant>,
}

impl<'c> Reader<'c> {
    /// A reader starting at `from` (the selection's start, or a kept cursor).
    pub fn new(client: &'c ZendeskClient, pacing: Pacing, from: ExportFrom) -> Self {
        Reader {
            client,
            pacing,
            from: Some(from),
            last_seen: None,
            last_request: None,
        }
    }

    /// Where the next page starts (`None` once the export is read to its end).
    pub fn position(&self) -> Option<&ExportFrom> {
        self.from.as_ref()
    }

    /// The next page, or `Ok(None)` at the end of the export.
    pub async fn next_page(&mut self) -> Result<Option<Page>, BackfillError> {
        let Some(from) = self.from.clone() else {
            return Ok(None);
        };
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
            let wait = match err.class() {
                ErrorClass::RateLimited(after) => {
                    // A 429 says how long; it is not a failure of the export.
                    tries -= 1;
                    after.unwrap_or(Duration::from_secs(60))
                }
                ErrorClass::Unavailable(after) | ErrorClass::Transient(after) => {
                    after.unwrap_or(Duration::from_secs(1 << tries.min(6)))
                }
                ErrorClass::Permanent | ErrorClass::Conflict | ErrorClass::NotFound => {
                    // An expired or unknown cursor: start again from the last change seen
                    // (a ticket seen twice is decided twice, never skipped).
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
                    return Err(BackfillError::Refused(err.advice()));
                }
            };
            if tries >= self.pacing.attempts {
                return Err(BackfillError::GaveUp {
                    attempts: tries,
                    last: err.to_string(),
                });
            }
            tokio::time::sleep(wait.min(self.pacing.max_wait)).await;
        };
        let done = page.end_of_stream || page.tickets.is_empty();
        let next = match (&page.after_cursor, done) {
            (Some(c), false) => Some(ExportFrom::Cursor(c.clone())),
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

/// How far before the newest stored job a catch-up starts: changes that happened while a
/// webhook was in flight are covered too.
pub const CATCH_UP_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// After a start: asks Zendesk for the open tickets changed since deskbot last queued anything
/// (less [`CATCH_UP_MARGIN`]) and queues them as backfill jobs, so the changes whose webhooks
/// were lost while deskbot was down are decided. A fresh database (nothing ever queued) has
/// nothing to catch up.
pub async fn catch_up(
    store: &crate::queue::store::Store,
    client: &ZendeskClient,
    pacing: Pacing,
    now: DateTime<Utc>,
) -> Result<CatchUp, CatchUpError> {
    let Some(newest) = store.newest_received().await? else {
        return Ok(CatchUp::default());
    };
    let since = newest - CATCH_UP_MARGIN;
    let selection = Selection {
        since,
        statuses: Selection::OPEN.iter().map(|s| s.to_string()).collect(),
    };
    let mut reader = Reader::new(client, pacing, ExportFrom::Start(since.timestamp()));
    let mut queued = 0;
    while let Some(page) = reader.next_page().await? {
        for t in page.tickets.iter().filter(|t| selection.wants(t)) {
            let e = store
                .enqueue(crate::queue::store::NewEvent {
                    event: job(t),
                    invocation_key: None,
                    received_at: now,
                    background: false,
                })
                .await?;
            if matches!(e, crate::queue::store::Enqueued::Queued(_)) {
                queued += 1;
            }
        }
    }
    Ok(CatchUp {
        queued,
        since: Some(newest),
    })
}

/// What a catch-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Tickets queued.
    pub queued: usize,
    /// When the newest job before the start was queued (`None`: a fresh database).
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
    Store(#[from] crate::queue::store::StoreError),
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
