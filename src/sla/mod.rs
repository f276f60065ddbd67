//! SLA targets: per priority, a first-response and a resolution duration, optionally by plan tier.
//!
//! Due instants run from the ticket's `created_at` (not from when deskbot saw it) on the policy's
//! business calendar. A level without a target (StoreConnect's medium and low) gets no due date.
//!
//! ```toml
//! [sla]
//! plan = { organization_field = "plan" }   # or { tag_prefix = "plan_" }
//! note = true                              # add the due times to the private note
//!
//! [sla.urgent]
//! first_response = "3 business hours"
//! resolution = "24 business hours"
//!
//! [sla.high]
//! first_response = { flagship = "1 week", boutique = "2 weeks", default = "2 weeks" }
//! next_response = "4 business hours"
//! ```
//!
//! The clocks that keep running after creation (see [`clock`] and docs/sla.md) take two more keys:
//! `pause_on = ["pending", "hold"]` (statuses that pause resolution; `["pending"]` by default) and
//! `warn_before = "30 business minutes"` or `"25%"` (when the at-risk timer fires; none by default).

pub mod clock;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use toml::Value;

use crate::calendar::{Calendar, Span};
use crate::ticket::Ticket;
use clock::{Metric, Rules, Targets, Warn};

/// Where a ticket's plan tier is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanSource {
    /// An organization custom field, by key.
    OrganizationField(String),
    /// The first ticket tag with this prefix (the rest of the tag is the plan).
    TagPrefix(String),
}

impl PlanSource {
    /// Reads `{ organization_field = "plan" }` or `{ tag_prefix = "plan_" }`; `at` names the key.
    pub fn from_toml(v: &Value, at: &str) -> Result<PlanSource, String> {
        let p = v.as_table().ok_or_else(|| {
            format!("{at}: expected {{ organization_field = \"plan\" }} or {{ tag_prefix = \"plan_\" }}")
        })?;
        match (p.get("organization_field"), p.get("tag_prefix"), p.len()) {
            (Some(Value::String(f)), None, 1) => Ok(PlanSource::OrganizationField(f.clone())),
            (None, Some(Value::String(pre)), 1) => Ok(PlanSource::TagPrefix(pre.clone())),
            _ => Err(format!(
                "{at}: expected exactly one of organization_field = \"...\" or tag_prefix = \"...\""
            )),
        }
    }

    /// The ticket's plan tier, normalized (`Pop-Up` → `pop_up`); `None` when it has none.
    pub fn read(&self, ticket: &Ticket) -> Option<String> {
        match self {
            PlanSource::OrganizationField(key) => {
                let v = ticket.organization.as_ref()?.fields.get(key)?;
                v.as_str().map(normalize_plan).filter(|p| !p.is_empty())
            }
            PlanSource::TagPrefix(prefix) => ticket
                .tags
                .iter()
                .find_map(|t| t.strip_prefix(prefix.as_str()))
                .map(normalize_plan)
                .filter(|p| !p.is_empty()),
        }
    }
}

/// One target: fixed, or chosen by plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The same for every plan.
    Fixed(Span),
    /// By plan, with an optional default for unknown or missing plans.
    ByPlan {
        /// Plan (normalized) → duration.
        plans: BTreeMap<String, Span>,
        /// For plans not listed.
        default: Option<Span>,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Level {
    first_response: Option<Target>,
    next_response: Option<Target>,
    resolution: Option<Target>,
}

impl Level {
    fn get(&self, m: Metric) -> &Option<Target> {
        match m {
            Metric::FirstResponse => &self.first_response,
            Metric::NextResponse => &self.next_response,
            Metric::Resolution => &self.resolution,
        }
    }
}

/// The SLA section of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Sla {
    /// By level name: a Zendesk priority or one of the policy's `[levels]`.
    levels: BTreeMap<String, Level>,
    plan: Option<PlanSource>,
    /// Add a line with the due times to the private note.
    pub note: bool,
    /// Statuses that pause resolution.
    pause_on: Vec<String>,
    /// When the at-risk timer fires.
    warn: Option<Warn>,
}

