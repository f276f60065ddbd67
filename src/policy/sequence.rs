//! SLA scenarios in `[[test]]` blocks: a ticket, then a timed sequence of events, then the clocks'
//! states, due instants and the escalations that fired, all without a server.
//!
//! ```toml
//! [[test]]
//! name = "urgent, no reply: warned at 11:30, breached at 12:00"
//! ticket = { subject = "URGENT: orders not syncing", created_at = "2026-11-23T09:00:00-08:00" }
//! events = [
//!   { at = "2026-11-23T13:00:00-08:00", comment_by = "agent" },
//!   { at = "2026-11-23T14:00:00-08:00", status = "pending" },
//! ]
//! expect = { priority = "urgent" }
//! sla = { until = "2026-11-24T09:00:00-08:00", first_response = "fulfilled", resolution = "paused",
//!         fired = ["at_risk first_response 2026-11-23T11:30:00-08:00",
//!                  "breached first_response 2026-11-23T12:00:00-08:00"],
//!         tags = ["sla_breached_first_response"] }
//! ```
//!
//! Timers fire in time order between events, exactly as the worker would fire them: each runs the
//! escalation rules (`on = ["sla.at_risk" | "sla.breached"]`) on the ticket as it stands then.

use chrono::{DateTime, Utc};
use toml::{Table, Value};

use super::condition::unknown;
use super::diagnostic::Located;
use super::{Decision, Policy};
use serde::Serialize;

use crate::sla::clock::{Change, Effect, Metric, TicketClocks, TimerKind, STATUSES};
use crate::ticket::{parse_time, EventKind, Priority, Ticket};

const EVENT_KEYS: &[&str] = &["at", "comment_by", "public", "status", "priority"];
const SLA_KEYS: &[&str] = &[
    "until",
    "first_response",
    "next_response",
    "resolution",
    "first_response_due",
    "next_response_due",
    "resolution_due",
    "fired",
    "tags",
    "absent_tags",
    "note_contains",
];
const STATES: &[&str] = &["active", "paused", "fulfilled", "breached"];

/// What happens to the ticket at one instant.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Comment { by_agent: bool, public: bool },
    Status(String),
    Priority(Priority),
}

/// An event sequence and what the clocks should show after it.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    events: Vec<(DateTime<Utc>, Step)>,
    until: Option<DateTime<Utc>>,
    states: Vec<(Metric, String)>,
    dues: Vec<(Metric, Option<DateTime<Utc>>)>,
    fired: Option<Vec<(TimerKind, Metric, DateTime<Utc>)>>,
    tags: Vec<String>,
    absent_tags: Vec<String>,
    note_contains: Vec<String>,
}

fn located(path: &[String], key: &str, message: impl Into<String>) -> Located {
    let mut p = path.to_vec();
    p.push(key.to_string());
    Located::new(&p, message)
}

fn instant(v: &Value, path: &[String], key: &str) -> Result<DateTime<Utc>, Located> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Datetime(d) => d.to_string(),
        _ => return Err(located(path, key, "expected an RFC 3339 time")),
    };
    parse_time(&s).ok_or_else(|| {
        located(
            path,
            key,
            format!("{s:?} is not an RFC 3339 time like 2026-11-23T12:00:00-08:00"),
        )
    })
}

fn strings(t: &Table, key: &str, path: &[String]) -> Result<Vec<String>, Located> {
    match t.get(key) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| located(path, key, "expected a list of strings"))
            })
            .collect(),
        Some(_) => Err(located(path, key, "expected a list of strings")),
    }
}

fn step(t: &Table, path: &[String]) -> Result<(DateTime<Utc>, Step), Located> {
    if let Some(k) = t.keys().find(|k| !EVENT_KEYS.contains(&k.as_str())) {
        return Err(located(path, k, unknown("key of an event", k, EVENT_KEYS)));
    }
    let at = instant(
        t.get("at")
            .ok_or_else(|| Located::new(path, "an event needs at = \"<RFC 3339 time>\""))?,
        path,
        "at",
    )?;
    let kinds = ["comment_by", "status", "priority"]
        .iter()
        .filter(|k| t.contains_key(**k))
        .count();
    if kinds != 1 {
        return Err(Located::new(
            path,
            "an event is one of comment_by = \"agent\" | \"end-user\", status = \"...\" or priority = \"...\"",
        ));
    }
    let text = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
    let step = if let Some(by) = t.get("comment_by") {
        let by_agent = match by.as_str() {
            Some("agent") => true,
            Some("end-user") => false,
            _ => {
                return Err(located(
                    path,
                    "comment_by",
                    "expected \"agent\" or \"end-user\"",
                ))
            }
        };
        let public = match t.get("public") {
            None => true,
            Some(Value::Boolean(b)) => *b,
            Some(_) => return Err(located(path, "public", "expected true or false")),
        };
        Step::Comment { by_agent, public }
    } else if let Some(s) = text("status") {
        let s = s.to_ascii_lowercase();
        if !STATUSES.contains(&s.as_str()) {
            return Err(located(path, "status", unknown("status", &s, STATUSES)));
        }
        Step::Status(s)
    } else {
        let p = text("priority").unwrap_or_default();
        Step::Priority(p.parse().map_err(|e: crate::ticket::UnknownPriority| {
            located(path, "priority", e.to_string())
        })?)
    };
    Ok((at, step))
}

