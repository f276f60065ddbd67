//! Re-apply after a policy change (`DESKBOT_REAPPLY=open`): the open tickets are decided again
//! with the new policy, and those it decides differently are queued in the background lane.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::catch_up::CatchUpError;
use super::{job_keyed, Pacing, Reader, Selection};
use crate::metrics::Metrics;
use crate::policy::PolicyHandle;
use crate::queue::store::{NewEvent, Store};
use crate::ticket::EventKind;
use crate::zendesk::client::ZendeskClient;

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
            store
                .enqueue(NewEvent {
                    event: job_keyed(&format!("reapply:{version}"), &t),
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