impl Default for Sla {
    fn default() -> Self {
        Sla {
            levels: BTreeMap::new(),
            plan: None,
            note: false,
            pause_on: vec!["pending".into()],
            warn: None,
        }
    }
}

/// Due instants for one ticket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    /// First response due.
    pub first_response: Option<DateTime<Utc>>,
    /// Resolution due.
    pub resolution: Option<DateTime<Utc>>,
    /// The plan tier used, if any.
    pub plan: Option<String>,
}

/// Plan names compare case-insensitively, with spaces and hyphens as underscores ("Pop-Up" = "pop_up").
pub fn normalize_plan(s: &str) -> String {
    s.trim()
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect()
}

fn span(v: &Value, at: &str) -> Result<Span, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{at}: expected a duration such as \"3 business hours\""))?;
    s.parse::<Span>().map_err(|e| format!("{at}: {e}"))
}

fn target(v: &Value, at: &str) -> Result<Target, String> {
    match v {
        Value::Table(t) => {
            let mut plans = BTreeMap::new();
            let mut default = None;
            for (plan, d) in t {
                let d = span(d, &format!("{at}.{plan}"))?;
                if plan == "default" {
                    default = Some(d);
                } else {
                    plans.insert(normalize_plan(plan), d);
                }
            }
            Ok(Target::ByPlan { plans, default })
        }
        other => Ok(Target::Fixed(span(other, at)?)),
    }
}

impl Sla {
    /// Reads an `[sla]` table; `levels` are the level names the policy knows (priorities and
    /// `[levels]`); `inherited` is the policy's own plan source, used when the table names none.
    pub fn from_toml(
        v: &Value,
        levels: &[String],
        inherited: Option<&PlanSource>,
    ) -> Result<Sla, String> {
        let Value::Table(t) = v else {
            return Err("sla: expected a table".into());
        };
        let mut sla = Sla::default();
        for (key, val) in t {
            match key.as_str() {
                "note" => sla.note = val.as_bool().ok_or("sla.note: expected true or false")?,
                "pause_on" => {
                    let list = val.as_array().ok_or(
                        "sla.pause_on: expected a list of statuses, e.g. [\"pending\", \"hold\"]",
                    )?;
                    sla.pause_on.clear();
                    for s in list {
                        let s = s.as_str().map(str::to_ascii_lowercase);
                        match s.as_deref() {
                            Some(st @ ("pending" | "hold")) => sla.pause_on.push(st.to_string()),
                            Some(other) => return Err(format!(
                                "sla.pause_on: {other:?} cannot pause a clock: use \"pending\" and/or \"hold\" (solved and closed stop the clocks; new and open run them)"
                            )),
                            None => return Err("sla.pause_on: expected status names as strings".into()),
                        }
                    }
                }
                "warn_before" => {
                    let w = val.as_str().ok_or(
                        "sla.warn_before: expected a duration (\"30 business minutes\") or a percentage of the target (\"25%\")",
                    )?;
                    sla.warn = Some(w.parse().map_err(|e| format!("sla.warn_before: {e}"))?);
                }
                "plan" => sla.plan = Some(PlanSource::from_toml(val, "sla.plan")?),
                level => {
                    if !levels.iter().any(|l| l == level) {
                        return Err(format!(
                            "sla.{level}: unknown level; expected {} (or plan, note, pause_on, warn_before)",
                            levels.join(", ")
                        ));
                    }
                    let lt = val.as_table().ok_or_else(|| {
                        format!(
                            "sla.{level}: expected a table with first_response, next_response and/or resolution"
                        )
                    })?;
                    let mut l = Level::default();
                    for (k, v) in lt {
                        let at = format!("sla.{level}.{k}");
                        match k.as_str() {
                            "first_response" => l.first_response = Some(target(v, &at)?),
                            "next_response" => l.next_response = Some(target(v, &at)?),
                            "resolution" => l.resolution = Some(target(v, &at)?),
                            _ => {
                                return Err(format!(
                                    "{at}: unknown key; expected first_response, next_response or resolution"
                                ))
                            }
                        }
                    }
                    sla.levels.insert(level.to_string(), l);
                }
            }
        }
        if sla.plan.is_none() {
            sla.plan = inherited.cloned();
        }
        if sla.plan.is_none() {
            let by_plan = sla.levels.iter().find(|(_, l)| {
                [&l.first_response, &l.next_response, &l.resolution]
                    .iter()
                    .any(|t| matches!(t, Some(Target::ByPlan { .. })))
            });
            if let Some((p, _)) = by_plan {
                return Err(format!(
                    "sla.{p}: targets by plan need plan = {{ organization_field = \"...\" }} or {{ tag_prefix = \"...\" }} in [policy] (or [sla])"
                ));
            }
        }
        Ok(sla)
    }