fn fired_entry(s: &str, path: &[String]) -> Result<(TimerKind, Metric, DateTime<Utc>), Located> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let parsed = match words.as_slice() {
        [k, m, t] => TimerKind::parse(k)
            .zip(Metric::parse(m))
            .zip(parse_time(t))
            .map(|((k, m), t)| (k, m, t)),
        _ => None,
    };
    parsed.ok_or_else(|| {
        located(
            path,
            "fired",
            format!("{s:?}: write \"at_risk|breached <metric> <RFC 3339 time>\", e.g. \"breached first_response 2026-11-23T12:00:00-08:00\""),
        )
    })
}

impl Scenario {
    /// Reads `events` and `sla` of a `[[test]]` table; `None` when it has neither.
    pub fn parse(t: &Table, path: &[String]) -> Result<Option<Scenario>, Located> {
        if !t.contains_key("events") && !t.contains_key("sla") {
            return Ok(None);
        }
        let mut sc = Scenario::default();
        if let Some(v) = t.get("events") {
            let ep: Vec<String> = path.iter().cloned().chain(["events".into()]).collect();
            let Value::Array(items) = v else {
                return Err(Located::new(&ep, "events is a list of { at = ..., ... }"));
            };
            for (i, item) in items.iter().enumerate() {
                let ip: Vec<String> = ep.iter().cloned().chain([i.to_string()]).collect();
                let tab = item
                    .as_table()
                    .ok_or_else(|| Located::new(&ip, "an event is a table { at = ..., ... }"))?;
                sc.events.push(step(tab, &ip)?);
            }
            if sc.events.windows(2).any(|w| w[1].0 < w[0].0) {
                return Err(Located::new(&ep, "events must be in time order"));
            }
        }
        let sp: Vec<String> = path.iter().cloned().chain(["sla".into()]).collect();
        let Some(s) = t.get("sla") else {
            return Ok(Some(sc));
        };
        let s = s.as_table().ok_or_else(|| {
            Located::new(
                &sp,
                "sla = { until = ..., first_response = \"breached\", ... }",
            )
        })?;
        if let Some(k) = s.keys().find(|k| !SLA_KEYS.contains(&k.as_str())) {
            return Err(located(&sp, k, unknown("SLA expectation", k, SLA_KEYS)));
        }
        sc.until = s
            .get("until")
            .map(|v| instant(v, &sp, "until"))
            .transpose()?;
        for m in Metric::ALL {
            if let Some(v) = s.get(m.as_str()) {
                let st = v.as_str().unwrap_or_default();
                if !STATES.contains(&st) {
                    return Err(located(&sp, m.as_str(), unknown("state", st, STATES)));
                }
                sc.states.push((m, st.to_string()));
            }
            let key = format!("{}_due", m.as_str());
            if let Some(v) = s.get(&key) {
                let due = match v.as_str() {
                    Some("none") => None,
                    _ => Some(instant(v, &sp, &key)?),
                };
                sc.dues.push((m, due));
            }
        }
        if s.contains_key("fired") {
            sc.fired = Some(
                strings(s, "fired", &sp)?
                    .iter()
                    .map(|f| fired_entry(f, &sp))
                    .collect::<Result<_, _>>()?,
            );
        }
        sc.tags = strings(s, "tags", &sp)?;
        sc.absent_tags = strings(s, "absent_tags", &sp)?;
        sc.note_contains = strings(s, "note_contains", &sp)?;
        Ok(Some(sc))
    }

    /// Reads the `events` list of an `explain` file (the same keys as in a `[[test]]`).
    pub fn from_json(events: &serde_json::Value) -> Result<Scenario, String> {
        let v = toml::Value::try_from(events).map_err(|e| format!("\"events\": {e}"))?;
        let mut t = Table::new();
        t.insert("events".into(), v);
        Scenario::parse(&t, &[])
            .map(Option::unwrap_or_default)
            .map_err(|e| format!("{}: {}", e.path.join("."), e.message))
    }

