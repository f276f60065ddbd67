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
use crate::notify::{Notifier, NotifyError};
use crate::policy::{Decision, Policy, PolicyHandle, PolicySet, NOTE_MARKER};
use crate::queue::clocks::ClockSave;
use crate::queue::retry;
use crate::queue::store::{Job, Lease, NewEvent, Settle, Store, StoreError};
use crate::queue::tracking;
use crate::sla::clock::{Effect, Metric, TicketClocks, Timer};
use crate::ticket::{EventKind, Organization, SlaAlert, Ticket};
use crate::update;
use crate::webhook::payload::{Source, TicketEvent};
use crate::zendesk::model::{SeenComment, TicketUpdate};
use crate::zendesk::{ErrorClass, ZendeskClient, ZendeskError};

/// How long a claimed job is reserved. The worker extends it every [`HEARTBEAT`] while the job
/// runs, so only an instance that died (or stalled) loses it: another instance takes the job over
/// this long after the last extension.
const LEASE: Duration = Duration::from_secs(30);
/// How often the leases of running jobs are extended.
const HEARTBEAT: Duration = Duration::from_secs(10);
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
    /// The event moved only SLA clocks (no rule reacts to it, no field changes): nothing read or sent.
    ClockOnly {
        /// What it did to the clocks.
        effects: Vec<Effect>,
    },
    /// A `notify` message was delivered.
    Notified {
        /// The message.
        text: String,
    },
    /// A `notify` message was only logged: dry run, or no `DESKBOT_NOTIFY_URL`.
    NotifyLogged {
        /// The message.
        text: String,
    },
    /// Dry run without credentials, on an event that does not carry the ticket (a trigger body):
    /// nothing to decide on.
    NotRead {
        /// Why.
        reason: String,
    },
    /// An SLA timer that no longer had cause to act when its time came.
    TimerMoot {
        /// Why (fulfilled, paused, moved, already acted).
        reason: String,
    },
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
    /// The decision the job made, when it made one.
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            Outcome::Updated { decision, .. }
            | Outcome::NoChange { decision }
            | Outcome::DryRun { decision, .. }
            | Outcome::Coalesced { decision, .. } => Some(decision),
            _ => None,
        }
    }

    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Updated { .. } => "updated",
            Outcome::NoChange { .. } => "no_change",
            Outcome::DryRun { .. } => "dry_run",
            Outcome::Coalesced { .. } => "coalesced",
            Outcome::OwnNote => "own_note",
            Outcome::ClockOnly { .. } => "clock_only",
            Outcome::TimerMoot { .. } => "timer_moot",
            Outcome::NotRead { .. } => "not_read",
            Outcome::Notified { .. } => "notified",
            Outcome::NotifyLogged { .. } => "notify_logged",
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
    notifier: Option<Notifier>,
    /// The leases of the jobs running now, freed if a stop cuts them short.
    in_flight: Mutex<Vec<Lease>>,
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
    /// One outcome per job. `Err` holds an outcome fixed in advance (a timer with no cause to
    /// act). The last decision's outcome comes from `last`, the others' from `earlier`; when an
    /// update was sent (`sent`) and no job decided anything, the final job records it.
    fn each(
        decisions: Vec<Result<Decision, Outcome>>,
        earlier: impl Fn(Decision) -> Outcome,
        last: impl FnOnce(Decision) -> Outcome,
        sent: bool,
    ) -> Group {
        let n = decisions.len();
        let holder = decisions
            .iter()
            .rposition(Result::is_ok)
            .or((sent && n > 0).then(|| n - 1));
        let mut last = Some(last);
        let all = decisions
            .into_iter()
            .enumerate()
            .map(|(i, d)| match last.take_if(|_| Some(i) == holder) {
                Some(f) => f(d.unwrap_or_default()),
                None => match d {
                    Ok(d) => earlier(d),
                    Err(o) => o,
                },
            })
            .collect();
        Group::Each(all)
    }
}

