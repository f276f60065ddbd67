//! SLA clocks: each metric instance of a ticket as a small state machine over business time.
//!
//! Pure: every function takes the event's time or `now` and the calendar; nothing here reads a
//! clock or does I/O. A clock keeps only facts (when it started, when it was paused and resumed,
//! when it was fulfilled, which timers fired); consumed time, due and at-risk instants are computed
//! from those facts, so a re-target after a priority change counts from the original start and a
//! redelivered event, applied twice, changes nothing.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::calendar::{Calendar, Span, Unit};
use crate::ticket::{Priority, SlaAlert};

/// An agent's public comment this close to the ticket's creation is the opening comment of a
/// ticket an agent created on the customer's behalf (Zendesk sends both in one action).
const OPENING_COMMENT: i64 = 2;

/// Tags that mark a metric at risk start with this and end with the metric's name
/// (`sla_at_risk_first_response`); deskbot removes such a tag when the metric is fulfilled.
pub const AT_RISK_TAG: &str = "sla_at_risk_";

/// The metrics deskbot tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// From creation to the first public agent reply.
    FirstResponse,
    /// From a customer's public comment after an agent reply to the next public agent reply.
    NextResponse,
    /// From creation to solved, paused while the ticket waits on the customer.
    Resolution,
}

impl Metric {
    /// Every metric, in the order they are shown.
    pub const ALL: [Metric; 3] = [
        Metric::FirstResponse,
        Metric::NextResponse,
        Metric::Resolution,
    ];

    /// The policy's spelling (`first_response`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::FirstResponse => "first_response",
            Metric::NextResponse => "next_response",
            Metric::Resolution => "resolution",
        }
    }

    /// Parses the policy's spelling.
    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two wake-ups of a running clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// `warn_before` the breach.
    AtRisk,
    /// The breach itself.
    Breached,
}

impl TimerKind {
    /// The event name rules react to (`sla.at_risk`, `sla.breached`).
    pub fn event(self) -> &'static str {
        match self {
            TimerKind::AtRisk => "sla.at_risk",
            TimerKind::Breached => "sla.breached",
        }
    }

    /// `at_risk` / `breached`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::AtRisk => "at_risk",
            TimerKind::Breached => "breached",
        }
    }

    /// Parses `at_risk` / `breached`.
    pub fn parse(s: &str) -> Option<TimerKind> {
        [TimerKind::AtRisk, TimerKind::Breached]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// When the at-risk warning comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warn {
    /// This long before the breach, counted like the target (business or calendar time).
    Before(Span),
    /// This percentage of the target before the breach.
    Percent(u8),
}

impl FromStr for Warn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.trim().strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(n) if (1..=99).contains(&n) => Ok(Warn::Percent(n)),
                _ => Err(format!(
                    "{s:?}: a percentage of the target is a whole number from 1% to 99%"
                )),
            };
        }
        s.parse::<Span>()
            .map(Warn::Before)
            .map_err(|e| e.to_string())
    }
}

/// One pause: `to` is `None` while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// When the clock stopped.
    pub from: DateTime<Utc>,
    /// When it ran again.
    pub to: Option<DateTime<Utc>>,
}

/// One metric instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// Which metric.
    pub metric: Metric,
    /// 1 for the first; next_response counts up with each customer reply that needs an answer.
    pub instance: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The target in force (`None`: the ticket's level has none; the clock runs without timers).
    #[serde(serialize_with = "span_out", deserialize_with = "span_in")]
    pub target: Option<Span>,
    /// Pauses, oldest first; only the last may be open.
    #[serde(default)]
    pub pauses: Vec<Pause>,
    /// When it was fulfilled (or stopped by solving the ticket).
    pub fulfilled_at: Option<DateTime<Utc>>,
    /// Timers that have acted; each acts at most once.
    #[serde(default)]
    pub fired: Vec<TimerKind>,
}

fn span_out<S: Serializer>(span: &Option<Span>, s: S) -> Result<S::Ok, S::Error> {
    span.map(|x| x.to_string()).serialize(s)
}