    /// Plays the sequence on `ticket` as `decision` left it; every difference from the expectations.
    pub fn run(&self, policy: &Policy, ticket: &Ticket, decision: &Decision) -> Vec<String> {
        match self.play(policy, ticket, decision) {
            Ok(p) => self.compare(&p, policy),
            Err(e) => vec![e],
        }
    }

    /// Each clock's life, in time order: what happened up to the end of the sequence (or
    /// `until`), then the at-risk and due instants still to come.
    pub fn timeline(
        &self,
        policy: &Policy,
        ticket: &Ticket,
        decision: &Decision,
    ) -> Result<Vec<Moment>, String> {
        let played = self.play(policy, ticket, decision)?;
        let mut out = played.moments;
        if let Some((cal, rules)) = policy.clock_rules() {
            for c in played.clocks.clocks.iter().filter(|c| c.is_open()) {
                let mut upcoming = |at: Option<DateTime<Utc>>, what: &str| {
                    if let Some(at) = at.filter(|a| *a > played.end) {
                        out.push(Moment {
                            at,
                            metric: c.metric,
                            instance: c.instance,
                            what: what.to_string(),
                        });
                    }
                };
                upcoming(
                    rules.warn.and_then(|w| c.at_risk(cal, w)),
                    "at risk (to come)",
                );
                upcoming(c.due(cal), "due");
                if c.is_paused() {
                    out.push(Moment {
                        at: played.end,
                        metric: c.metric,
                        instance: c.instance,
                        what: "paused: no due time while the ticket waits".into(),
                    });
                }
            }
        }
        out.sort_by_key(|m| m.at);
        Ok(out)
    }

    fn play(
        &self,
        policy: &Policy,
        ticket: &Ticket,
        decision: &Decision,
    ) -> Result<Played, String> {
        let Some((cal, rules)) = policy.clock_rules() else {
            return Err("the policy runs no SLA clocks: add [sla] targets and a calendar".into());
        };
        let Some(created) = ticket.created_at else {
            return Err("an SLA scenario needs the ticket's created_at".into());
        };
        let mut t = ticket.clone();
        apply(&mut t, decision);
        let (mut tc, _) = TicketClocks::start(t.id, created, None, &Default::default(), rules);
        tc.priority = t.priority;
        tc.plan = policy.plan_of(&t);
        tc.apply(&Change::Retarget, &policy.clock_targets(&tc), rules);
        let status = t.status.clone().unwrap_or_else(|| "new".into());
        tc.apply(
            &Change::Status {
                at: created,
                status,
            },
            &policy.clock_targets(&tc),
            rules,
        );
        let mut moments: Vec<Moment> = tc
            .clocks
            .iter()
            .map(|c| Moment {
                at: created,
                metric: c.metric,
                instance: c.instance,
                what: format!(
                    "started ({})",
                    c.target.map_or("no target".into(), |x| x.to_string())
                ),
            })
            .collect();
        let mut fired = Vec::new();
        let mut notes = Vec::new();
        let end = self
            .until
            .or(self.events.last().map(|e| e.0))
            .unwrap_or(created);
        let steps = self.events.iter().map(|(at, s)| (*at, Some(s)));
        for (at, step) in steps.chain([(end, None)]) {
            // Timers due before this event act first, in time order.
            while let Some(timer) = tc.timers(cal, rules).into_iter().find(|x| x.at <= at) {
                t.event = Some(EventKind::new(timer.kind.event()));
                t.sla = tc
                    .get(timer.metric, timer.instance)
                    .map(|c| c.alert(cal, timer.kind, timer.at));
                let d = policy.decide(&t, timer.at);
                t.sla = None;
                apply(&mut t, &d);
                notes.extend(d.note);
                tc.mark_fired(timer.metric, timer.instance, timer.kind);
                fired.push((timer.kind, timer.metric, timer.at));
                let by = if d.matched_rules.is_empty() {
                    "no rule escalates".to_string()
                } else {
                    format!("escalated by {}", d.matched_rules.join(", "))
                };
                let what = match timer.kind {
                    TimerKind::AtRisk => "at risk",
                    TimerKind::Breached => "breached",
                };
                moments.push(Moment {
                    at: timer.at,
                    metric: timer.metric,
                    instance: timer.instance,
                    what: format!("{what}: {by}"),
                });
            }
            let targets = policy.clock_targets(&tc);
            let effects = match step {
                None => Vec::new(),
                Some(Step::Comment { by_agent, public }) => {
                    let change = Change::Comment {
                        at,
                        public: *public,
                        by_agent: Some(*by_agent),
                    };
                    tc.apply(&change, &targets, rules)
                }
                Some(Step::Status(s)) => {
                    t.status = Some(s.clone());
                    tc.apply(
                        &Change::Status {
                            at,
                            status: s.clone(),
                        },
                        &targets,
                        rules,
                    )
                }
                Some(Step::Priority(p)) => {
                    t.priority = Some(*p);
                    tc.priority = Some(*p);
                    tc.apply(&Change::Retarget, &policy.clock_targets(&tc), rules)
                }
            };
            moments.extend(effects.iter().filter_map(|e| moment(e, at, &tc)));
            let cleared = tc.cleared_at_risk_tags();
            t.tags.retain(|x| !cleared.contains(x));
        }
        Ok(Played {
            clocks: tc,
            ticket: t,
            fired,
            notes,
            moments,
            end,
        })
    }

