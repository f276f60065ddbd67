//! The worker: takes jobs in order per ticket, reads the ticket, asks the policy, sends one update.
//!
//! [`Worker::step`] does one job and returns; [`Worker::run`] is only a loop that sleeps between
//! steps. Every decision about retrying is written to the database before the step returns, so a
//! crash at any point leaves the job either done or due again; redoing it is harmless because the
//! update is a diff against the ticket as re-read (see `update::plan`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::config::RetryConfig;
use crate::metrics::Metrics;
use crate::policy::{Decision, PolicyHandle, NOTE_MARKER};
use crate::queue::retry;
use crate::queue::store::{Job, Store, StoreError};
use crate::ticket::{Organization, Ticket};
use crate::update;
use crate::zendesk::model::TicketUpdate;
use crate::zendesk::{ErrorClass, ZendeskClient, ZendeskError};

/// How long a claimed job is reserved; longer than any single job takes.
const LEASE: Duration = Duration::from_secs(120);
/// How long an organization read from Zendesk is reused.
const ORG_TTL: Duration = Duration::from_secs(60);
/// Re-reads after a 409 before the job is deferred like any other failure.
const MAX_CONFLICTS: u32 = 3;
/// Longest sleep while idle, so a job deferred by another process is not missed for long.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// After a stop is requested, how long an in-flight job may take to finish before it is dropped
/// (left leased, so it is redone on the next start; redoing is harmless because updates are diffs).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Shortest sleep while idle: a clock step between `claim` and `next_due` must not become a busy loop.
const MIN_IDLE: Duration = Duration::from_millis(5);

/// How one job ended, kept in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The update was sent.
    Updated {
        /// What the policy decided.
        decision: Decision,
        /// What was sent.
        update: TicketUpdate,
    },
    /// The ticket already matches the decision: nothing sent.
    NoChange {
        /// What the policy decided.
        decision: Decision,
    },
    /// Dry run: the update that would have been sent.
    DryRun {
        /// What the policy decided.
        decision: Decision,
        /// What would have been sent.
        update: TicketUpdate,
    },
    /// The comment that caused the event is deskbot's own note.
    OwnNote,
    /// The ticket no longer exists (404).
    TicketGone,
    /// Will be tried again.
    Deferred {
        /// When.
        until: DateTime<Utc>,
        /// Why.
        error: String,
        /// Whether this try counts toward the limit (a 429 does not).
        counted: bool,
    },
    /// Gave up.
    Dead {
        /// Why.
        error: String,
    },
}

impl Outcome {
    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Updated { .. } => "updated",
            Outcome::NoChange { .. } => "no_change",
            Outcome::DryRun { .. } => "dry_run",
            Outcome::OwnNote => "own_note",
            Outcome::TicketGone => "ticket_gone",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Dead { .. } => "dead",
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A job was handled.
    Processed {
        /// Job id.
        id: i64,
        /// How it ended.
        outcome: Box<Outcome>,
    },
    /// Nothing was due; the next job is due at this time, if any.
    Idle {
        /// Next due time.
        next_due: Option<DateTime<Utc>>,
    },
}

/// The queue worker.
pub struct Worker {
    store: Store,
    policy: PolicyHandle,
    zendesk: Option<ZendeskClient>,
    dry_run: bool,
    retry: RetryConfig,
    metrics: Metrics,
    orgs: HashMap<u64, (Instant, Organization)>,
    /// After a 429 the whole account waits, not just the job that saw it.
    paused_until: Option<DateTime<Utc>>,
}

enum Failure {
    Gone,
    Retry {
        error: ZendeskError,
        after: Option<Duration>,
        counts: bool,
    },
    Fatal(ZendeskError),
}

impl Worker {
    /// A worker over `store`; without a client it decides on the event's own snapshot (dry run).
    pub fn new(
        store: Store,
        policy: PolicyHandle,
        zendesk: Option<ZendeskClient>,
        dry_run: bool,
        retry: RetryConfig,
        metrics: Metrics,
    ) -> Self {
        Worker {
            store,
            policy,
            dry_run: dry_run || zendesk.is_none(),
            zendesk,
            retry,
            metrics,
            orgs: HashMap::new(),
            paused_until: None,
        }
    }

    /// Handles the next due job, if any.
    pub async fn step(&mut self, now: DateTime<Utc>) -> Result<Step, StoreError> {
        if let Some(until) = self.paused_until.filter(|u| *u > now) {
            return Ok(Step::Idle {
                next_due: Some(until),
            });
        }
        let Some(job) = self.store.claim(now, LEASE).await? else {
            return Ok(Step::Idle {
                next_due: self.store.next_due().await?,
            });
        };
        let span = tracing::info_span!("job", id = job.id, ticket_id = job.event.ticket_id, kind = %job.event.kind);
        let outcome = self.handle(&job, now).instrument(span).await?;
        self.metrics.processed(outcome.label());
        Ok(Step::Processed {
            id: job.id,
            outcome: Box::new(outcome),
        })
    }

    /// Processes a claimed job and records how it ended.
    async fn handle(&mut self, job: &Job, now: DateTime<Utc>) -> Result<Outcome, StoreError> {
        let outcome = self.process(job, now).await;
        let record = serde_json::to_string(&outcome).unwrap_or_default();
        match &outcome {
            Outcome::Deferred {
                until,
                error,
                counted,
            } => {
                self.store
                    .defer(job.id, *until, error.clone(), *counted)
                    .await?;
                warn!(until = %until, error = %error, "job deferred");
            }
            Outcome::Dead { error } => {
                self.store.dead(job.id, record, error.clone(), now).await?;
                error!(error = %error, "job gave up: listed by `deskbot dead-letters`");
            }
            _ => {
                self.store.complete(job.id, record, now).await?;
                info!(outcome = outcome.label(), "job done");
            }
        }
        Ok(outcome)
    }