fn span_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Span>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| s.parse::<Span>().map_err(serde::de::Error::custom))
        .transpose()
}

/// A clock's state as people read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Running, target not yet reached.
    Active,
    /// Stopped while the ticket waits on the customer.
    Paused,
    /// Done.
    Fulfilled,
    /// Target passed and not fulfilled.
    Breached,
}

impl State {
    /// Parses `active`, `paused`, `fulfilled`, `breached`.
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Active,
            State::Paused,
            State::Fulfilled,
            State::Breached,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// `active`, `paused`, `fulfilled`, `breached`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Paused => "paused",
            State::Fulfilled => "fulfilled",
            State::Breached => "breached",
        }
    }
}

/// The length of `span` from `start` in the kind of time it counts: business seconds for
/// business spans, wall-clock seconds for calendar spans (whose days follow local time).
pub fn span_len(cal: &Calendar, span: Span, start: DateTime<Utc>) -> Duration {
    if !span.business {
        return cal.add(start, span) - start;
    }
    let n = span.amount;
    let day = cal.business_day().num_seconds();
    Duration::seconds(match span.unit {
        Unit::Minutes => n.saturating_mul(60),
        Unit::Hours => n.saturating_mul(3600),
        Unit::Days => n.saturating_mul(day),
        Unit::Weeks => n.saturating_mul(5).saturating_mul(day),
    })
}

impl Clock {
    /// A clock starting at `at`.
    pub fn start(metric: Metric, instance: u32, at: DateTime<Utc>, target: Option<Span>) -> Clock {
        Clock {
            metric,
            instance,
            started_at: at,
            target,
            pauses: Vec::new(),
            fulfilled_at: None,
            fired: Vec::new(),
        }
    }

    /// True while a pause lasts.
    pub fn is_paused(&self) -> bool {
        self.fulfilled_at.is_none() && self.pauses.last().is_some_and(|p| p.to.is_none())
    }

    /// True until fulfilled.
    pub fn is_open(&self) -> bool {
        self.fulfilled_at.is_none()
    }

    /// Business time counts unless the target is in calendar time.
    fn business(&self) -> bool {
        self.target.is_none_or(|t| t.business)
    }

    fn len(&self, cal: &Calendar, a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
        if self.business() {
            cal.business_between(a, b)
        } else {
            (b - a).max(Duration::zero())
        }
    }

