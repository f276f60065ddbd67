//! What each job does to its ticket's SLA clocks. Webhook events move the clocks from their
//! payload alone (comment author and visibility, status, priority), so they cost no Zendesk read;
//! a timer checks that it still has cause to act before the worker lets the policy escalate.

use chrono::{DateTime, Duration, Utc};

use crate::policy::Policy;
use crate::sla::clock::{Change, Effect, Metric, TicketClocks, Timer, TimerKind};
use crate::ticket::{EventKind, Priority, SlaAlert, Ticket};
use crate::webhook::payload::TicketEvent;
use crate::zendesk::model::{PastChange, SeenComment};

/// The ticket events the clocks need: `deskbot register` subscribes them, `deskbot doctor` checks.
pub const CLOCK_EVENTS: &[&str] = &[
    "created",
    "comment_added",
    "status_changed",
    "priority_changed",
];

/// The clock change an event's payload carries, if any.
fn change_of(ev: &TicketEvent, now: DateTime<Utc>) -> Option<Change> {
    let at = ev.occurred_at.unwrap_or(now);
    match ev.kind.as_str() {
        EventKind::COMMENT_ADDED => ev.comment.as_ref().map(|c| Change::Comment {
            at,
            public: c.public,
            by_agent: c.by_staff,
        }),
        "status_changed" => ev
            .current
            .clone()
            .or_else(|| ev.snapshot.status.clone())
            .map(|status| Change::Status { at, status }),
        _ => None,
    }
}

/// The priority a `priority_changed` event names.
fn new_priority(ev: &TicketEvent) -> Option<Priority> {
    ev.current
        .as_deref()
        .and_then(|p| p.parse().ok())
        .or(ev.snapshot.priority)
}

/// Starts clocks for a ticket not yet tracked, when its creation time is known and it is not
/// already solved (a ticket deskbot first hears of after creation starts from its creation).
pub fn ensure_started(
    policy: &Policy,
    clocks: &mut Option<TicketClocks>,
    ticket: &Ticket,
) -> Vec<Effect> {
    let Some(created) = ticket.created_at else {
        return Vec::new();
    };
    let status = ticket.status.clone().map(|status| Change::Status {
        at: created,
        status,
    });
    replay(policy, clocks, ticket, status.as_slice())
}

/// Starts clocks for an existing ticket deskbot was not tracking (a backfill or catch-up), as if
/// it had tracked it from creation: its past comments and status changes (from its audits) are
/// played in order, so replies already given count and time spent pending is paused. When the
/// history ends on another status than the ticket's (a cut history), the current one follows.
pub fn reconstruct(
    policy: &Policy,
    clocks: &mut Option<TicketClocks>,
    ticket: &Ticket,
    history: &[PastChange],
) -> Vec<Effect> {
    let created = ticket.created_at;
    let mut changes: Vec<Change> = history
        .iter()
        .filter_map(|c| match c {
            // The opening comment is the ticket itself, not a reply (as with webhook events).
            PastChange::Comment(c) if Some(c.at) <= created => None,
            PastChange::Comment(c) => Some(Change::Comment {
                at: c.at,
                public: c.public,
                by_agent: c.by_agent,
            }),
            PastChange::Status { at, status } => Some(Change::Status {
                at: *at,
                status: status.clone(),
            }),
        })
        .collect();
    let last_status = changes.iter().rev().find_map(|c| match c {
        Change::Status { status, .. } => Some(status.clone()),
        _ => None,
    });
    if let (Some(now), true) = (ticket.status.clone(), last_status != ticket.status) {
        let at = ticket
            .updated_at
            .as_deref()
            .and_then(crate::ticket::parse_time)
            .or(ticket.created_at);
        if let Some(at) = at {
            changes.push(Change::Status { at, status: now });
        }
    }
    changes.sort_by_key(|c| match c {
        Change::Comment { at, .. } | Change::Status { at, .. } => *at,
        Change::Retarget => DateTime::<Utc>::MIN_UTC,
    });
    replay(policy, clocks, ticket, &changes)
}

