//! What a policy says about a ticket's SLA clocks: how they run, the targets at the ticket's
//! level, and the due-date fields that show where they stand. The clocks follow the default
//! `[sla]` table (a rule's `sla = "NAME"` chooses due dates at creation only).

use chrono::{DateTime, Utc};

use super::{FieldKind, Policy};
use crate::calendar::Calendar;
use crate::sla::clock::{Metric, Rules, Targets, TicketClocks};
use crate::ticket::Ticket;

impl Policy {
    /// The calendar and the clock rules, when the policy runs SLA clocks (an `[sla]` with targets).
    pub fn clock_rules(&self) -> Option<(&Calendar, &Rules)> {
        Some((self.calendar.as_ref()?, self.clock_rules.as_ref()?))
    }

    /// The targets at the clocks' priority (through the policy's levels) and plan. A ticket
    /// without a priority has none, as in Zendesk: its clocks run without timers until it gets one.
    pub fn clock_targets(&self, clocks: &TicketClocks) -> Targets {
        let (Some(sla), Some(p)) = (&self.sla, clocks.priority) else {
            return Targets::default();
        };
        let keys: Vec<&str> = self.level_of(p).into_iter().chain([p.as_str()]).collect();
        sla.targets_on(clocks.plan.as_deref(), &keys)
    }

    /// The ticket's plan tier, when the policy reads one.
    pub fn plan_of(&self, ticket: &Ticket) -> Option<String> {
        self.plan_source()?.read(ticket)
    }

    /// How a due instant is written into a field of this kind.
    pub(super) fn due_value(&self, t: DateTime<Utc>, kind: FieldKind) -> serde_json::Value {
        match (kind, &self.calendar) {
            (FieldKind::Date, Some(cal)) => serde_json::Value::String(cal.local_day(t)),
            _ => serde_json::Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    }

    /// The due-date fields as the clocks now put them: the current due instant of the latest
    /// first-response and resolution clocks that are running (`Some`), or `None` for a field the
    /// clocks leave as the ticket has it (paused, finished or without a target). A rule's
    /// decision computes due dates from creation; these take precedence once clocks exist.
    pub fn clock_fields(&self, clocks: &TicketClocks) -> Vec<(u64, Option<serde_json::Value>)> {
        let Some(cal) = &self.calendar else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (mapping, metric) in [
            (self.fields.first_response_due, Metric::FirstResponse),
            (self.fields.resolution_due, Metric::Resolution),
        ] {
            let Some((id, kind)) = mapping else { continue };
            let due = clocks
                .latest(metric)
                .filter(|c| c.is_open())
                .and_then(|c| c.due(cal));
            out.push((id, due.map(|t| self.due_value(t, kind))));
        }
        out
    }
}
