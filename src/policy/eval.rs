//! Deciding: rules in order → one [`Decision`], optionally with the evidence `explain` shows.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::condition::{describe, Condition, Eval, Evidence};
use super::{Decision, DueKind, LevelRef, Piece, Policy, Rule, Template, Var, NOTE_MARKER};
use crate::sla::Due;
use crate::ticket::{Priority, Ticket};

/// A rule that matched, with the text that made it match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matched {
    /// Rule name.
    pub rule: String,
    /// One entry per passing test: the test, and the value or span that passed it.
    pub evidence: Vec<Evidence>,
}

/// A rule that almost applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearMiss {
    /// Rule name.
    pub rule: String,
    /// What kept it from applying.
    pub reason: String,
}

/// A decision with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The policy that decided.
    pub policy: String,
    /// The decision.
    pub decision: Decision,
    /// Rules that matched, in order.
    pub matched: Vec<Matched>,
    /// Rules that nearly matched.
    pub near_misses: Vec<NearMiss>,
}

fn summary(c: &Condition, phrases: &super::text::Phrases) -> String {
    let (label, parts) = match c {
        Condition::Test(f, op) => return describe(f, op, phrases),
        Condition::Not(inner) => return format!("not ({})", summary(inner, phrases)),
        Condition::All(v) => ("all of", v),
        Condition::Any(v) => ("any of", v),
    };
    let parts: Vec<String> = parts.iter().map(|c| summary(c, phrases)).collect();
    format!("{label} ({})", parts.join("; "))
}

impl Policy {
    /// The policy's scope as `explain` shows it (`brand_id equals "360001"`), when it has one.
    pub fn scope_text(&self) -> Option<String> {
        self.scope.as_ref().map(|s| summary(s, &self.phrases))
    }

    fn reacts(rule: &Rule, ticket: &Ticket) -> bool {
        match (&rule.on, &ticket.event) {
            (None, _) => true,
            (Some(kinds), Some(ev)) => kinds.contains(ev),
            (Some(_), None) => false,
        }
    }

    pub(super) fn level_of(&self, p: Priority) -> Option<&str> {
        self.levels
            .iter()
            .find(|l| l.priority == p)
            .map(|l| l.name.as_str())
    }

    /// The decision for `ticket`, with evidence when `explain` is set.
    pub fn evaluate(&self, ticket: &Ticket, _now: DateTime<Utc>, explain: bool) -> Explanation {
        let ev = if explain {
            Eval::explaining(ticket, &self.phrases, self.calendar.as_ref())
        } else {
            Eval::new(ticket, &self.phrases, self.calendar.as_ref())
        };
        let mut acc = Acc::default();
        let mut matched = Vec::new();
        let mut near_misses = Vec::new();
        for rule in &self.rules {
            // The gate is only a shortcut for deciding; explaining looks at every rule for near misses.
            if !explain {
                if let Some(gate) = &rule.gate {
                    if !gate.iter().any(|id| ev.present(*id)) {
                        continue;
                    }
                }
            }
            let mut evidence = Vec::new();
            let hit = {
                let mut trace = if explain { Some(&mut evidence) } else { None };
                ev.check(&rule.when, &mut trace)
            };
            let reacts = Self::reacts(rule, ticket);
            if !(hit && reacts) {
                if explain {
                    if let Some(reason) = self.near_miss(rule, &ev, hit, ticket) {
                        near_misses.push(NearMiss {
                            rule: rule.name.clone(),
                            reason,
                        });
                    }
                }
                continue;
            }
            if explain {
                matched.push(Matched {
                    rule: rule.name.clone(),
                    evidence,
                });
            }
            take(&mut acc, rule, ticket);
            if rule.stop {
                break;
            }
        }
        // No rule gave a level: say so, and apply [unclassified] when the policy has one.
        if acc.winner.is_none() && acc.raise == 0 {
            let fallback = self
                .unclassified
                .as_ref()
                .filter(|u| Self::reacts(u, ticket));
            let classifying = self
                .rules
                .iter()
                .any(|r| (r.priority.is_some() || r.raise > 0) && Self::reacts(r, ticket));
            acc.d.unclassified = classifying || fallback.is_some();
            if let Some(u) = fallback {
                if explain {
                    matched.push(Matched {
                        rule: u.name.clone(),
                        evidence: Vec::new(),
                    });
                }
                take(&mut acc, u, ticket);
            }
        }
        let Acc {
            mut d,
            mut winner,
            notes,
            notices,
            sla_choice,
            raise,
        } = acc;
        let raised;
        if raise > 0 {
            // Levels up from what the rules decided, or else from what the ticket has.
            let base = winner
                .map(|w| w.priority)
                .or(ticket.priority)
                .unwrap_or(Priority::Normal);
            raised = LevelRef {
                level: None,
                priority: base.raised(raise),
            };
            winner = Some(&raised);
        }
        if let Some(w) = winner {
            let lowers = self.only_raise && ticket.priority.is_some_and(|have| w.priority < have);
            if !lowers {
                d.priority = Some(w.priority);
                d.level = w
                    .level
                    .clone()
                    .or_else(|| self.level_of(w.priority).map(str::to_string));
            }
        }
        // The level in force: decided, or read back from the ticket's current priority.
        let level = d.level.clone().or_else(|| {
            d.priority
                .or(ticket.priority)
                .and_then(|p| self.level_of(p))
                .map(str::to_string)
        });
        if let Some(tag) = level
            .as_ref()
            .and_then(|l| self.levels.iter().find(|x| &x.name == l))
            .and_then(|l| l.tag.clone())
        {
            if !d.add_tags.contains(&tag) {
                d.add_tags.push(tag.clone());
            }
            for other in self
                .levels
                .iter()
                .filter_map(|l| l.tag.as_ref())
                .filter(|t| **t != tag)
            {
                if !d.remove_tags.contains(other) {
                    d.remove_tags.push(other.clone());
                }
            }
        }
        // A tag both added and removed is added: the rule that adds it is the more specific intent.
        let added = d.add_tags.clone();
        d.remove_tags.retain(|t| !added.contains(t));

        let due = self.apply_sla(ticket, sla_choice, level.as_deref(), &mut d);
        let mut rendered: Vec<String> = notes
            .iter()
            .map(|(rule, t)| self.render(t, rule, ticket, &d, &due))
            .collect();
        if let Some(line) = self.sla_note(sla_choice, &due) {
            rendered.push(line);
        }
        if !rendered.is_empty() {
            d.note = Some(format!("{NOTE_MARKER} {}", rendered.join("\n\n")));
        }
        d.notify = notices
            .iter()
            .map(|(rule, t)| self.render(t, rule, ticket, &d, &due))
            .collect();
        Explanation {
            policy: self.name.clone(),
            decision: d,
            matched,
            near_misses,
        }
    }