    /// Where the plan tier is read from, if anywhere.
    pub fn plan_source(&self) -> Option<&PlanSource> {
        self.plan.as_ref()
    }

    /// The ticket's plan tier, normalized, when the policy reads one.
    pub fn plan_of(&self, ticket: &Ticket) -> Option<String> {
        self.plan.as_ref()?.read(ticket)
    }

    /// How the clocks run: the metrics some level has a target for, pauses and the warning.
    pub fn rules(&self) -> Rules {
        Rules {
            metrics: Metric::ALL
                .into_iter()
                .filter(|m| self.levels.values().any(|l| l.get(*m).is_some()))
                .collect(),
            pause_on: self.pause_on.clone(),
            warn: self.warn,
        }
    }

    /// The targets for a ticket at the first of `levels` that has any, on its plan.
    pub fn targets(&self, ticket: &Ticket, levels: &[&str]) -> Targets {
        self.targets_on(self.plan_of(ticket).as_deref(), levels)
    }

    /// The targets at the first of `levels` that has any, on `plan` (normalized).
    pub fn targets_on(&self, plan: Option<&str>, levels: &[&str]) -> Targets {
        let Some(level) = levels.iter().find_map(|l| self.levels.get(*l)) else {
            return Targets::default();
        };
        let pick = |m| match level.get(m).as_ref()? {
            Target::Fixed(s) => Some(*s),
            Target::ByPlan { plans, default } => plan
                .and_then(|p| plans.get(p))
                .or(default.as_ref())
                .copied(),
        };
        Targets {
            first_response: pick(Metric::FirstResponse),
            next_response: pick(Metric::NextResponse),
            resolution: pick(Metric::Resolution),
        }
    }