    /// The running stretches up to `until` (`None`: the last one is open-ended), oldest first.
    fn segments(
        &self,
        until: Option<DateTime<Utc>>,
    ) -> Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        let mut out = Vec::with_capacity(self.pauses.len() + 1);
        let mut from = Some(self.started_at);
        for p in &self.pauses {
            if let Some(a) = from.take() {
                out.push((a, Some(p.from.max(a))));
            }
            from = p.to;
        }
        if let Some(a) = from {
            out.push((a, until));
        }
        if let Some(u) = until {
            out.retain(|(a, _)| *a < u);
            for s in &mut out {
                s.1 = s.1.map(|b| b.min(u));
            }
        }
        out
    }

    /// Time consumed from the start until `now` (or until fulfilled), pauses excluded.
    pub fn consumed(&self, cal: &Calendar, now: DateTime<Utc>) -> Duration {
        let until = self.fulfilled_at.map_or(now, |f| f.min(now));
        self.segments(Some(until))
            .into_iter()
            .map(|(a, b)| self.len(cal, a, b.unwrap_or(until)))
            .fold(Duration::zero(), |x, y| x + y)
    }

    /// The instant at which `amount` of time has been consumed, had the clock kept running after
    /// it was fulfilled; `None` while paused short of it.
    fn reaches(&self, cal: &Calendar, amount: Duration) -> Option<DateTime<Utc>> {
        let mut used = Duration::zero();
        for (a, b) in self.segments(None) {
            let Some(b) = b else {
                return Some(self.advance(cal, a, amount - used));
            };
            let len = self.len(cal, a, b);
            if used + len >= amount {
                return Some(self.advance(cal, a, amount - used));
            }
            used += len;
        }
        None
    }

    fn advance(&self, cal: &Calendar, from: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
        if self.business() {
            cal.add_business(from, d)
        } else {
            from + d.max(Duration::zero())
        }
    }

    /// The target's length for this clock.
    pub fn target_len(&self, cal: &Calendar) -> Option<Duration> {
        self.target.map(|t| span_len(cal, t, self.started_at))
    }

    /// The breach instant: when the target is used up (moved later by every pause). `None` with
    /// no target, or while paused before reaching it.
    pub fn due(&self, cal: &Calendar) -> Option<DateTime<Utc>> {
        self.reaches(cal, self.target_len(cal)?)
    }

    /// When the at-risk warning is due.
    pub fn at_risk(&self, cal: &Calendar, warn: Warn) -> Option<DateTime<Utc>> {
        let target = self.target_len(cal)?;
        let before = match warn {
            Warn::Before(span) => span_len(cal, span, self.started_at),
            Warn::Percent(p) => target * i32::from(p) / 100,
        };
        self.reaches(cal, (target - before).max(Duration::zero()))
    }

    /// How late it was fulfilled (or, while open, how late it is at `now`); `None` when in time.
    pub fn missed_by(&self, cal: &Calendar, now: DateTime<Utc>) -> Option<Duration> {
        let due = self.due(cal)?;
        let end = self.fulfilled_at.unwrap_or(now);
        (end > due).then(|| end - due)
    }

    /// The timer `kind` of this clock as escalation rules see it when it acts at `at`.
    pub fn alert(&self, cal: &Calendar, kind: TimerKind, at: DateTime<Utc>) -> SlaAlert {
        let due = self.due(cal);
        SlaAlert {
            metric: self.metric.as_str().to_string(),
            kind: kind.as_str().to_string(),
            target: self.target.map(|t| t.to_string()),
            due,
            missed_by_secs: due.map_or(0, |d| (at - d).num_seconds().max(0)),
        }
    }

    /// The state at `now`.
    pub fn state(&self, cal: &Calendar, now: DateTime<Utc>) -> State {
        if self.fulfilled_at.is_some() {
            State::Fulfilled
        } else if self.due(cal).is_some_and(|d| d <= now) {
            State::Breached
        } else if self.is_paused() {
            State::Paused
        } else {
            State::Active
        }
    }

    fn pause(&mut self, at: DateTime<Utc>) -> bool {
        if !self.is_open() || self.is_paused() {
            return false;
        }
        self.pauses.push(Pause {
            from: at.max(self.started_at),
            to: None,
        });
        true
    }

    fn resume(&mut self, at: DateTime<Utc>) -> bool {
        match self.pauses.last_mut() {
            Some(p) if p.to.is_none() && self.fulfilled_at.is_none() => {
                p.to = Some(at.max(p.from));
                true
            }
            _ => false,
        }
    }

    fn fulfil(&mut self, at: DateTime<Utc>) -> bool {
        if !self.is_open() {
            return false;
        }
        let at = at.max(self.started_at);
        if let Some(p) = self.pauses.last_mut().filter(|p| p.to.is_none()) {
            p.to = Some(at.max(p.from));
        }
        self.fulfilled_at = Some(at);
        true
    }

    /// Solved, then reopened: the time in between is a pause and the clock runs on.
    fn reopen(&mut self, at: DateTime<Utc>) -> bool {
        let Some(solved) = self.fulfilled_at.take() else {
            return false;
        };
        self.pauses.push(Pause {
            from: solved,
            to: Some(at.max(solved)),
        });
        true
    }
}

/// Targets for one ticket at its level and plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Targets {
    /// First response.
    pub first_response: Option<Span>,
    /// Next response.
    pub next_response: Option<Span>,
    /// Resolution.
    pub resolution: Option<Span>,
}

impl Targets {
    /// The target of `metric`.
    pub fn of(&self, metric: Metric) -> Option<Span> {
        match metric {
            Metric::FirstResponse => self.first_response,
            Metric::NextResponse => self.next_response,
            Metric::Resolution => self.resolution,
        }
    }
}

