//! The worker: takes jobs in order per ticket, reads the ticket, asks the policy, sends one update.
//!
//! [`Worker::step`] claims the waiting jobs of the next due tickets (up to `CONCURRENT_TICKETS`,
//! handled at once) and handles each ticket's jobs (one, or several events that queued up for it)
//! as one: one read, each event decided in turn on the ticket as the ones before it left it, one
//! update. [`Worker::run`] is only a loop that sleeps between steps. Every decision about retrying
//! is written to the database before the step returns, so a crash at any point leaves the jobs
//! either done or due again; redoing them is harmless because the update is a diff against the
//! ticket as re-read (see `update::diff`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::config::RetryConfig;
use crate::metrics::Metrics;
use crate::policy::{Decision, PolicyHandle, NOTE_MARKER};
use crate::queue::retry;
use crate::queue::store::{Job, Settle, Store, StoreError};
use crate::ticket::{Organization, Ticket};
use crate::update;
use crate::zendesk::model::TicketUpdate;
use crate::zendesk::{ErrorClass, ZendeskClient, ZendeskError};

/// How long a claimed job is reserved; longer than any single job takes.
const LEASE: Duration = Duration::from_secs(120);
/// Most events of one ticket handled as one update.
const MAX_GROUP: usize = 64;
/// Tickets handled at once. Their Zendesk calls overlap (each still waits its turn in the rate
/// limiter), so a backlog drains at the account's limit rather than at one round trip per ticket.
const CONCURRENT_TICKETS: usize = 8;
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
    /// Decided together with later events of the same ticket: the update is recorded on job `into`.
    Coalesced {
        /// The job whose record holds the update.
        into: i64,
        /// What the policy decided for this event.
        decision: Decision,
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
            Outcome::Coalesced { .. } => "coalesced",
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
    /// Jobs were handled: each id with how it ended.
    Processed(Vec<(i64, Outcome)>),
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
    orgs: Mutex<HashMap<u64, (Instant, Organization)>>,
    pause: Mutex<Pause>,
}

/// After a 429, or while Zendesk is down, the whole account waits, not just the job that saw it.
#[derive(Default)]
struct Pause {
    until: Option<DateTime<Utc>>,
    /// Calls in a row that found Zendesk unavailable: sets the length of the next pause.
    outage: u32,
}

impl Pause {
    /// Waits until `until` at least; an earlier pause of another ticket's call is not shortened.
    fn extend(&mut self, until: DateTime<Utc>) {
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
    }
}

/// How a group of jobs ended: one outcome per job, or one for all (a failure).
enum Group {
    Each(Vec<Outcome>),
    All(Box<Outcome>),
}

impl Group {
    /// One outcome per decision: `last` for the final event's, `earlier` for the ones before it.
    fn each(
        mut decisions: Vec<Decision>,
        earlier: impl Fn(Decision) -> Outcome,
        last: impl FnOnce(Decision) -> Outcome,
    ) -> Group {
        let final_decision = decisions.pop().unwrap_or_default();
        let mut all: Vec<Outcome> = decisions.into_iter().map(earlier).collect();
        all.push(last(final_decision));
        Group::Each(all)
    }
}