    fn near_miss(&self, rule: &Rule, ev: &Eval<'_>, hit: bool, ticket: &Ticket) -> Option<String> {
        if hit {
            let on: Vec<String> = rule.on.iter().flatten().map(|e| e.to_string()).collect();
            return Some(format!(
                "conditions hold, but the rule reacts only to [{}] and this event is {}",
                on.join(", "),
                ticket
                    .event
                    .as_ref()
                    .map_or("unknown".to_string(), |e| e.to_string())
            ));
        }
        let Condition::All(parts) = &rule.when else {
            return None;
        };
        let failing: Vec<&Condition> = parts.iter().filter(|c| !ev.check(c, &mut None)).collect();
        // A `not` holds on almost any ticket: only a positive condition that holds makes it "near".
        let positive_holds = parts.iter().any(|c| {
            !matches!(c, Condition::Not(_)) && !failing.iter().any(|f| std::ptr::eq(*f, c))
        });
        (parts.len() >= 2 && failing.len() == 1 && positive_holds).then(|| {
            format!(
                "all but one condition hold; failed: {}",
                summary(failing[0], &self.phrases)
            )
        })
    }

    fn chosen_sla(&self, choice: Option<&str>) -> Option<&crate::sla::Sla> {
        match choice {
            Some(name) if name != "default" => self.slas.get(name),
            _ => self.sla.as_ref(),
        }
    }

    fn apply_sla(
        &self,
        ticket: &Ticket,
        choice: Option<&str>,
        level: Option<&str>,
        d: &mut Decision,
    ) -> Due {
        let (Some(cal), Some(sla)) = (&self.calendar, self.chosen_sla(choice)) else {
            return Due::default();
        };
        let priority = d.priority.or(ticket.priority);
        let keys: Vec<&str> = level
            .into_iter()
            .chain(priority.map(|p| p.as_str()))
            .collect();
        if keys.is_empty() {
            return Due::default();
        }
        let due = sla.due(cal, ticket, &keys);
        d.first_response_due = due.first_response;
        d.resolution_due = due.resolution;
        for (mapping, instant) in [
            (self.fields.first_response_due, due.first_response),
            (self.fields.resolution_due, due.resolution),
        ] {
            if let (Some((id, kind)), Some(t)) = (mapping, instant) {
                d.fields.insert(id, self.due_value(t, kind));
            }
        }
        if ticket.ticket_type.as_deref() == Some("task") {
            d.due_at = match self.fields.task_due_at {
                Some(DueKind::FirstResponse) => due.first_response,
                Some(DueKind::Resolution) => due.resolution,
                None => None,
            };
        }
        due
    }