/// Starts fresh clocks at the ticket's creation and applies `changes` to them; nothing when the
/// ticket is already tracked, has no known creation, or is finished.
fn replay(
    policy: &Policy,
    clocks: &mut Option<TicketClocks>,
    ticket: &Ticket,
    changes: &[Change],
) -> Vec<Effect> {
    let (Some((_, rules)), None, Some(created)) =
        (policy.clock_rules(), clocks.as_ref(), ticket.created_at)
    else {
        return Vec::new();
    };
    if matches!(ticket.status.as_deref(), Some("solved" | "closed")) {
        return Vec::new();
    }
    let mut fresh = TicketClocks::start(ticket.id, created, None, &Default::default(), rules).0;
    fresh.priority = ticket.priority;
    fresh.plan = policy.plan_of(ticket);
    let targets = policy.clock_targets(&fresh);
    fresh.apply(&Change::Retarget, &targets, rules);
    let mut effects: Vec<Effect> = fresh
        .clocks
        .iter()
        .map(|c| Effect::Started {
            metric: c.metric,
            instance: c.instance,
            at: created,
        })
        .collect();
    for change in changes {
        effects.extend(fresh.apply(change, &targets, rules));
    }
    effects.retain(|e| !matches!(e, Effect::Ignored { .. }));
    *clocks = Some(fresh);
    effects
}

/// Applies one webhook event's payload to the clocks.
pub fn apply_event(
    policy: &Policy,
    clocks: &mut Option<TicketClocks>,
    ev: &TicketEvent,
    now: DateTime<Utc>,
) -> Vec<Effect> {
    let Some((_, rules)) = policy.clock_rules() else {
        return Vec::new();
    };
    let mut effects = ensure_started(policy, clocks, &ev.snapshot);
    let Some(tc) = clocks.as_mut() else {
        return effects;
    };
    effects.extend(refresh(policy, tc));
    if ev.kind.as_str() == "priority_changed" {
        effects.extend(retarget(policy, tc, new_priority(ev), tc.plan.clone()));
    }
    if let Some(change) = change_of(ev, now) {
        let targets = policy.clock_targets(tc);
        effects.extend(tc.apply(&change, &targets, rules));
    }
    effects
}

/// Takes the policy's current targets (an edited policy applies to running clocks from their
/// next event or timer on).
pub fn refresh(policy: &Policy, tc: &mut TicketClocks) -> Vec<Effect> {
    let Some((_, rules)) = policy.clock_rules() else {
        return Vec::new();
    };
    let targets = policy.clock_targets(tc);
    tc.apply(&Change::Retarget, &targets, rules)
}

/// Re-targets the clocks to `priority` and `plan`, when either changed.
pub fn retarget(
    policy: &Policy,
    tc: &mut TicketClocks,
    priority: Option<Priority>,
    plan: Option<String>,
) -> Vec<Effect> {
    let Some((_, rules)) = policy.clock_rules() else {
        return Vec::new();
    };
    if priority.is_none() || (tc.priority == priority && tc.plan == plan) {
        return Vec::new();
    }
    tc.priority = priority;
    tc.plan = plan;
    let targets = policy.clock_targets(tc);
    tc.apply(&Change::Retarget, &targets, rules)
}

/// Whether a due timer still has cause to act at `now`: its alert, or why not.
pub fn check_timer(
    policy: &Policy,
    clocks: Option<&TicketClocks>,
    timer: &Timer,
    now: DateTime<Utc>,
) -> Result<SlaAlert, String> {
    let (cal, rules) = policy
        .clock_rules()
        .ok_or("the policy no longer runs SLA clocks")?;
    let tc = clocks.ok_or("the ticket has no SLA clocks")?;
    let c = tc
        .get(timer.metric, timer.instance)
        .ok_or("the clock no longer exists")?;
    if c.fired.contains(&timer.kind) {
        return Err("this timer already acted".into());
    }
    if !c.is_open() {
        return Err(format!("{} was fulfilled", timer.metric));
    }
    if c.is_paused() {
        return Err(format!("{} is paused", timer.metric));
    }
    let instant = match timer.kind {
        TimerKind::AtRisk => rules.warn.and_then(|w| c.at_risk(cal, w)),
        TimerKind::Breached => c.due(cal),
    }
    .ok_or_else(|| format!("{} has no target now", timer.metric))?;
    if instant > now {
        return Err(format!(
            "{} moved to {}",
            timer.kind.as_str(),
            cal.describe(instant)
        ));
    }
    Ok(c.alert(cal, timer.kind, now))
}

