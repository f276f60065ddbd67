//! Catch-up after downtime: at start, and after every quiet spell, the open tickets changed in
//! Zendesk since deskbot last heard from it are read from the Incremental Ticket Export and queued,
//! each once per change it has not heard of.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{job, updated, BackfillError, Pacing, Reader, Selection};
use crate::metrics::Metrics;
use crate::queue::store::{Enqueued, NewEvent, Store, StoreError};
use crate::ticket::Ticket;
use crate::zendesk::client::ZendeskClient;

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
