//! Policies: rules written in TOML, compiled once, asked for a [`Decision`] per ticket.
//!
//! The seam the worker uses is [`PolicySet::decide`] (and [`Policy::decide`] for one policy); it is
//! pure: no I/O, no clock other than `now`. Precedence: every matching rule applies in file order,
//! tags accumulate, the most severe priority wins, fields and group take the last rule's value,
//! `stop` ends evaluation, and `only_raise` never lowers a priority already on the ticket.
//! The language is documented in docs/rules.md and, for editors, by `deskbot schema`.

pub mod cases;
pub mod clocks;
pub mod compile;
pub mod condition;
pub mod diagnostic;
pub mod eval;
pub mod schema;
pub mod sequence;
pub mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::sla::Sla;
use crate::ticket::{EventKind, Priority, Ticket};
use cases::TestCase;
use condition::Condition;
use diagnostic::{at_offset, locate, Diagnostic, Located, Severity};
use text::Phrases;

/// Every private note deskbot writes starts with this, so its own comments are recognised when they come back.
pub const NOTE_MARKER: &str = "[deskbot]";

/// Ticket events a rule can react to (`on = [...]`), by their short names.
pub const KNOWN_EVENTS: &[&str] = &[
    "created",
    "updated",
    "comment_added",
    "priority_changed",
    "status_changed",
    "tags_changed",
    "custom_field_changed",
    "subject_changed",
    "description_changed",
    "type_changed",
    "group_assignment_changed",
    "agent_assignment_changed",
    "brand_changed",
    "form_changed",
    "organization_changed",
    "requester_changed",
    "submitter_changed",
    "email_ccs_changed",
    "followers_changed",
    "custom_status_changed",
    "comment_made_private",
    "comment_redacted",
    "attachment_linked_to_comment",
    "attachment_redacted_from_comment",
    "csat_received",
    "csat_requested",
    "external_id_changed",
    "next_sla_breach_changed",
    "ola_policy_changed",
    "problem_link_changed",
    "schedule_changed",
    "sla_policy_changed",
    "task_due_at_changed",
    "undeleted",
    "sla.at_risk",
    "sla.breached",
];

/// What the policy wants done to a ticket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Priority to set, if any rule chose one.
    pub priority: Option<Priority>,
    /// The author-named level behind the priority (`critical`), when the policy defines levels.
    pub level: Option<String>,
    /// Tags to add.
    pub add_tags: Vec<String>,
    /// Tags to remove.
    pub remove_tags: Vec<String>,
    /// Custom ticket fields to set: field id → value.
    pub fields: BTreeMap<u64, serde_json::Value>,
    /// Group to assign.
    pub group_id: Option<u64>,
    /// Private note to add along with a change.
    pub note: Option<String>,
    /// Names of the rules that matched, in order.
    pub matched_rules: Vec<String>,
    /// First response due, per the SLA at the decided (or current) level.
    pub first_response_due: Option<DateTime<Utc>>,
    /// Resolution due.
    pub resolution_due: Option<DateTime<Utc>>,
    /// `due_at` to set (task tickets only, when `[fields] task_due_at` asks for it).
    pub due_at: Option<DateTime<Utc>>,
    /// Messages for the team's chat, one per matching rule with `notify`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    /// No rule gave the ticket a level (the policy's `[unclassified]` applied, if it has one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unclassified: bool,
}

/// A policy (or set of policies) that failed to load: every problem at `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The problems, errors first.
    pub diagnostics: Vec<Diagnostic>,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.diagnostics.iter().map(|d| d.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl PolicyError {
    fn one(file: &Path, message: String) -> Self {
        PolicyError {
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: file.to_path_buf(),
                line: 1,
                column: 1,
                message,
                source_line: String::new(),
            }],
        }
    }
}

/// How a due instant is written into a Zendesk field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// A Zendesk date field: `YYYY-MM-DD` in the calendar's zone.
    Date,
    /// A text field: RFC 3339 in UTC.
    Text,
}

/// Which due instant sets a task ticket's `due_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DueKind {
    /// The first-response due time.
    FirstResponse,
    /// The resolution due time.
    Resolution,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Fields {
    first_response_due: Option<(u64, FieldKind)>,
    resolution_due: Option<(u64, FieldKind)>,
    task_due_at: Option<DueKind>,
}