/// How a policy runs its clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Metrics the policy tracks (those with a target at some level).
    pub metrics: Vec<Metric>,
    /// Statuses that pause resolution (`pending` by default).
    pub pause_on: Vec<String>,
    /// When to warn before a breach.
    pub warn: Option<Warn>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            metrics: Metric::ALL.to_vec(),
            pause_on: vec!["pending".into()],
            warn: None,
        }
    }
}

/// Statuses a ticket can have; anything else is reported and ignored.
pub const STATUSES: &[&str] = &["new", "open", "pending", "hold", "solved", "closed"];

/// What happened to the ticket, as far as the clocks care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A comment: public or not, by an agent, a customer, or unknown (`None`).
    Comment {
        /// When.
        at: DateTime<Utc>,
        /// Visible to the customer.
        public: bool,
        /// Written by an agent.
        by_agent: Option<bool>,
    },
    /// The status changed to `status` (lower case).
    Status {
        /// When.
        at: DateTime<Utc>,
        /// The new status.
        status: String,
    },
    /// The priority (so the targets) changed: running clocks take the new targets from their start.
    Retarget,
}

/// What a change did, for logs, the audit record and `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// A clock started.
    Started {
        /// Metric.
        metric: Metric,
        /// Instance.
        instance: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// A clock paused.
    Paused {
        /// Metric.
        metric: Metric,
        /// When.
        at: DateTime<Utc>,
    },
    /// A clock ran again.
    Resumed {
        /// Metric.
        metric: Metric,
        /// When.
        at: DateTime<Utc>,
    },
    /// A clock was fulfilled (or stopped by solving).
    Fulfilled {
        /// Metric.
        metric: Metric,
        /// Instance.
        instance: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// A target changed.
    Retargeted {
        /// Metric.
        metric: Metric,
        /// The new target, if any.
        target: Option<String>,
    },
    /// The change was not applied, and why.
    Ignored {
        /// Why.
        reason: String,
    },
}

/// A wake-up a running clock needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timer {
    /// When.
    pub at: DateTime<Utc>,
    /// Metric.
    pub metric: Metric,
    /// Instance.
    pub instance: u32,
    /// Which.
    pub kind: TimerKind,
}

/// One metric instance as `deskbot sla` lists it and /metrics counts it, computed at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Ticket.
    pub ticket_id: u64,
    /// Metric.
    pub metric: Metric,
    /// Instance.
    pub instance: u32,
    /// State: `active`, `paused` or `fulfilled` when computed; `breached` once the due instant passed.
    pub state: State,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Target, as written.
    pub target: Option<String>,
    /// Time consumed so far (business seconds, or wall seconds for a calendar target).
    pub consumed_secs: i64,
    /// When the at-risk timer fires (or fired).
    pub at_risk_at: Option<DateTime<Utc>>,
    /// Current due instant.
    pub due_at: Option<DateTime<Utc>>,
    /// When fulfilled.
    pub fulfilled_at: Option<DateTime<Utc>>,
    /// The calendar's zone, to show times as people there read them.
    pub zone: String,
}

/// All clocks of one ticket, with what they need to remember between events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClocks {
    /// The ticket.
    pub ticket_id: u64,
    /// When it was created (first response and resolution start here).
    pub created_at: DateTime<Utc>,
    /// The last status applied.
    pub status: Option<String>,
    /// When that status was set: an older status change arriving late is not applied.
    pub status_at: Option<DateTime<Utc>>,
    /// Whether an agent has replied publicly (a customer comment then starts next_response).
    #[serde(default)]
    pub agent_replied: bool,
    /// The priority the targets come from.
    pub priority: Option<Priority>,
    /// The plan tier the targets come from, when the policy reads one.
    #[serde(default)]
    pub plan: Option<String>,
    /// Every metric instance, oldest first.
    pub clocks: Vec<Clock>,
}