/// Folds what Zendesk says now into the clocks before a timer acts: a public agent reply deskbot
/// has not seen as an event fulfils the reply metric; a solved or pending ticket stops or pauses
/// resolution. Returns what changed (nothing: the timer still has cause).
pub fn catch_up(
    policy: &Policy,
    tc: &mut TicketClocks,
    timer: &Timer,
    ticket: &Ticket,
    comments: &[SeenComment],
) -> Vec<Effect> {
    let Some((_, rules)) = policy.clock_rules() else {
        return Vec::new();
    };
    let targets = policy.clock_targets(tc);
    let Some(started) = tc.get(timer.metric, timer.instance).map(|c| c.started_at) else {
        return Vec::new();
    };
    let mut effects = Vec::new();
    if timer.metric != Metric::Resolution {
        let reply = comments
            .iter()
            .filter(|c| c.public && c.by_agent == Some(true) && c.at >= started)
            .min_by_key(|c| c.at);
        if let Some(r) = reply {
            let change = Change::Comment {
                at: r.at,
                public: true,
                by_agent: Some(true),
            };
            effects.extend(tc.apply(&change, &targets, rules));
        }
    }
    effects.extend(observe_status(policy, tc, ticket, started));
    effects.retain(|e| !matches!(e, Effect::Ignored { .. }));
    effects
}

/// Folds the ticket's status as read into its clocks when they last saw another (a change made
/// while deskbot was not listening), dated at the ticket's last update, else at `fallback`.
pub fn observe_status(
    policy: &Policy,
    tc: &mut TicketClocks,
    ticket: &Ticket,
    fallback: DateTime<Utc>,
) -> Vec<Effect> {
    let (Some((_, rules)), Some(status)) = (policy.clock_rules(), ticket.status.clone()) else {
        return Vec::new();
    };
    if tc.status.as_ref() == Some(&status) {
        return Vec::new();
    }
    let at = ticket
        .updated_at
        .as_deref()
        .and_then(crate::ticket::parse_time)
        .unwrap_or(fallback);
    let targets = policy.clock_targets(tc);
    tc.apply(&Change::Status { at, status }, &targets, rules)
}