/// An author-named level (`critical`) mapped onto a Zendesk priority, with an optional tag.
#[derive(Debug, Clone, PartialEq)]
struct Level {
    name: String,
    priority: Priority,
    tag: Option<String>,
}

/// The priority a rule sets: a Zendesk priority, possibly through a named level.
#[derive(Debug, Clone, PartialEq)]
struct LevelRef {
    level: Option<String>,
    priority: Priority,
}

/// A placeholder in a note template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    TicketId,
    Subject,
    RequesterEmail,
    Organization,
    Plan,
    Priority,
    Level,
    FirstResponseDue,
    ResolutionDue,
    Rule,
    Metric,
    Target,
    Due,
    MissedBy,
}

impl Var {
    const ALL: &'static [(&'static str, Var)] = &[
        ("ticket.id", Var::TicketId),
        ("ticket.subject", Var::Subject),
        ("ticket.requester_email", Var::RequesterEmail),
        ("ticket.organization", Var::Organization),
        ("plan", Var::Plan),
        ("priority", Var::Priority),
        ("level", Var::Level),
        ("first_response_due", Var::FirstResponseDue),
        ("resolution_due", Var::ResolutionDue),
        ("rule", Var::Rule),
        ("sla.metric", Var::Metric),
        ("sla.target", Var::Target),
        ("sla.due", Var::Due),
        ("sla.missed_by", Var::MissedBy),
    ];
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// A note with `{{placeholders}}`, checked at load time.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Piece>);

/// One compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    /// Key path of the rule in its file (for warnings).
    line_path: Vec<String>,
    name: String,
    /// Event kinds it reacts to; `None` means every event.
    on: Option<Vec<EventKind>>,
    when: Condition,
    /// At least one of these phrases must occur for `when` to hold (`None`: no such shortcut).
    gate: Option<Vec<usize>>,
    priority: Option<LevelRef>,
    /// Levels to raise the priority by (on top of the decided or current priority).
    raise: u8,
    add_tags: Vec<String>,
    remove_tags: Vec<String>,
    set_fields: Vec<(u64, serde_json::Value)>,
    group: Option<u64>,
    note: Option<Template>,
    /// A message for the team's chat (`DESKBOT_NOTIFY_URL`).
    notify: Option<Template>,
    sla: Option<String>,
    stop: bool,
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    name: String,
    source: PathBuf,
    only_raise: bool,
    /// `[policy] plan`: where plan tiers are read from.
    plan: Option<crate::sla::PlanSource>,
    scope: Option<Condition>,
    phrases: Phrases,
    rules: Vec<Rule>,
    levels: Vec<Level>,
    calendar: Option<Calendar>,
    sla: Option<Sla>,
    /// How the SLA clocks run, derived from `sla` once at load (`None`: no clocks).
    clock_rules: Option<crate::sla::clock::Rules>,
    slas: BTreeMap<String, Sla>,
    fields: Fields,
    tests: Vec<TestCase>,
    /// `[unclassified]`: applied when no rule gave the ticket a level.
    unclassified: Option<Rule>,
    /// Vocabularies no rule refers to (a warning).
    unused_vocabularies: Vec<String>,
}

/// A loaded file: the policy and the warnings about it.
pub struct Loaded {
    /// The policy.
    pub policy: Policy,
    /// Warnings (the policy still loads).
    pub warnings: Vec<Diagnostic>,
}