impl TicketClocks {
    /// The clocks of a ticket created at `created_at` with `status`, at these targets.
    pub fn start(
        ticket_id: u64,
        created_at: DateTime<Utc>,
        status: Option<String>,
        targets: &Targets,
        rules: &Rules,
    ) -> (TicketClocks, Vec<Effect>) {
        let mut t = TicketClocks {
            ticket_id,
            created_at,
            status: None,
            status_at: None,
            agent_replied: false,
            priority: None,
            plan: None,
            clocks: Vec::new(),
        };
        let mut effects = Vec::new();
        for m in [Metric::FirstResponse, Metric::Resolution] {
            if rules.metrics.contains(&m) {
                t.clocks.push(Clock::start(m, 1, created_at, targets.of(m)));
                effects.push(Effect::Started {
                    metric: m,
                    instance: 1,
                    at: created_at,
                });
            }
        }
        if let Some(s) = status {
            effects.extend(t.apply(
                &Change::Status {
                    at: created_at,
                    status: s,
                },
                targets,
                rules,
            ));
        }
        (t, effects)
    }

    /// The latest instance of `metric`.
    pub fn latest(&self, metric: Metric) -> Option<&Clock> {
        self.clocks.iter().rev().find(|c| c.metric == metric)
    }

    /// The clock `metric` / `instance`.
    pub fn get(&self, metric: Metric, instance: u32) -> Option<&Clock> {
        self.clocks
            .iter()
            .find(|c| c.metric == metric && c.instance == instance)
    }

    /// Marks a timer as having acted; false when it already had.
    pub fn mark_fired(&mut self, metric: Metric, instance: u32, kind: TimerKind) -> bool {
        match self
            .clocks
            .iter_mut()
            .find(|c| c.metric == metric && c.instance == instance)
        {
            Some(c) if !c.fired.contains(&kind) => {
                c.fired.push(kind);
                true
            }
            _ => false,
        }
    }

    /// True while any clock is open.
    pub fn is_open(&self) -> bool {
        self.clocks.iter().any(Clock::is_open)
    }

    /// Applies one change; returns what it did. Applying the same change twice does nothing more.
    pub fn apply(&mut self, change: &Change, targets: &Targets, rules: &Rules) -> Vec<Effect> {
        let ignored = |reason: &str| {
            vec![Effect::Ignored {
                reason: reason.to_string(),
            }]
        };
        match change {
            Change::Retarget => {
                let mut out = Vec::new();
                for c in self.clocks.iter_mut().filter(|c| c.is_open()) {
                    let target = targets.of(c.metric);
                    if c.target != target {
                        c.target = target;
                        out.push(Effect::Retargeted {
                            metric: c.metric,
                            target: target.map(|t| t.to_string()),
                        });
                    }
                }
                out
            }
            Change::Comment {
                at,
                public,
                by_agent,
            } => {
                let Some(by_agent) = by_agent else {
                    return ignored("the comment has no author: no clock changed");
                };
                if !public {
                    return ignored("a private comment changes no clock");
                }
                if *by_agent {
                    // The customer heard from the agent who opened the ticket for them: the
                    // first response is given, and the ticket cannot breach it (Zendesk's
                    // standard SLA does not start first reply time for such tickets at all).
                    if *at <= self.created_at + Duration::seconds(OPENING_COMMENT) {
                        self.agent_replied = true;
                        return self.fulfil(*at, |c| c.metric == Metric::FirstResponse);
                    }
                    self.agent_replied = true;
                    return self.fulfil(*at, |c| {
                        matches!(c.metric, Metric::FirstResponse | Metric::NextResponse)
                            && c.started_at <= *at
                    });
                }
                let solved = matches!(self.status.as_deref(), Some("solved" | "closed"));
                let waiting = self.clocks.iter().any(|c| {
                    c.metric == Metric::NextResponse && (c.is_open() || c.started_at >= *at)
                });
                if !self.agent_replied
                    || solved
                    || waiting
                    || !rules.metrics.contains(&Metric::NextResponse)
                {
                    return Vec::new();
                }
                let instance = self
                    .latest(Metric::NextResponse)
                    .map_or(1, |c| c.instance + 1);
                self.clocks.push(Clock::start(
                    Metric::NextResponse,
                    instance,
                    *at,
                    targets.next_response,
                ));
                vec![Effect::Started {
                    metric: Metric::NextResponse,
                    instance,
                    at: *at,
                }]
            }
            Change::Status { at, status } => {
                let status = status.trim().to_ascii_lowercase();
                if !STATUSES.contains(&status.as_str()) {
                    return ignored(&format!(
                        "unknown status {status:?}: expected one of {}",
                        STATUSES.join(", ")
                    ));
                }
                if self.status_at.is_some_and(|s| *at < s) {
                    return ignored("a status change older than the one already applied");
                }
                let was_solved = matches!(self.status.as_deref(), Some("solved" | "closed"));
                self.status = Some(status.clone());
                self.status_at = Some(*at);
                let mut out = Vec::new();
                if matches!(status.as_str(), "solved" | "closed") {
                    return self.fulfil(*at, |_| true);
                }
                let resolution = self
                    .clocks
                    .iter_mut()
                    .rev()
                    .find(|c| c.metric == Metric::Resolution);
                let Some(c) = resolution else {
                    return out;
                };
                if was_solved && c.reopen(*at) {
                    out.push(Effect::Resumed {
                        metric: c.metric,
                        at: *at,
                    });
                }
                if rules.pause_on.contains(&status) {
                    if c.pause(*at) {
                        out.push(Effect::Paused {
                            metric: c.metric,
                            at: *at,
                        });
                    }
                } else if c.resume(*at) {
                    out.push(Effect::Resumed {
                        metric: c.metric,
                        at: *at,
                    });
                }
                out
            }
        }
    }