/// How late a timer acts (zero when on time).
pub fn lateness(timer: &Timer, now: DateTime<Utc>) -> Duration {
    (now - timer.at).max(Duration::zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::clock::State;
    use std::path::Path;

    fn policy(first_response: &str) -> Policy {
        let text = format!(
            "[policy]\nname = \"t\"\n[calendars.c]\ntimezone = \"UTC\"\nhours = {{ mon-fri = \"09:00-17:00\" }}\n\
             [sla]\nwarn_before = \"10 business minutes\"\n[sla.urgent]\nfirst_response = \"{first_response}\"\n"
        );
        Policy::parse(&text, Path::new("t.toml")).unwrap().policy
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ticket() -> Ticket {
        Ticket {
            id: 9,
            priority: Some(Priority::Urgent),
            status: Some("open".into()),
            created_at: Some(t("2026-11-30T09:00:00Z")),
            ..Ticket::default()
        }
    }

    #[test]
    fn an_edited_policy_retargets_running_clocks() {
        let mut clocks = None;
        ensure_started(&policy("3 business hours"), &mut clocks, &ticket());
        let Some(mut tc) = clocks else {
            panic!("clocks start for a ticket with a creation time")
        };
        let edited = policy("1 business hour");
        assert_eq!(
            refresh(&edited, &mut tc),
            vec![Effect::Retargeted {
                metric: Metric::FirstResponse,
                target: Some("1 business hour".into())
            }]
        );
        let cal = edited.calendar().unwrap();
        assert_eq!(
            tc.latest(Metric::FirstResponse).unwrap().due(cal),
            Some(t("2026-11-30T10:00:00Z"))
        );
        assert!(refresh(&edited, &mut tc).is_empty());
    }

    #[test]
    fn timers_check_their_cause() {
        let p = policy("1 business hour");
        let mut clocks = None;
        ensure_started(&p, &mut clocks, &ticket());
        let timer = Timer {
            at: t("2026-11-30T10:00:00Z"),
            metric: Metric::FirstResponse,
            instance: 1,
            kind: TimerKind::Breached,
        };
        assert_eq!(
            check_timer(&p, clocks.as_ref(), &timer, t("2026-11-30T09:59:00Z")),
            Err("breached moved to Mon 30 Nov, 10:00 UTC".into())
        );
        let alert = check_timer(&p, clocks.as_ref(), &timer, t("2026-11-30T10:05:00Z")).unwrap();
        assert_eq!(alert.missed_by_secs, 300);
        assert_eq!(alert.target.as_deref(), Some("1 business hour"));
        let Some(tc) = clocks.as_mut() else { panic!() };
        // An agent's reply Zendesk has and deskbot did not see fulfils the clock first.
        let seen = [SeenComment {
            at: t("2026-11-30T09:40:00Z"),
            public: true,
            by_agent: Some(true),
        }];
        assert_eq!(catch_up(&p, tc, &timer, &ticket(), &seen).len(), 1);
        assert_eq!(
            tc.latest(Metric::FirstResponse)
                .unwrap()
                .state(p.calendar().unwrap(), timer.at),
            State::Fulfilled
        );
        assert_eq!(
            check_timer(&p, clocks.as_ref(), &timer, t("2026-11-30T10:05:00Z")),
            Err("first_response was fulfilled".into())
        );
        assert_eq!(
            check_timer(&p, None, &timer, t("2026-11-30T10:05:00Z")),
            Err("the ticket has no SLA clocks".into())
        );
    }

    fn two_metric_policy() -> Policy {
        let text = "[policy]\nname = \"t\"\n[calendars.c]\ntimezone = \"UTC\"\nhours = { mon-fri = \"09:00-17:00\" }\n\
             [sla.urgent]\nfirst_response = \"1 business hour\"\nresolution = \"8 business hours\"\n";
        Policy::parse(text, Path::new("t.toml")).unwrap().policy
    }

    fn comment(at: &str, by_agent: bool) -> PastChange {
        PastChange::Comment(SeenComment {
            at: t(at),
            public: true,
            by_agent: Some(by_agent),
        })
    }

    fn status(at: &str, status: &str) -> PastChange {
        PastChange::Status {
            at: t(at),
            status: status.into(),
        }
    }

    #[test]
    fn an_existing_tickets_clocks_are_rebuilt_from_its_history() {
        let p = two_metric_policy();
        let cal = p.calendar().unwrap();
        let mut tk = ticket();
        tk.updated_at = Some("2026-12-01T09:00:00Z".into());
        let history = [
            comment("2026-11-30T09:00:00Z", false),
            status("2026-11-30T09:00:00Z", "new"),
            comment("2026-11-30T09:30:00Z", true),
            status("2026-11-30T09:30:00Z", "pending"),
            comment("2026-12-01T09:00:00Z", false),
            status("2026-12-01T09:00:00Z", "open"),
        ];
        let mut clocks = None;
        reconstruct(&p, &mut clocks, &tk, &history);
        let tc = clocks.unwrap();
        let now = t("2026-12-01T10:00:00Z");
        // Replied at 09:30, within the hour.
        let first = tc.latest(Metric::FirstResponse).unwrap();
        assert_eq!(first.state(cal, now), State::Fulfilled);
        assert_eq!(first.fulfilled_at, Some(t("2026-11-30T09:30:00Z")));
        // Pending from Monday 09:30 to Tuesday 09:00 does not count: 30 minutes used on Monday.
        let resolution = tc.latest(Metric::Resolution).unwrap();
        assert_eq!(resolution.due(cal), Some(t("2026-12-01T16:30:00Z")));
        assert_eq!(resolution.state(cal, now), State::Active);

        // Without its history, the same ticket would look breached twice.
        let mut blind = None;
        ensure_started(&p, &mut blind, &tk);
        let blind = blind.unwrap();
        assert_eq!(
            blind.latest(Metric::FirstResponse).unwrap().state(cal, now),
            State::Breached
        );
        assert_eq!(
            blind.latest(Metric::Resolution).unwrap().due(cal),
            Some(t("2026-11-30T17:00:00Z"))
        );
    }

    #[test]
    fn a_cut_history_ends_on_the_tickets_current_status() {
        let p = two_metric_policy();
        let cal = p.calendar().unwrap();
        let mut tk = ticket();
        tk.status = Some("pending".into());
        tk.updated_at = Some("2026-11-30T11:00:00Z".into());
        let mut clocks = None;
        reconstruct(
            &p,
            &mut clocks,
            &tk,
            &[status("2026-11-30T09:00:00Z", "open")],
        );
        let resolution = clocks.unwrap().latest(Metric::Resolution).unwrap().clone();
        assert_eq!(
            resolution.state(cal, t("2026-12-03T12:00:00Z")),
            State::Paused
        );
        assert_eq!(
            resolution.consumed(cal, t("2026-12-03T12:00:00Z")),
            Duration::hours(2)
        );
    }

    #[test]
    fn a_finished_ticket_gets_no_clocks() {
        let p = two_metric_policy();
        let mut tk = ticket();
        tk.status = Some("solved".into());
        let mut clocks = None;
        assert!(reconstruct(&p, &mut clocks, &tk, &[]).is_empty());
        assert!(clocks.is_none());
    }
}
