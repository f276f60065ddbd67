//! What each job does to its ticket's SLA clocks. Webhook events move the clocks from their
//! payload alone (comment author and visibility, status, priority), so they cost no Zendesk read;
//! a timer checks that it still has cause to act before the worker lets the policy escalate.

use chrono::{DateTime, Duration, Utc};

use crate::policy::Policy;
use crate::sla::clock::{Change, Effect, Metric, TicketClocks, Timer, TimerKind};
use crate::ticket::{EventKind, Priority, SlaAlert, Ticket};
use crate::webhook::payload::TicketEvent;
use crate::zendesk::model::SeenComment;

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
    if let Some(status) = ticket.status.clone() {
        effects.extend(fresh.apply(
            &Change::Status {
                at: created,
                status,
            },
            &targets,
            rules,
        ));
    }
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
    if let Some(status) = ticket.status.clone() {
        if tc.status.as_ref() != Some(&status) {
            let at = ticket
                .updated_at
                .as_deref()
                .and_then(crate::ticket::parse_time)
                .unwrap_or(started);
            effects.extend(tc.apply(&Change::Status { at, status }, &targets, rules));
        }
    }
    effects.retain(|e| !matches!(e, Effect::Ignored { .. }));
    effects
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
}