    /// Due instants for a ticket at the first of `levels` (level names, most specific first) that has targets.
    pub fn due(&self, cal: &Calendar, ticket: &Ticket, levels: &[&str]) -> Due {
        let targets = self.targets(ticket, levels);
        let at = |span: Option<Span>| Some(cal.add(ticket.created_at?, span?));
        Due {
            first_response: at(targets.first_response),
            resolution: at(targets.resolution),
            plan: self.plan_of(ticket),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::Organization;
    use serde_json::json;

    fn sla(src: &str) -> Result<Sla, String> {
        let t: toml::Table = toml::from_str(src).unwrap();
        let levels: Vec<String> = ["low", "normal", "high", "urgent"]
            .map(String::from)
            .to_vec();
        Sla::from_toml(&t["sla"], &levels, None)
    }

    fn sydney() -> Calendar {
        crate::calendar::weekdays("Australia/Sydney", "09:00-17:00")
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const STORECONNECT: &str = r#"
[sla]
plan = { organization_field = "plan" }
[sla.urgent]
first_response = { flagship = "1 business day", emporium = "2 business days", boutique = "3 business days", pop_up = "3 business days", default = "3 business days" }
[sla.high]
first_response = { flagship = "1 week", emporium = "1 week", boutique = "2 weeks", "Pop-Up" = "2 weeks" }
"#;

    fn ticket(plan: Option<&str>) -> Ticket {
        Ticket {
            created_at: Some(t("2026-11-23T10:00:00+11:00")),
            organization: plan.map(|p| Organization {
                id: 1,
                name: None,
                fields: [("plan".to_string(), json!(p))].into_iter().collect(),
            }),
            ..Ticket::default()
        }
    }

    #[test]
    fn targets_by_plan_tier() {
        let s = sla(STORECONNECT).unwrap();
        let cal = sydney();
        let due = |plan, p: &str| s.due(&cal, &ticket(plan), &[p]).first_response;
        // Mon 23 Nov 10:00 AEDT: 1 business day (8 h) → Tue 10:00; 2 → Wed; 3 → Thu.
        assert_eq!(
            due(Some("flagship"), "urgent"),
            Some(t("2026-11-24T10:00:00+11:00"))
        );
        assert_eq!(
            due(Some("Emporium"), "urgent"),
            Some(t("2026-11-25T10:00:00+11:00"))
        );
        assert_eq!(
            due(Some("pop_up"), "urgent"),
            Some(t("2026-11-26T10:00:00+11:00"))
        );
        assert_eq!(
            due(Some("garage"), "urgent"),
            Some(t("2026-11-26T10:00:00+11:00")),
            "unknown plan → default"
        );
        assert_eq!(
            due(None, "urgent"),
            Some(t("2026-11-26T10:00:00+11:00")),
            "no plan → default"
        );
        // 1 week = 5 business days; 2 weeks = 10.
        assert_eq!(
            due(Some("flagship"), "high"),
            Some(t("2026-11-30T10:00:00+11:00"))
        );
        assert_eq!(
            due(Some("pop-up"), "high"),
            Some(t("2026-12-07T10:00:00+11:00"))
        );
        assert_eq!(due(None, "high"), None, "high has no default");
        assert_eq!(
            due(Some("flagship"), "normal"),
            None,
            "medium: no explicit SLA"
        );
    }

    #[test]
    fn tag_prefix_plans() {
        let s = sla("[sla]\nplan = { tag_prefix = \"plan_\" }\n[sla.low]\nresolution = { gold = \"1 business hour\" }\n").unwrap();
        let mut tk = ticket(None);
        tk.tags = vec!["vip".into(), "plan_gold".into()];
        assert_eq!(s.plan_of(&tk).as_deref(), Some("gold"));
        assert_eq!(
            s.due(&sydney(), &tk, &["low"]).resolution,
            Some(t("2026-11-23T11:00:00+11:00"))
        );
    }

    #[test]
    fn clock_settings() {
        let s = sla("[sla]\npause_on = [\"pending\", \"Hold\"]\nwarn_before = \"30 business minutes\"\n[sla.urgent]\nnext_response = \"2 business hours\"\nresolution = \"1 business day\"\n").unwrap();
        let r = s.rules();
        assert_eq!(r.metrics, vec![Metric::NextResponse, Metric::Resolution]);
        assert_eq!(r.pause_on, vec!["pending".to_string(), "hold".to_string()]);
        assert_eq!(
            r.warn,
            Some(Warn::Before("30 business minutes".parse().unwrap()))
        );
        let t = s.targets(&ticket(None), &["urgent"]);
        assert_eq!(t.next_response, Some("2 business hours".parse().unwrap()));
        assert_eq!(t.first_response, None);
        assert_eq!(Sla::default().rules().pause_on, vec!["pending".to_string()]);
        assert_eq!(
            sla("[sla]\npause_on = [\"solved\"]\n").unwrap_err(),
            "sla.pause_on: \"solved\" cannot pause a clock: use \"pending\" and/or \"hold\" (solved and closed stop the clocks; new and open run them)"
        );
        assert_eq!(
            sla("[sla]\nwarn_before = \"120%\"\n").unwrap_err(),
            "sla.warn_before: \"120%\": a percentage of the target is a whole number from 1% to 99%"
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            sla("[sla.critical]\nfirst_response = \"1 business day\"\n").unwrap_err(),
            "sla.critical: unknown level; expected low, normal, high, urgent (or plan, note, pause_on, warn_before)"
        );
        assert!(sla("[sla.urgent]\nfirst_respons = \"1 business day\"\n")
            .unwrap_err()
            .starts_with("sla.urgent.first_respons: unknown key"));
        assert!(sla("[sla.urgent]\nfirst_response = \"soon\"\n")
            .unwrap_err()
            .starts_with("sla.urgent.first_response: \"soon\" is not a duration"));
        assert!(
            sla("[sla.urgent]\nfirst_response = { gold = \"1 business day\" }\n")
                .unwrap_err()
                .contains("targets by plan need plan = ")
        );
    }
}