    fn compare(&self, p: &Played, policy: &Policy) -> Vec<String> {
        let Some(cal) = policy.calendar() else {
            return Vec::new();
        };
        let (tc, end, fired, t, notes) = (&p.clocks, p.end, &p.fired[..], &p.ticket, &p.notes);
        let mut diffs = Vec::new();
        let when = |x: Option<DateTime<Utc>>| match x {
            Some(x) => format!(
                "{} ({})",
                x.with_timezone(&cal.timezone()).to_rfc3339(),
                cal.describe(x)
            ),
            None => "none".into(),
        };
        for (m, want) in &self.states {
            let got = tc
                .latest(*m)
                .map_or("not started", |c| c.state(cal, end).as_str());
            if got != want {
                diffs.push(format!(
                    "sla.{m}: expected {want}, got {got} at {}",
                    when(Some(end))
                ));
            }
        }
        for (m, want) in &self.dues {
            let got = tc.latest(*m).and_then(|c| c.due(cal));
            if got != *want {
                diffs.push(format!(
                    "sla.{m}_due: expected {}, got {}",
                    when(*want),
                    when(got)
                ));
            }
        }
        if let Some(want) = &self.fired {
            let show = |v: &[(TimerKind, Metric, DateTime<Utc>)]| -> Vec<String> {
                v.iter()
                    .map(|(k, m, x)| {
                        format!(
                            "{} {m} {}",
                            k.as_str(),
                            x.with_timezone(&cal.timezone()).to_rfc3339()
                        )
                    })
                    .collect()
            };
            if want.as_slice() != fired {
                diffs.push(format!(
                    "sla.fired: expected {:?}, got {:?}",
                    show(want),
                    show(fired)
                ));
            }
        }
        let missing: Vec<&String> = self.tags.iter().filter(|x| !t.tags.contains(x)).collect();
        if !missing.is_empty() {
            diffs.push(format!(
                "sla.tags: missing {missing:?}; the ticket would have {:?}",
                t.tags
            ));
        }
        let present: Vec<&String> = self
            .absent_tags
            .iter()
            .filter(|x| t.tags.contains(x))
            .collect();
        if !present.is_empty() {
            diffs.push(format!(
                "sla.tags: {present:?} should be absent; the ticket would have {:?}",
                t.tags
            ));
        }
        let all = notes.join("\n\n");
        for s in &self.note_contains {
            if !all.contains(s.as_str()) {
                diffs.push(format!(
                    "sla.note: expected the escalation notes to contain {s:?}, got {all:?}"
                ));
            }
        }
        diffs
    }
}

/// A sequence played out.
struct Played {
    clocks: TicketClocks,
    ticket: Ticket,
    fired: Vec<(TimerKind, Metric, DateTime<Utc>)>,
    notes: Vec<String>,
    moments: Vec<Moment>,
    end: DateTime<Utc>,
}

/// One moment of a clock's life, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moment {
    /// When.
    pub at: DateTime<Utc>,
    /// Metric.
    pub metric: Metric,
    /// Instance.
    pub instance: u32,
    /// What happened (`started (3 business hours)`, `paused`, `breached: escalated by ...`, `due`).
    pub what: String,
}

fn moment(e: &Effect, at: DateTime<Utc>, tc: &TicketClocks) -> Option<Moment> {
    let latest = |m: Metric| tc.latest(m).map_or(1, |c| c.instance);
    let (metric, instance, what) = match e {
        Effect::Started {
            metric, instance, ..
        } => (*metric, *instance, "started".to_string()),
        Effect::Paused { metric, .. } => (*metric, latest(*metric), "paused".into()),
        Effect::Resumed { metric, .. } => (*metric, latest(*metric), "resumed".into()),
        Effect::Fulfilled {
            metric, instance, ..
        } => (*metric, *instance, "fulfilled".into()),
        Effect::Retargeted { metric, target } => (
            *metric,
            latest(*metric),
            format!("target now {}", target.as_deref().unwrap_or("none")),
        ),
        Effect::Ignored { .. } => return None,
    };
    Some(Moment {
        at,
        metric,
        instance,
        what,
    })
}