impl Policy {
    /// Compiles policy text; `source` names the file in messages and anchors `.ics` paths.
    pub fn parse(text: &str, source: &Path) -> Result<Loaded, PolicyError> {
        let to_diag = |problem: &Located, severity| match problem
            .path
            .first()
            .and_then(|p| p.strip_prefix('@'))
        {
            Some(offset) => at_offset(
                severity,
                source,
                text,
                offset.parse().unwrap_or(0),
                problem.message.clone(),
            ),
            None => locate(severity, source, text, problem),
        };
        let compiled = compile::compile(text, source);
        let mut warnings: Vec<Diagnostic> = compiled
            .policy
            .iter()
            .flat_map(compile::lint)
            .map(|w| to_diag(&w, Severity::Warning))
            .collect();
        match compiled.policy {
            Some(policy) if compiled.errors.is_empty() => {
                warnings.sort_by_key(|d| (d.line, d.column));
                Ok(Loaded { policy, warnings })
            }
            _ => {
                // Errors and warnings together, in file order as an editor lists them; a problem
                // found twice is shown once.
                let mut diagnostics: Vec<Diagnostic> = compiled
                    .errors
                    .iter()
                    .map(|e| to_diag(e, Severity::Error))
                    .chain(warnings)
                    .collect();
                diagnostics.sort_by_key(|d| (d.line, d.column));
                diagnostics.dedup();
                Err(PolicyError { diagnostics })
            }
        }
    }

    /// Reads and compiles one file.
    pub fn load_file(path: &Path) -> Result<Loaded, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyError::one(path, format!("cannot read policy file: {e} (set DESKBOT_RULES to a policy file or directory)"))
        })?;
        Policy::parse(&text, path)
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The rules' names, in file order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The business calendar the SLA runs on, if any.
    pub fn calendar(&self) -> Option<&Calendar> {
        self.calendar.as_ref()
    }

    /// Every ticket field id the policy writes, with the kind a due-date mapping needs (`None`:
    /// any field type), and where in the policy it is named. For `deskbot doctor`.
    pub fn field_ids(&self) -> Vec<(u64, Option<FieldKind>, String)> {
        let mut out = Vec::new();
        for (name, mapping) in [
            ("fields.first_response_due", self.fields.first_response_due),
            ("fields.resolution_due", self.fields.resolution_due),
        ] {
            if let Some((id, kind)) = mapping {
                out.push((id, Some(kind), name.to_string()));
            }
        }
        for r in &self.rules {
            for (id, _) in &r.set_fields {
                out.push((*id, None, format!("rule {:?} set_fields", r.name)));
            }
        }
        out
    }

    /// Where the policy reads plan tiers from: `[policy] plan`, else `[sla] plan`.
    pub fn plan_source(&self) -> Option<&crate::sla::PlanSource> {
        self.plan
            .as_ref()
            .or_else(|| self.sla.as_ref().and_then(|s| s.plan_source()))
    }

    /// Organization field keys the policy reads plan tiers from.
    pub fn plan_fields(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .plan
            .iter()
            .chain(
                self.sla
                    .iter()
                    .chain(self.slas.values())
                    .filter_map(|s| s.plan_source()),
            )
            .filter_map(|s| match s {
                crate::sla::PlanSource::OrganizationField(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The `[[test]]` cases of the file.
    pub fn tests(&self) -> &[TestCase] {
        &self.tests
    }

    /// True when this policy has a scope and the ticket is in it; `None` when unscoped.
    pub fn in_scope(&self, ticket: &Ticket) -> Option<bool> {
        let scope = self.scope.as_ref()?;
        let ev = condition::Eval::new(ticket, &self.phrases, self.calendar.as_ref());
        Some(ev.check(scope, &mut None))
    }

    /// Decides what should happen to this ticket. `now` is when the decision is made.
    pub fn decide(&self, ticket: &Ticket, now: DateTime<Utc>) -> Decision {
        self.evaluate(ticket, now, false).decision
    }
}

/// All policies of `DESKBOT_RULES`: a ticket goes to the first scoped policy whose scope matches,
/// else to the one unscoped policy, if any.
#[derive(Debug, Clone)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

impl PolicySet {
    /// Loads a policy file, or every `.toml` file of a directory (in name order).
    pub fn load(path: &Path) -> Result<(PolicySet, Vec<Diagnostic>), PolicyError> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| PolicyError::one(path, format!("cannot read directory: {e}")))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(PolicyError::one(
                    path,
                    "no .toml policy file in this directory".into(),
                ));
            }
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut policies = Vec::new();
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        for f in &files {
            match Policy::load_file(f) {
                Ok(l) => {
                    policies.push(l.policy);
                    warnings.extend(l.warnings);
                }
                Err(e) => errors.extend(e.diagnostics),
            }
        }
        let unscoped: Vec<&Policy> = policies.iter().filter(|p| p.scope.is_none()).collect();
        if unscoped.len() > 1 {
            let names: Vec<String> = unscoped
                .iter()
                .map(|p| p.source.display().to_string())
                .collect();
            errors.push(Diagnostic {
                severity: Severity::Error,
                file: unscoped[1].source.clone(),
                line: 1,
                column: 1,
                message: format!(
                    "{} policies have no [policy] scope ({}): a ticket could go to either; give all but one a scope = {{ ... }}",
                    unscoped.len(),
                    names.join(", ")
                ),
                source_line: String::new(),
            });
        }
        if !errors.is_empty() {
            return Err(PolicyError {
                diagnostics: errors,
            });
        }
        Ok((PolicySet { policies }, warnings))
    }

    /// The policies, in the order they are tried.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policy a ticket goes to. A scope only chooses between policies: a set of one policy
    /// (`DESKBOT_RULES` naming one file) gives it every ticket.
    pub fn select(&self, ticket: &Ticket) -> Option<&Policy> {
        if let [only] = self.policies.as_slice() {
            return Some(only);
        }
        self.policies
            .iter()
            .find(|p| p.in_scope(ticket) == Some(true))
            .or_else(|| self.policies.iter().find(|p| p.scope.is_none()))
    }

    /// The decision for a ticket (empty when no policy's scope matches).
    pub fn decide(&self, ticket: &Ticket, now: DateTime<Utc>) -> Decision {
        self.select(ticket)
            .map(|p| p.decide(ticket, now))
            .unwrap_or_default()
    }

    /// True when some policy runs SLA clocks.
    pub fn runs_clocks(&self) -> bool {
        self.policies.iter().any(|p| p.clock_rules.is_some())
    }

    /// True when some rule of some policy reacts to `kind`: only then does an event of that kind
    /// need the ticket read from Zendesk to be decided.
    pub fn reacts_to(&self, kind: &EventKind) -> bool {
        self.policies.iter().any(|p| {
            p.rules
                .iter()
                .any(|r| r.on.as_ref().is_none_or(|on| on.contains(kind)))
        })
    }

    /// Names of the policies, for logs and /healthz.
    pub fn names(&self) -> Vec<String> {
        self.policies.iter().map(|p| p.name.clone()).collect()
    }

    /// Total rules.
    pub fn rule_count(&self) -> usize {
        self.policies.iter().map(Policy::rule_count).sum()
    }
}