enum Failure {
    Gone,
    /// No client, and the event carries no ticket to decide on.
    NoTicket,
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
            notifier: None,
            in_flight: Mutex::new(Vec::new()),
        }
    }

    /// Delivers rules' `notify` messages through `notifier` (without one they are only logged).
    pub fn with_notifier(mut self, notifier: Option<Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    fn pause(&self) -> MutexGuard<'_, Pause> {
        self.pause.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_flight(&self) -> MutexGuard<'_, Vec<Lease>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
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
        // Due SLA timers join their tickets' queues here, behind events already waiting.
        self.store.promote_timers(now).await?;
        let groups = self
            .store
            .claim(now, LEASE, CONCURRENT_TICKETS, MAX_GROUP)
            .await?;
        if groups.is_empty() {
            return Ok(Step::Idle {
                next_due: self.store.next_due().await?,
            });
        }
        let leases: Vec<Lease> = groups.iter().flatten().map(Job::lease).collect();
        *self.in_flight() = leases.clone();
        let work = join_all(groups.iter().map(|jobs| {
            let head = &jobs[0];
            let span = tracing::info_span!(
                "job",
                id = head.id,
                ticket_id = head.event.ticket_id,
                events = jobs.len()
            );
            self.process(jobs, now).instrument(span)
        }));
        let handled = self.heartbeat(work, &leases, now).await;
        let mut outcomes = Vec::new();
        let mut clocks = Vec::new();
        for (o, c) in handled {
            outcomes.extend(o);
            clocks.extend(c);
        }
        let outcomes = self.record(outcomes, &leases, clocks, now).await;
        self.in_flight().clear();
        let outcomes = outcomes?;
        for (_, outcome) in &outcomes {
            self.metrics.processed(outcome.label());
        }
        Ok(Step::Processed(outcomes))
    }

    /// Runs `work` while extending `leases` every [`HEARTBEAT`], so that no other instance takes
    /// the jobs over while they run.
    async fn heartbeat<F: std::future::Future>(
        &self,
        work: F,
        leases: &[Lease],
        now: DateTime<Utc>,
    ) -> F::Output {
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(started + HEARTBEAT, HEARTBEAT);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    let until = now + started.elapsed() + LEASE;
                    match self.store.extend(leases.to_vec(), until).await {
                        Ok(lost) if !lost.is_empty() => {
                            warn!(jobs = ?lost.iter().map(|l| l.id).collect::<Vec<_>>(),
                                  "lease lost: another instance has taken these jobs over");
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "could not extend the leases of running jobs"),
                    }
                }
            }
        }
    }

    /// Records how each job ended, with the SLA clocks the jobs moved, all in one transaction.
    /// A job whose lease was lost is left to the instance that took it over.
    async fn record(
        &self,
        outcomes: Vec<(i64, Outcome)>,
        leases: &[Lease],
        clocks: Vec<ClockSave>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, Outcome)>, StoreError> {
        let tokens: HashMap<i64, i64> = leases.iter().map(|l| (l.id, l.token)).collect();
        let mut settle = Vec::with_capacity(outcomes.len());
        for (id, outcome) in &outcomes {
            let record = || serde_json::to_string(outcome).unwrap_or_default();
            settle.push((
                Lease {
                    id: *id,
                    token: tokens.get(id).copied().unwrap_or_default(),
                },
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
        let matched = outcomes
            .iter()
            .filter_map(|(_, o)| o.decision())
            .flat_map(|d| d.matched_rules.iter().cloned())
            .collect();
        let lost = self
            .store
            .settle_with_clocks(settle, clocks, matched, now)
            .await?;
        if !lost.is_empty() {
            warn!(jobs = ?lost.iter().map(|l| l.id).collect::<Vec<_>>(),
                  "lease lost before the result was recorded: the instance that took these jobs over records them");
        }
        let outcomes: Vec<(i64, Outcome)> = outcomes
            .into_iter()
            .filter(|(id, _)| !lost.iter().any(|l| l.id == *id))
            .collect();
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

    /// Decides every job of one ticket in turn and sends at most one update for all of them;
    /// returns each job's outcome and the ticket's clocks to save with them.
    async fn process(
        &self,
        jobs: &[Job],
        now: DateTime<Utc>,
    ) -> (Vec<(i64, Outcome)>, Option<ClockSave>) {
        let (own, live): (Vec<&Job>, Vec<&Job>) = jobs.iter().partition(|j| {
            j.event
                .comment
                .as_ref()
                .is_some_and(|c| c.body.trim_start().starts_with(NOTE_MARKER))
        });
        let mut outcomes: Vec<(i64, Outcome)> =
            own.iter().map(|j| (j.id, Outcome::OwnNote)).collect();
        let (notices, live): (Vec<&Job>, Vec<&Job>) =
            live.into_iter().partition(|j| j.event.notice.is_some());
        for job in notices {
            outcomes.push((job.id, self.deliver(job, now).await));
        }
        let Some(last) = live.last() else {
            outcomes.sort_by_key(|(id, _)| *id);
            return (outcomes, None);
        };
        let attempts = live.iter().map(|j| j.attempts).max().unwrap_or(0);
        let ticket_id = last.event.ticket_id;
        let set = self.policy.current();
        // Without SLA clocks in any policy there is nothing to read back for the ticket.
        let stored = if set.runs_clocks() {
            self.store.clocks(ticket_id).await
        } else {
            Ok(None)
        };
        let (per_job, save) = match stored {
            Ok(stored) => match self.clock_only(&set, &live, stored.as_ref(), now) {
                Some(done) => done,
                None => {
                    self.decide_and_update(&set, &live, stored, attempts, now)
                        .await
                }
            },
            Err(e) => (vec![self.store_failure(e, now); live.len()], None),
        };
        outcomes.extend(live.iter().map(|j| j.id).zip(per_job));
        outcomes.sort_by_key(|(id, _)| *id);
        (outcomes, save)
    }

    /// Delivers one `notify` message (or logs it in dry run, or without a URL).
    async fn deliver(&self, job: &Job, now: DateTime<Utc>) -> Outcome {
        let text = job.event.notice.clone().unwrap_or_default();
        let Some(n) = self.notifier.as_ref().filter(|_| !self.dry_run) else {
            info!(%text, "notify: not sent (dry run, or DESKBOT_NOTIFY_URL unset)");
            return Outcome::NotifyLogged { text };
        };
        match n.send(&text).await {
            Ok(()) => Outcome::Notified { text },
            Err(e @ NotifyError::Refused(_)) => Outcome::Dead {
                error: e.to_string(),
            },
            Err(e) => {
                let tries = job.attempts + 1;
                if tries >= self.retry.max_attempts {
                    return Outcome::Dead {
                        error: format!("{e} (after {tries} tries)"),
                    };
                }
                let wait = retry::delay(&self.retry, tries, None, fastrand::f64() * 2.0 - 1.0);
                Outcome::Deferred {
                    until: now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                    error: e.to_string(),
                    counted: true,
                }
            }
        }
    }

    /// A database failure while handling a ticket: the jobs wait and are tried again.
    fn store_failure(&self, e: StoreError, now: DateTime<Utc>) -> Outcome {
        Outcome::Deferred {
            until: now + chrono::Duration::seconds(1),
            error: e.to_string(),
            counted: false,
        }
    }

    /// When the jobs only move SLA clocks (no rule reacts to them, no due field or tag changes,
    /// no timer), applies them from the payloads and returns their outcomes: no Zendesk call.
    fn clock_only(
        &self,
        set: &PolicySet,
        live: &[&Job],
        stored: Option<&TicketClocks>,
        now: DateTime<Utc>,
    ) -> Option<(Vec<Outcome>, Option<ClockSave>)> {
        let must_read = live.iter().any(|j| {
            let ev = &j.event;
            ev.timer.is_some()
                || ev.source == Source::Trigger
                || ev.kind.as_str() == EventKind::CREATED
                || set.reacts_to(&ev.kind)
        });
        if must_read {
            return None;
        }
        let policy = set.select(&live.last()?.event.snapshot)?;
        let mut clocks = stored.cloned();
        let effects: Vec<Vec<Effect>> = live
            .iter()
            .map(|j| tracking::apply_event(policy, &mut clocks, &j.event, now))
            .collect();
        // Only a value to write, or a tag to clear, that was not there before needs the ticket.
        let fields = |c: Option<&TicketClocks>| -> Vec<(u64, serde_json::Value)> {
            c.map(|c| policy.clock_fields(c))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(id, v)| Some((id, v?)))
                .collect()
        };
        let tags = |c: Option<&TicketClocks>| {
            c.map(TicketClocks::cleared_at_risk_tags)
                .unwrap_or_default()
        };
        let (was, now_fields) = (fields(stored), fields(clocks.as_ref()));
        let (had, now_tags) = (tags(stored), tags(clocks.as_ref()));
        if now_fields.iter().any(|f| !was.contains(f)) || now_tags.iter().any(|t| !had.contains(t))
        {
            return None;
        }
        let save = clock_save(policy, clocks.as_ref(), stored, now);
        log_effects(effects.iter().flatten());
        let outcomes = effects
            .into_iter()
            .map(|effects| Outcome::ClockOnly { effects })
            .collect();
        Some((outcomes, save))
    }

    /// Reads the ticket, decides each job in turn (webhook events through the rules, due timers
    /// through the escalation rules once they prove to still have cause), moves the clocks, and
    /// sends at most one update.
    async fn decide_and_update(
        &self,
        set: &PolicySet,
        live: &[&Job],
        stored: Option<TicketClocks>,
        attempts: u32,
        now: DateTime<Utc>,
    ) -> (Vec<Outcome>, Option<ClockSave>) {
        let Some(last) = live.last() else {
            return (Vec::new(), None);
        };
        let mut save = None;
        let ticket_id = last.event.ticket_id;
        let mut conflicts = 0;
        let settled = loop {
            let mut before = match self.read_ticket(last, conflicts == 0).await {
                Ok(t) => t,
                Err(Failure::Gone) => {
                    if let Err(e) = self.store.forget_clocks(ticket_id).await {
                        break Group::All(Box::new(self.store_failure(e, now)));
                    }
                    break Group::All(Box::new(Outcome::TicketGone));
                }
                Err(f) => break Group::All(Box::new(self.failure(attempts, f, now))),
            };
            let mut clocks = stored.clone();
            if self.zendesk.is_none() {
                // Dry run decides on the payload; a timer's job carries only the ticket id.
                if let Some(tc) = &clocks {
                    before.priority = before.priority.or(tc.priority);
                    before.status = before.status.clone().or(tc.status.clone());
                    before.created_at = before.created_at.or(Some(tc.created_at));
                }
            }
            let policy = set.select(&before);
            let mut after = before.clone();
            let mut decisions = Vec::with_capacity(live.len());
            let mut notes = Vec::new();
            let mut fired = Vec::new();
            let mut effects = Vec::new();
            let mut notices: Vec<(i64, String)> = Vec::new();
            // Read at most once per group, by the first reply timer that needs them.
            let mut comments: Option<Vec<SeenComment>> = None;
            let mut failed = None;
            for job in live {
                let ev = &job.event;
                if let Some(timer) = ev.timer {
                    let alert = match policy {
                        Some(p) => {
                            match self
                                .timer_cause(p, &mut clocks, &timer, &before, &mut comments, now)
                                .await
                            {
                                Ok(Ok(alert)) => alert,
                                Ok(Err(reason)) => {
                                    info!(metric = %timer.metric, kind = timer.kind.as_str(), %reason, "SLA timer has no cause to act");
                                    decisions.push(Err(Outcome::TimerMoot { reason }));
                                    continue;
                                }
                                Err(f) => {
                                    failed = Some(f);
                                    break;
                                }
                            }
                        }
                        None => {
                            decisions.push(Err(Outcome::TimerMoot {
                                reason: "no policy's scope covers the ticket".into(),
                            }));
                            continue;
                        }
                    };
                    let late = tracking::lateness(&timer, now);
                    if late > chrono::Duration::minutes(1) {
                        warn!(metric = %timer.metric, kind = timer.kind.as_str(), late_by_secs = late.num_seconds(), "SLA timer acts late (deskbot was stopped or busy at its time)");
                    } else {
                        info!(metric = %timer.metric, kind = timer.kind.as_str(), "SLA timer acts");
                    }
                    after.event = Some(ev.kind.clone());
                    after.latest_comment = None;
                    after.comment_by_staff = None;
                    after.sla = Some(alert);
                    let decision = set.decide(&after, now);
                    after.sla = None;
                    if update::apply(&mut after, &decision) {
                        notes.extend(decision.note.clone());
                    }
                    fired.push(timer);
                    notices.extend(decision.notify.iter().map(|n| (job.id, n.clone())));
                    decisions.push(Ok(decision));
                    continue;
                }
                after.event = Some(ev.kind.clone());
                after.latest_comment = ev.comment.as_ref().map(|c| c.body.clone());
                after.comment_by_staff = ev.comment.as_ref().and_then(|c| c.by_staff);
                let decision = set.decide(&after, now);
                debug!(job = job.id, ?decision, "decided");
                if let (true, Some(p)) = (decision.unclassified, policy) {
                    self.metrics.unclassified(p.name());
                    info!(
                        job = job.id,
                        policy = p.name(),
                        "no rule gave the ticket a level"
                    );
                }
                if update::apply(&mut after, &decision) {
                    notes.extend(decision.note.clone());
                }
                if let Some(p) = policy {
                    if ev.source == Source::Backfill {
                        match self.backfill_clocks(p, &mut clocks, &after, now).await {
                            Ok(e) => effects.extend(e),
                            Err(f) => {
                                failed = Some(f);
                                break;
                            }
                        }
                    } else {
                        // The ticket as read is the authority on its creation, before the payload.
                        effects.extend(tracking::ensure_started(p, &mut clocks, &after));
                        effects.extend(tracking::apply_event(p, &mut clocks, ev, now));
                    }
                    // The ticket as read is the authority on its priority; in dry run the
                    // payload is not (it predates the updates deskbot did not send), so only
                    // the creation's decision and explicit priority changes re-target there.
                    let authoritative =
                        self.zendesk.is_some() || ev.kind.as_str() == EventKind::CREATED;
                    if let Some(tc) = clocks.as_mut().filter(|_| authoritative) {
                        let plan = p.plan_of(&after).or(tc.plan.clone());
                        effects.extend(tracking::retarget(p, tc, after.priority, plan));
                    }
                }
                notices.extend(decision.notify.iter().map(|n| (job.id, n.clone())));
                decisions.push(Ok(decision));
            }
            if let Some(f) = failed {
                break Group::All(Box::new(self.failure(attempts, f, now)));
            }
            if let (Some(p), Some(tc)) = (policy, clocks.as_mut()) {
                for t in &fired {
                    tc.mark_fired(t.metric, t.instance, t.kind);
                }
                for (id, value) in p.clock_fields(tc) {
                    match value.or_else(|| before.custom_fields.get(&id).cloned()) {
                        Some(v) => after.custom_fields.insert(id, v),
                        None => after.custom_fields.remove(&id),
                    };
                }
                let cleared = tc.cleared_at_risk_tags();
                after
                    .tags
                    .retain(|t| !cleared.iter().any(|c| c.eq_ignore_ascii_case(t)));
            }
            let note = (!notes.is_empty()).then(|| notes.join("\n\n"));
            let coalesced = |decision| Outcome::Coalesced {
                into: last.id,
                decision,
            };
            let plan = update::diff(&before, &after, note);
            let sent = match &plan {
                None => None,
                Some(plan) => match self.send(ticket_id, plan).await {
                    Ok(sent) => Some(sent),
                    Err(SendError::Conflict(_)) if conflicts < MAX_CONFLICTS => {
                        conflicts += 1;
                        info!(
                            conflicts,
                            "ticket changed while deciding (409): reading it again"
                        );
                        continue;
                    }
                    Err(SendError::Conflict(e)) => {
                        break Group::All(Box::new(self.failure(attempts, classify(e), now)))
                    }
                    Err(SendError::Failed(f)) => {
                        break Group::All(Box::new(self.failure(attempts, f, now)))
                    }
                },
            };
            if let Err(e) = self.queue_notices(ticket_id, &notices, now).await {
                break Group::All(Box::new(self.store_failure(e, now)));
            }
            if let Some(p) = policy {
                save = clock_save(p, clocks.as_ref(), stored.as_ref(), now);
            }
            log_effects(effects.iter());
            break match (plan, sent) {
                (Some(update), Some(Sent::DryRun)) => Group::each(
                    decisions,
                    coalesced,
                    |decision| Outcome::DryRun { decision, update },
                    true,
                ),
                (Some(update), Some(Sent::Updated)) => Group::each(
                    decisions,
                    coalesced,
                    |decision| Outcome::Updated { decision, update },
                    true,
                ),
                _ => {
                    let no_change = |decision| Outcome::NoChange { decision };
                    Group::each(decisions, no_change, no_change, false)
                }
            };
        };
        match settled {
            Group::Each(v) => (v, save),
            Group::All(o) => (vec![*o; live.len()], None),
        }
    }

    /// Queues each `notify` message as a job of the ticket, once per deciding job and message.
    async fn queue_notices(
        &self,
        ticket_id: u64,
        notices: &[(i64, String)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for (i, (from, text)) in notices.iter().enumerate() {
            let event = TicketEvent::notice(ticket_id, *from, i, text.clone());
            self.store
                .enqueue(NewEvent {
                    event,
                    invocation_key: None,
                    received_at: now,
                    background: false,
                })
                .await?;
        }
        Ok(())
    }

    /// Sends one update (or logs it in dry run).
    async fn send(&self, ticket_id: u64, plan: &TicketUpdate) -> Result<Sent, SendError> {
        let Some(client) = self.zendesk.as_ref().filter(|_| !self.dry_run) else {
            info!(update = %serde_json::to_string(plan).unwrap_or_default(), "dry run: would update the ticket");
            return Ok(Sent::DryRun);
        };
        let wait = client.ticket_update_wait(ticket_id);
        if !wait.is_zero() {
            return Err(SendError::Failed(Failure::TicketBusy(wait)));
        }
        match client.update_ticket(ticket_id, plan).await {
            Ok(()) => {
                self.pause().outage = 0;
                Ok(Sent::Updated)
            }
            Err(e) if e.class() == ErrorClass::Conflict => Err(SendError::Conflict(e)),
            Err(e) => Err(SendError::Failed(classify(e))),
        }
    }

    /// Whether a due timer still has cause to act: first from the clocks, then from what Zendesk
    /// says now (a reply deskbot has not yet seen as an event, a solved or pending ticket), which
    /// it folds into the clocks. `Ok(Err(reason))` when it has none.
    async fn timer_cause(
        &self,
        policy: &Policy,
        clocks: &mut Option<TicketClocks>,
        timer: &Timer,
        ticket: &Ticket,
        comments: &mut Option<Vec<SeenComment>>,
        now: DateTime<Utc>,
    ) -> Result<Result<SlaAlert, String>, Failure> {
        if let Some(tc) = clocks.as_mut() {
            log_effects(tracking::refresh(policy, tc).iter());
        }
        if let Err(reason) = tracking::check_timer(policy, clocks.as_ref(), timer, now) {
            return Ok(Err(reason));
        }
        let Some(tc) = clocks.as_mut() else {
            return Ok(Err("the ticket has no SLA clocks".into()));
        };
        let reply_metric = matches!(timer.metric, Metric::FirstResponse | Metric::NextResponse);
        if let (Some(client), true, None) = (self.zendesk.as_ref(), reply_metric, comments.as_ref())
        {
            let read = client.latest_comments(ticket.id).await.map_err(classify);
            *comments = Some(self.reached(read)?);
        }
        let seen = comments
            .as_deref()
            .filter(|_| reply_metric)
            .unwrap_or_default();
        let caught = tracking::catch_up(policy, tc, timer, ticket, seen);
        if !caught.is_empty() {
            log_effects(caught.iter());
        }
        Ok(tracking::check_timer(policy, clocks.as_ref(), timer, now))
    }

    /// The clocks of an existing ticket a backfill or catch-up brings: rebuilt from its audits
    /// when deskbot was not tracking it (so replies given and time spent pending count), else
    /// brought to its current status. Without a client there is no history to read, and a
    /// ticket timed from its creation alone could report false breaches: it is classified only.
    async fn backfill_clocks(
        &self,
        policy: &Policy,
        clocks: &mut Option<TicketClocks>,
        ticket: &Ticket,
        now: DateTime<Utc>,
    ) -> Result<Vec<Effect>, Failure> {
        let Some(client) = self.zendesk.as_ref() else {
            return Ok(Vec::new());
        };
        if let Some(tc) = clocks.as_mut() {
            return Ok(tracking::observe_status(policy, tc, ticket, now));
        }
        let finished = matches!(ticket.status.as_deref(), Some("solved" | "closed"));
        if policy.clock_rules().is_none() || finished || ticket.created_at.is_none() {
            return Ok(Vec::new());
        }
        let read = client
            .ticket_history(ticket.id, ticket.requester_id)
            .await
            .map_err(classify);
        let history = self.reached(read)?;
        Ok(tracking::reconstruct(policy, clocks, ticket, &history))
    }

    /// The ticket as it is now: from Zendesk, or the event's snapshot when there is no client.
    /// A backfill job's snapshot, complete, was read from an export and carries its
    /// `updated_at`: the first try sends with it under `safe_update` instead of reading again,
    /// and a 409 (the ticket changed since) reads it then.
    async fn read_ticket(&self, job: &Job, first_try: bool) -> Result<Ticket, Failure> {
        let ev = &job.event;
        let Some(client) = self.zendesk.as_ref() else {
            if ev.source == Source::Trigger {
                return Err(Failure::NoTicket);
            }
            return Ok(ev.snapshot.clone());
        };
        let snap = &ev.snapshot;
        // Complete: its requester's e-mail and its organization were folded in (the rules read them).
        let complete = snap.updated_at.is_some()
            && (snap.requester_id.is_none() || snap.requester_email.is_some())
            && (snap.organization_id.is_none() || snap.organization.is_some());
        if first_try && ev.source == Source::Backfill && complete {
            return Ok(snap.clone());
        }
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
            Failure::NoTicket => {
                let reason = "dry run without Zendesk credentials: a trigger body carries only the ticket id, so there is no ticket to decide on (use an event webhook, or set credentials)";
                warn!(reason, "ticket not read");
                Outcome::NotRead {
                    reason: reason.into(),
                }
            }
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
        match self.store.resume_interrupted().await {
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
                    // Freed now, so another instance (or the next start) takes them at once
                    // rather than when their lease runs out; a redo finds nothing left to change.
                    let cut = std::mem::take(&mut *self.in_flight());
                    match self.store.release(cut).await {
                        Ok(n) => warn!(jobs = n, "stopping during a job: it is freed for another instance or the next start"),
                        Err(e) => warn!(error = %e, "stopping during a job: it resumes when its lease runs out"),
                    }
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

/// The clocks to save with the jobs' outcomes, when they changed.
fn clock_save(
    policy: &Policy,
    clocks: Option<&TicketClocks>,
    stored: Option<&TicketClocks>,
    now: DateTime<Utc>,
) -> Option<ClockSave> {
    let (tc, (cal, rules)) = (clocks?, policy.clock_rules()?);
    (Some(tc) != stored).then(|| ClockSave {
        clocks: tc.clone(),
        summaries: tc.summaries(cal, rules, now),
        timers: tc.timers(cal, rules),
    })
}

/// How an update went out.
enum Sent {
    DryRun,
    Updated,
}

enum SendError {
    /// 409: the ticket changed since it was read.
    Conflict(ZendeskError),
    Failed(Failure),
}

fn log_effects<'a>(effects: impl Iterator<Item = &'a Effect>) {
    for e in effects {
        match e {
            Effect::Ignored { reason } => info!(%reason, "SLA clocks: event not applied"),
            other => info!(effect = %serde_json::to_string(other).unwrap_or_default(), "SLA clock"),
        }
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