/// What a decision does to the ticket, as Zendesk would apply it (the parts escalations use).
fn apply(t: &mut Ticket, d: &Decision) {
    if let Some(p) = d.priority {
        t.priority = Some(p);
    }
    t.tags.retain(|x| !d.remove_tags.contains(x));
    for x in &d.add_tags {
        if !t.tags.contains(x) {
            t.tags.push(x.clone());
        }
    }
    if d.group_id.is_some() {
        t.group_id = d.group_id;
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::Policy;
    use std::path::Path;

    const POLICY: &str = r#"
[policy]
name = "seq"
[calendars.c]
timezone = "America/Los_Angeles"
hours = { mon-fri = "08:00-18:00" }
[sla]
warn_before = "25%"
[sla.urgent]
first_response = "4 business hours"
next_response = "1 business hour"
[[rule]]
name = "urgent"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
[[rule]]
name = "late"
on = ["sla.breached"]
add_tags = ["late_{{x}}"]
"#;

    fn run(test: &str) -> Result<Vec<Result<(), Vec<String>>>, String> {
        let text = POLICY.replace("late_{{x}}", "late") + test;
        let loaded = Policy::parse(&text, Path::new("p.toml")).map_err(|e| e.to_string())?;
        let p = loaded.policy;
        Ok(p.tests().iter().map(|c| c.run(&p)).collect())
    }

    const TICKET: &str =
        "ticket = { subject = \"URGENT\", created_at = \"2026-11-30T09:00:00-08:00\" }\n";

    #[test]
    fn next_response_cycles_and_their_warnings() {
        let r = run(&format!(
            "[[test]]\n{TICKET}events = [\n  {{ at = \"2026-11-30T10:00:00-08:00\", comment_by = \"agent\" }},\n  {{ at = \"2026-11-30T11:00:00-08:00\", comment_by = \"end-user\" }},\n]\nsla = {{ until = \"2026-11-30T12:30:00-08:00\", first_response = \"fulfilled\", next_response = \"breached\", next_response_due = \"2026-11-30T12:00:00-08:00\", fired = [\"at_risk next_response 2026-11-30T11:45:00-08:00\", \"breached next_response 2026-11-30T12:00:00-08:00\"], tags = [\"late\"] }}\n"
        ))
        .unwrap();
        assert_eq!(r, vec![Ok(())]);
    }

    #[test]
    fn a_wrong_expectation_says_what_happened() {
        let r = run(&format!(
            "[[test]]\n{TICKET}sla = {{ until = \"2026-11-30T14:00:00-08:00\", first_response = \"active\", fired = [] }}\n"
        ))
        .unwrap();
        assert_eq!(
            r,
            vec![Err(vec![
                "sla.first_response: expected active, got breached at 2026-11-30T14:00:00-08:00 (Mon 30 Nov, 14:00 PST)".to_string(),
                "sla.fired: expected [], got [\"at_risk first_response 2026-11-30T12:00:00-08:00\", \"breached first_response 2026-11-30T13:00:00-08:00\"]".to_string(),
            ])]
        );
    }

    #[test]
    fn bad_scenarios_are_load_errors_at_their_key() {
        let e = run(&format!(
            "[[test]]\n{TICKET}events = [{{ at = \"2026-11-30T10:00:00-08:00\", comment = \"agent\" }}]\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("p.toml:22:47: unknown key of an event `comment`"),
            "{e}"
        );
        let e = run(&format!(
            "[[test]]\n{TICKET}events = [{{ at = \"2026-11-30T10:00:00-08:00\", status = \"pending\" }}, {{ at = \"2026-11-30T09:30:00-08:00\", status = \"open\" }}]\n"
        ))
        .unwrap_err();
        assert!(e.contains("events must be in time order"), "{e}");
        let e = run(&format!(
            "[[test]]\n{TICKET}sla = {{ fired = [\"breached at noon\"] }}\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("p.toml:22:9: \"breached at noon\": write \"at_risk|breached <metric> <RFC 3339 time>\""),
            "{e}"
        );
        let e = run(&format!(
            "[[test]]\n{TICKET}sla = {{ resolution = \"late\" }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("unknown state `late`"), "{e}");
    }
}