enum Failure {
    Gone,
    Retry {
        error: ZendeskError,
        after: Option<Duration>,
        counts: bool,
    },
    /// Zendesk is down: pause everything, charge no job.
    Unavailable {
        error: ZendeskError,
        after: Option<Duration>,
    },
    /// This ticket had all the updates Zendesk allows for now.
    TicketBusy(Duration),
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
            orgs: Mutex::new(HashMap::new()),
            pause: Mutex::new(Pause::default()),
        }
    }

    fn pause(&self) -> MutexGuard<'_, Pause> {
        self.pause.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn orgs(&self) -> MutexGuard<'_, HashMap<u64, (Instant, Organization)>> {
        self.orgs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles the waiting jobs of the next due tickets (up to `CONCURRENT_TICKETS`), if any.
    pub async fn step(&self, now: DateTime<Utc>) -> Result<Step, StoreError> {
        if let Some(until) = self.pause().until.filter(|u| *u > now) {
            return Ok(Step::Idle {
                next_due: Some(until),
            });
        }
        let groups = self
            .store
            .claim(now, LEASE, CONCURRENT_TICKETS, MAX_GROUP)
            .await?;
        if groups.is_empty() {
            return Ok(Step::Idle {
                next_due: self.store.next_due().await?,
            });
        }
        let outcomes = join_all(groups.iter().map(|jobs| {
            let head = &jobs[0];
            let span = tracing::info_span!(
                "job",
                id = head.id,
                ticket_id = head.event.ticket_id,
                events = jobs.len()
            );
            self.process(jobs, now).instrument(span)
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
        let outcomes = self.record(outcomes, now).await?;
        for (_, outcome) in &outcomes {
            self.metrics.processed(outcome.label());
        }
        Ok(Step::Processed(outcomes))
    }

    /// Records how each job ended, all in one transaction.
    async fn record(
        &self,
        outcomes: Vec<(i64, Outcome)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, Outcome)>, StoreError> {
        let mut settle = Vec::with_capacity(outcomes.len());
        for (id, outcome) in &outcomes {
            let record = || serde_json::to_string(outcome).unwrap_or_default();
            settle.push((
                *id,
                match outcome {
                    Outcome::Deferred {
                        until,
                        error,
                        counted,
                    } => Settle::Defer {
                        until: *until,
                        error: error.clone(),
                        counts: *counted,
                    },
                    Outcome::Dead { error } => Settle::Dead {
                        outcome: record(),
                        error: error.clone(),
                    },
                    _ => Settle::Done { outcome: record() },
                },
            ));
        }
        self.store.settle(settle, now).await?;
        for (id, outcome) in &outcomes {
            match outcome {
                Outcome::Deferred { until, error, .. } => {
                    warn!(job = id, until = %until, error = %error, "job deferred");
                }
                Outcome::Dead { error } => {
                    error!(job = id, error = %error, "job gave up: listed by `deskbot dead-letters`");
                }
                _ => info!(job = id, outcome = outcome.label(), "job done"),
            }
        }
        Ok(outcomes)
    }

    /// Decides every job of one ticket in turn and sends at most one update for all of them.
    async fn process(&self, jobs: &[Job], now: DateTime<Utc>) -> Vec<(i64, Outcome)> {
        let (own, live): (Vec<&Job>, Vec<&Job>) = jobs.iter().partition(|j| {
            j.event
                .comment
                .as_ref()
                .is_some_and(|c| c.body.trim_start().starts_with(NOTE_MARKER))
        });
        let mut outcomes: Vec<(i64, Outcome)> =
            own.iter().map(|j| (j.id, Outcome::OwnNote)).collect();
        let Some(last) = live.last() else {
            return outcomes;
        };
        let attempts = live.iter().map(|j| j.attempts).max().unwrap_or(0);
        let ticket_id = last.event.ticket_id;
        let policy = self.policy.current();
        let mut conflicts = 0;
        let settled = loop {
            let before = match self.read_ticket(last).await {
                Ok(t) => t,
                Err(f) => break Group::All(Box::new(self.failure(attempts, f, now))),
            };
            let mut after = before.clone();
            let mut decisions = Vec::with_capacity(live.len());
            let mut notes = Vec::new();
            for job in &live {
                let ev = &job.event;
                after.event = Some(ev.kind.clone());
                after.latest_comment = ev.comment.as_ref().map(|c| c.body.clone());
                after.comment_by_staff = ev.comment.as_ref().and_then(|c| c.by_staff);
                let decision = policy.decide(&after, now);
                debug!(job = job.id, ?decision, "decided");
                if update::apply(&mut after, &decision) {
                    notes.extend(decision.note.clone());
                }
                decisions.push(decision);
            }
            let note = (!notes.is_empty()).then(|| notes.join("\n\n"));
            let coalesced = |decision| Outcome::Coalesced {
                into: last.id,
                decision,
            };
            let Some(plan) = update::diff(&before, &after, note) else {
                let no_change = |decision| Outcome::NoChange { decision };
                break Group::each(decisions, no_change, no_change);
            };
            let Some(client) = self.zendesk.as_ref().filter(|_| !self.dry_run) else {
                info!(update = %serde_json::to_string(&plan).unwrap_or_default(), "dry run: would update the ticket");
                break Group::each(decisions, coalesced, |decision| Outcome::DryRun {
                    decision,
                    update: plan,
                });
            };
            let wait = client.ticket_update_wait(ticket_id);
            if !wait.is_zero() {
                break Group::All(Box::new(self.failure(
                    attempts,
                    Failure::TicketBusy(wait),
                    now,
                )));
            }
            match client.update_ticket(ticket_id, &plan).await {
                Ok(()) => {
                    self.pause().outage = 0;
                    break Group::each(decisions, coalesced, |decision| Outcome::Updated {
                        decision,
                        update: plan,
                    });
                }
                Err(e) if e.class() == ErrorClass::Conflict && conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    info!(
                        conflicts,
                        "ticket changed while deciding (409): reading it again"
                    );
                }
                Err(e) => break Group::All(Box::new(self.failure(attempts, classify(e), now))),
            }
        };
        let per_job = match settled {
            Group::Each(v) => v,
            Group::All(o) => vec![*o; live.len()],
        };
        outcomes.extend(live.iter().map(|j| j.id).zip(per_job));
        outcomes.sort_by_key(|(id, _)| *id);
        outcomes
    }

    /// The ticket as it is now: from Zendesk, or the event's snapshot when there is no client.
    async fn read_ticket(&self, job: &Job) -> Result<Ticket, Failure> {
        let ev = &job.event;
        let Some(client) = self.zendesk.as_ref() else {
            return Ok(ev.snapshot.clone());
        };
        let read = client.show_ticket(ev.ticket_id).await.map_err(classify);
        let mut ticket = self.reached(read)?;
        if let Some(org_id) = ticket.organization_id {
            ticket.organization = self.organization(client, org_id).await?;
        }
        Ok(ticket)
    }

    /// Notes that Zendesk answered (ending an outage pause's growth), passing the result through.
    fn reached<T>(&self, r: Result<T, Failure>) -> Result<T, Failure> {
        if !matches!(r, Err(Failure::Unavailable { .. })) {
            self.pause().outage = 0;
        }
        r
    }

    async fn organization(
        &self,
        client: &ZendeskClient,
        id: u64,
    ) -> Result<Option<Organization>, Failure> {
        let cached = self
            .orgs()
            .get(&id)
            .filter(|(at, _)| at.elapsed() < ORG_TTL)
            .map(|(_, org)| org.clone());
        if cached.is_some() {
            return Ok(cached);
        }
        match client.show_organization(id).await.map_err(classify) {
            Ok(org) => {
                self.orgs().insert(id, (Instant::now(), org.clone()));
                Ok(Some(org))
            }
            // An organization deleted since the ticket was filed must not stop the ticket's job.
            Err(Failure::Gone) => Ok(None),
            Err(f) => Err(f),
        }
    }

    fn failure(&self, attempts: u32, failure: Failure, now: DateTime<Utc>) -> Outcome {
        let at = |wait: Duration| {
            now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
        };
        let jitter = fastrand::f64() * 2.0 - 1.0;
        match failure {
            Failure::Gone => Outcome::TicketGone,
            Failure::Fatal(e) => Outcome::Dead {
                error: e.to_string(),
            },
            // `wait` was measured after the ticket was read, well after `now`, and the queue keeps
            // whole milliseconds: counted from `now` the job would wake a little early and be put
            // back once more, so count from the present and round up.
            Failure::TicketBusy(wait) => Outcome::Deferred {
                until: Utc::now()
                    + chrono::Duration::from_std(wait + Duration::from_millis(1))
                        .unwrap_or(chrono::Duration::MAX),
                error: "this ticket had all the updates Zendesk allows per ticket (30 in 10 minutes): waiting for the oldest to leave the window".into(),
                counted: false,
            },
            Failure::Unavailable { error, after } => {
                let mut pause = self.pause();
                pause.outage += 1;
                let until = at(retry::delay(&self.retry, pause.outage, after, jitter));
                pause.extend(until);
                Outcome::Deferred {
                    until,
                    error: error.to_string(),
                    counted: false,
                }
            }
            Failure::Retry {
                error,
                after,
                counts,
            } => {
                let tries = attempts + u32::from(counts);
                if counts && tries >= self.retry.max_attempts {
                    return Outcome::Dead {
                        error: format!("{error} (after {tries} tries)"),
                    };
                }
                let until = at(retry::delay(&self.retry, tries.max(1), after, jitter));
                if !counts {
                    self.pause().extend(until);
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
    pub async fn run(self, shutdown: CancellationToken) {
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
                Ok(Step::Processed(_)) => continue,
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
        ErrorClass::Unavailable(after) => Failure::Unavailable { error: e, after },
        ErrorClass::Conflict => Failure::Retry {
            error: e,
            after: None,
            counts: true,
        },
    }
}