    /// Every clock summarised at `now`.
    pub fn summaries(&self, cal: &Calendar, rules: &Rules, now: DateTime<Utc>) -> Vec<Summary> {
        self.clocks
            .iter()
            .map(|c| Summary {
                ticket_id: self.ticket_id,
                metric: c.metric,
                instance: c.instance,
                state: c.state(cal, now),
                started_at: c.started_at,
                target: c.target.map(|t| t.to_string()),
                consumed_secs: c.consumed(cal, now).num_seconds(),
                at_risk_at: rules.warn.and_then(|w| c.at_risk(cal, w)),
                due_at: c.due(cal),
                fulfilled_at: c.fulfilled_at,
                zone: cal.timezone().name().to_string(),
            })
            .collect()
    }

    /// Tags to remove because their metric is no longer at risk: the at-risk tag of every metric
    /// whose at-risk timer acted and whose latest clock has since been fulfilled.
    pub fn cleared_at_risk_tags(&self) -> Vec<String> {
        Metric::ALL
            .into_iter()
            .filter(|m| {
                self.latest(*m)
                    .is_some_and(|c| !c.is_open() && c.fired.contains(&TimerKind::AtRisk))
            })
            .map(|m| format!("{AT_RISK_TAG}{m}"))
            .collect()
    }

    /// Fulfils at `at` every open clock that `which` picks.
    fn fulfil(&mut self, at: DateTime<Utc>, which: impl Fn(&Clock) -> bool) -> Vec<Effect> {
        let mut out = Vec::new();
        for c in self.clocks.iter_mut().filter(|c| which(c)) {
            if c.fulfil(at) {
                out.push(Effect::Fulfilled {
                    metric: c.metric,
                    instance: c.instance,
                    at,
                });
            }
        }
        out
    }

    /// The wake-ups still to come: at risk (when the policy warns) and breach of every running
    /// clock with a target, except those that already acted.
    pub fn timers(&self, cal: &Calendar, rules: &Rules) -> Vec<Timer> {
        let mut out = Vec::new();
        for c in self.clocks.iter().filter(|c| c.is_open() && !c.is_paused()) {
            let mut push = |kind, at: Option<DateTime<Utc>>| {
                if let Some(at) = at.filter(|_| !c.fired.contains(&kind)) {
                    out.push(Timer {
                        at,
                        metric: c.metric,
                        instance: c.instance,
                        kind,
                    });
                }
            };
            push(
                TimerKind::AtRisk,
                rules.warn.and_then(|w| c.at_risk(cal, w)),
            );
            push(TimerKind::Breached, c.due(cal));
        }
        out.sort();
        out
    }
}

#[cfg(test)]
#[path = "clock_tests.rs"]
mod tests;