    fn sla_note(&self, choice: Option<&str>, due: &Due) -> Option<String> {
        let (cal, sla) = (self.calendar.as_ref()?, self.chosen_sla(choice)?);
        if !sla.note {
            return None;
        }
        let mut parts = Vec::new();
        if let Some(t) = due.first_response {
            parts.push(format!("First response due {}", cal.describe(t)));
        }
        if let Some(t) = due.resolution {
            parts.push(format!("resolution due {}", cal.describe(t)));
        }
        if parts.is_empty() {
            return None;
        }
        let plan = due
            .plan
            .as_ref()
            .map(|p| format!(" (plan {p})"))
            .unwrap_or_default();
        Some(format!("{}{plan}.", parts.join("; ")))
    }

    fn render(&self, t: &Template, rule: &str, ticket: &Ticket, d: &Decision, due: &Due) -> String {
        let when = |t: Option<DateTime<Utc>>| match (t, &self.calendar) {
            (Some(t), Some(c)) => c.describe(t),
            (Some(t), None) => t.to_rfc3339(),
            (None, _) => "no target".to_string(),
        };
        let sla = ticket.sla.as_ref();
        let mut out = String::new();
        for piece in &t.0 {
            match piece {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(v) => out.push_str(&match v {
                    Var::TicketId => ticket.id.to_string(),
                    Var::Subject => ticket.subject.clone(),
                    Var::RequesterEmail => ticket.requester_email.clone().unwrap_or_default(),
                    Var::Organization => ticket
                        .organization
                        .as_ref()
                        .and_then(|o| o.name.clone())
                        .unwrap_or_default(),
                    Var::Plan => due
                        .plan
                        .clone()
                        .or_else(|| self.plan_of(ticket))
                        .unwrap_or_default(),
                    Var::Priority => d
                        .priority
                        .or(ticket.priority)
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    Var::Level => d.level.clone().unwrap_or_default(),
                    Var::FirstResponseDue => when(due.first_response),
                    Var::ResolutionDue => when(due.resolution),
                    Var::Rule => rule.to_string(),
                    Var::Metric => sla.map(|a| a.metric.replace('_', " ")).unwrap_or_default(),
                    Var::Target => sla.and_then(|a| a.target.clone()).unwrap_or_default(),
                    Var::Due => when(sla.and_then(|a| a.due)),
                    Var::MissedBy => sla
                        .map(|a| human_minutes(a.missed_by_secs))
                        .unwrap_or_default(),
                }),
            }
        }
        out
    }
}

/// What the matching rules have decided so far.
#[derive(Default)]
struct Acc<'r> {
    d: Decision,
    winner: Option<&'r LevelRef>,
    notes: Vec<(&'r str, &'r Template)>,
    notices: Vec<(&'r str, &'r Template)>,
    sla_choice: Option<&'r str>,
    raise: u8,
}

/// Adds a matching rule's effects.
fn take<'r>(acc: &mut Acc<'r>, rule: &'r Rule, ticket: &Ticket) {
    let d = &mut acc.d;
    d.matched_rules.push(rule.name.clone());
    // A rule raises a ticket once: when the ticket already carries every tag the rule adds, it
    // was raised by it before (a customer writing "escalate" three times, or a ticket decided
    // again later, does not climb three levels).
    let raised_before = !rule.add_tags.is_empty()
        && rule
            .add_tags
            .iter()
            .all(|t| ticket.tags.iter().any(|have| have.eq_ignore_ascii_case(t)));
    if !raised_before {
        acc.raise = acc.raise.max(rule.raise);
    }
    if let Some(p) = &rule.priority {
        if acc.winner.is_none_or(|w| p.priority > w.priority) {
            acc.winner = Some(p);
        }
    }
    for t in &rule.add_tags {
        if !d.add_tags.contains(t) {
            d.add_tags.push(t.clone());
        }
    }
    for t in &rule.remove_tags {
        if !d.remove_tags.contains(t) {
            d.remove_tags.push(t.clone());
        }
    }
    for (id, v) in &rule.set_fields {
        d.fields.insert(*id, v.clone());
    }
    if rule.group.is_some() {
        d.group_id = rule.group;
    }
    if let Some(n) = &rule.note {
        acc.notes.push((&rule.name, n));
    }
    if let Some(n) = &rule.notify {
        acc.notices.push((&rule.name, n));
    }
    if acc.sla_choice.is_none() {
        acc.sla_choice = rule.sla.as_deref();
    }
}

/// `1 h 05 min`, `45 min`, `0 min`: how long, to the minute (rounded down), as a note says it.
fn human_minutes(secs: i64) -> String {
    let m = secs.max(0) / 60;
    match (m / 60, m % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m:02} min"),
    }
}