struct HandleState {
    set: Arc<PolicySet>,
    last_error: Option<String>,
}

/// The running policies, shared by the worker and /healthz, replaced by hot reload.
#[derive(Clone)]
pub struct PolicyHandle(Arc<RwLock<HandleState>>);

impl PolicyHandle {
    /// Wraps loaded policies.
    pub fn new(set: PolicySet) -> Self {
        PolicyHandle(Arc::new(RwLock::new(HandleState {
            set: Arc::new(set),
            last_error: None,
        })))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HandleState> {
        // A poisoned lock only means a writer panicked mid-swap; the state inside is still whole.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The policies in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.read().set.clone()
    }

    /// Why the last reload failed, if it did (the previous policies stay in force).
    pub fn last_error(&self) -> Option<String> {
        self.read().last_error.clone()
    }

    /// Installs newly loaded policies, or records why loading failed.
    pub fn reloaded(&self, result: Result<PolicySet, String>) {
        let mut w = self.0.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(set) => {
                w.set = Arc::new(set);
                w.last_error = None;
            }
            Err(e) => w.last_error = Some(e),
        }
    }
}

/// Replaces each `${VAR}` with the variable's value; an unset variable is an error naming it.
/// `${VAR:-default}` uses `default` (possibly empty) when the variable is unset.
pub fn interpolate(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{s:?}: `${{` without a closing `}}`"))?;
        let (var, default) = match after[..end].split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (&after[..end], None),
        };
        let value = match (std::env::var(var), default) {
            (Ok(v), _) => v,
            (Err(_), Some(d)) => d.to_string(),
            (Err(_), None) => {
                return Err(format!(
                    "environment variable {var} is not set (used in {s:?}); set it, or write ${{{var}:-default}}"
                ))
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