    async fn process(&mut self, job: &Job, now: DateTime<Utc>) -> Outcome {
        let ev = &job.event;
        if ev
            .comment
            .as_ref()
            .is_some_and(|c| c.body.trim_start().starts_with(NOTE_MARKER))
        {
            return Outcome::OwnNote;
        }
        let policy = self.policy.current();
        let mut conflicts = 0;
        loop {
            let ticket = match self.read_ticket(job).await {
                Ok(t) => t,
                Err(f) => return self.failure(job, f, now),
            };
            let decision = policy.decide(&ticket, now);
            debug!(?decision, "decided");
            let Some(plan) = update::plan(&ticket, &decision) else {
                return Outcome::NoChange { decision };
            };
            let Some(client) = self.zendesk.as_ref().filter(|_| !self.dry_run) else {
                info!(update = %serde_json::to_string(&plan).unwrap_or_default(), "dry run: would update the ticket");
                return Outcome::DryRun {
                    decision,
                    update: plan,
                };
            };
            match client.update_ticket(ev.ticket_id, &plan).await {
                Ok(()) => {
                    return Outcome::Updated {
                        decision,
                        update: plan,
                    }
                }
                Err(e) if e.class() == ErrorClass::Conflict && conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    info!(
                        conflicts,
                        "ticket changed while deciding (409): reading it again"
                    );
                }
                Err(e) => return self.failure(job, classify(e), now),
            }
        }
    }

    /// The ticket as it is now: from Zendesk, or the event's snapshot when there is no client.
    async fn read_ticket(&mut self, job: &Job) -> Result<Ticket, Failure> {
        let ev = &job.event;
        let Some(client) = self.zendesk.clone() else {
            return Ok(ev.snapshot.clone());
        };
        let mut ticket = client.show_ticket(ev.ticket_id).await.map_err(classify)?;
        if let Some(org_id) = ticket.organization_id {
            ticket.organization = self.organization(&client, org_id).await?;
        }
        ticket.event = Some(ev.kind.clone());
        ticket.latest_comment = ev.comment.as_ref().map(|c| c.body.clone());
        ticket.comment_by_staff = ev.comment.as_ref().and_then(|c| c.by_staff);
        Ok(ticket)
    }

    async fn organization(
        &mut self,
        client: &ZendeskClient,
        id: u64,
    ) -> Result<Option<Organization>, Failure> {
        if let Some((at, org)) = self.orgs.get(&id) {
            if at.elapsed() < ORG_TTL {
                return Ok(Some(org.clone()));
            }
        }
        match client.show_organization(id).await.map_err(classify) {
            Ok(org) => {
                self.orgs.insert(id, (Instant::now(), org.clone()));
                Ok(Some(org))
            }
            // An organization deleted since the ticket was filed must not stop the ticket's job.
            Err(Failure::Gone) => Ok(None),
            Err(f) => Err(f),
        }
    }

    fn failure(&mut self, job: &Job, failure: Failure, now: DateTime<Utc>) -> Outcome {
        match failure {
            Failure::Gone => Outcome::TicketGone,
            Failure::Fatal(e) => Outcome::Dead {
                error: e.to_string(),
            },
            Failure::Retry {
                error,
                after,
                counts,
            } => {
                let tries = job.attempts + u32::from(counts);
                if counts && tries >= self.retry.max_attempts {
                    return Outcome::Dead {
                        error: format!("{error} (after {tries} tries)"),
                    };
                }
                let wait = retry::delay(
                    &self.retry,
                    tries.max(1),
                    after,
                    fastrand::f64() * 2.0 - 1.0,
                );
                let until = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                if !counts {
                    self.paused_until = Some(until);
                }
                Outcome::Deferred {
                    until,
                    error: error.to_string(),
                    counted: counts,
                }
            }
        }
    }

    /// Runs steps until `shutdown` is cancelled; an in-flight job is finished first.
    pub async fn run(mut self, shutdown: CancellationToken) {
        match self.store.release_leases().await {
            Ok(0) => {}
            Ok(n) => info!(jobs = n, "resuming jobs interrupted by the last stop"),
            Err(e) => error!(error = %e, "could not release leases"),
        }
        while !shutdown.is_cancelled() {
            let now = Utc::now();
            let stepped = tokio::select! {
                r = self.step(now) => r,
                _ = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                } => {
                    warn!("stopping during a job: it resumes on the next start");
                    break;
                }
            };
            let wait = match stepped {
                Ok(Step::Processed { .. }) => continue,
                Ok(Step::Idle { next_due }) => next_due
                    .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(IDLE_POLL)
                    .clamp(MIN_IDLE, IDLE_POLL),
                Err(e) => {
                    error!(error = %e, "queue error; retrying in 1 s");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.store.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        info!("worker stopped");
    }
}

fn classify(e: ZendeskError) -> Failure {
    match e.class() {
        ErrorClass::NotFound => Failure::Gone,
        ErrorClass::Permanent => Failure::Fatal(e),
        ErrorClass::RateLimited(after) => Failure::Retry {
            error: e,
            after: Some(after.unwrap_or(Duration::from_secs(60))),
            counts: false,
        },
        ErrorClass::Transient(after) => Failure::Retry {
            error: e,
            after,
            counts: true,
        },
        ErrorClass::Conflict => Failure::Retry {
            error: e,
            after: None,
            counts: true,
        },
    }
}
