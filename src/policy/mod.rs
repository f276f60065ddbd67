//! Policies: rules written in TOML, compiled once, asked for a [`Decision`] per ticket.
//!
//! The seam the worker uses is [`Policy::decide`]; it is pure (no I/O, no clock other than `now`).
//! Precedence: every matching rule applies in file order, tags accumulate, the most severe priority
//! wins, `stop` ends evaluation, and `only_raise` never lowers a priority already on the ticket.

pub mod condition;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::{Calendar, CalendarSpec};
use crate::sla::Sla;
use crate::ticket::{EventKind, Priority, Ticket};
use condition::Condition;

/// Every private note deskbot writes starts with this, so its own comments are recognised when they come back.
pub const NOTE_MARKER: &str = "[deskbot]";

/// What the policy wants done to a ticket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Priority to set, if any rule chose one.
    pub priority: Option<Priority>,
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
    /// First response due, per the SLA at the decided (or current) priority.
    pub first_response_due: Option<DateTime<Utc>>,
    /// Resolution due.
    pub resolution_due: Option<DateTime<Utc>>,
    /// `due_at` to set (task tickets only, when `[fields] task_due_at` asks for it).
    pub due_at: Option<DateTime<Utc>>,
}

/// A policy that failed to load. The message says where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PolicyError {
    /// File (or directory) at fault.
    pub path: PathBuf,
    /// What is wrong, with `line:col` where the parser knows it.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    policy: PolicyModel,
    #[serde(default)]
    calendars: BTreeMap<String, CalendarSpec>,
    #[serde(default)]
    sla: Option<toml::Value>,
    #[serde(default)]
    fields: Option<FieldsModel>,
    #[serde(default)]
    rule: Vec<RuleModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyModel {
    name: String,
    #[serde(default)]
    only_raise: bool,
    #[serde(default)]
    calendar: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldsModel {
    #[serde(default)]
    first_response_due: Option<FieldRef>,
    #[serde(default)]
    resolution_due: Option<FieldRef>,
    #[serde(default)]
    task_due_at: Option<DueKind>,
}

/// A custom field id: a number, a string (may be `${VAR}`), or `{ id = ..., type = "date" | "text" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FieldRef {
    Id(FieldId),
    Typed {
        id: FieldId,
        #[serde(rename = "type")]
        kind: FieldKind,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FieldId {
    Number(u64),
    Text(String),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleModel {
    name: String,
    #[serde(default)]
    on: Option<Vec<String>>,
    #[serde(default)]
    when: Option<toml::Value>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    add_tags: Vec<String>,
    #[serde(default)]
    remove_tags: Vec<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    stop: bool,
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    name: String,
    /// Event kinds it reacts to; `None` means every event.
    on: Option<Vec<EventKind>>,
    when: Condition,
    priority: Option<Priority>,
    add_tags: Vec<String>,
    remove_tags: Vec<String>,
    note: Option<String>,
    stop: bool,
}

/// A compiled policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    name: String,
    source: PathBuf,
    only_raise: bool,
    rules: Vec<Rule>,
    calendar: Option<Calendar>,
    sla: Option<Sla>,
    fields: Fields,
}

impl Policy {
    /// Loads `path`: one policy file, or a directory holding one `.toml` policy.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let err = |p: &Path, message: String| PolicyError {
            path: p.to_path_buf(),
            message,
        };
        let file = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| err(path, format!("cannot read directory: {e}")))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            match files.len() {
                0 => return Err(err(path, "no .toml policy file in this directory".into())),
                1 => files.remove(0),
                n => {
                    return Err(err(
                        path,
                        format!("holds {n} policy files; choosing between several policies by scope is not supported yet, so point DESKBOT_RULES at one file"),
                    ))
                }
            }
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| {
            err(
                &file,
                format!("cannot read policy file: {e} (set DESKBOT_RULES to a policy file or directory)"),
            )
        })?;
        Policy::parse(&text, &file)
    }

    /// Compiles policy text; `source` is used in messages.
    pub fn parse(text: &str, source: &Path) -> Result<Policy, PolicyError> {
        let err = |message: String| PolicyError {
            path: source.to_path_buf(),
            message,
        };
        let model: FileModel =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        let mut rules = Vec::new();
        for (i, r) in model.rule.into_iter().enumerate() {
            let at = |m: String| err(format!("rule #{} `{}`: {m}", i + 1, r.name));
            let when = match &r.when {
                Some(v) => Condition::compile(v).map_err(at)?,
                None => Condition::All(Vec::new()),
            };
            let priority = r
                .priority
                .as_deref()
                .map(str::parse::<Priority>)
                .transpose()
                .map_err(|e| at(e.to_string()))?;
            let on = match &r.on {
                None => Some(vec![EventKind::new(EventKind::CREATED)]),
                Some(list) if list.iter().any(|e| e == "*") => None,
                Some(list) => Some(list.iter().map(|e| EventKind::new(e)).collect()),
            };
            rules.push(Rule {
                add_tags: tags(&r.add_tags).map_err(at)?,
                remove_tags: tags(&r.remove_tags).map_err(at)?,
                name: r.name,
                on,
                when,
                priority,
                note: r.note,
                stop: r.stop,
            });
        }
        let base = source.parent().unwrap_or(Path::new("."));
        let mut calendars = BTreeMap::new();
        for (name, spec) in &model.calendars {
            let cal =
                Calendar::build(spec, base).map_err(|m| err(format!("calendars.{name}: {m}")))?;
            calendars.insert(name.clone(), cal);
        }
        let calendar = match (&model.policy.calendar, calendars.len()) {
            (Some(name), _) => Some(calendars.remove(name).ok_or_else(|| {
                let known: Vec<&str> = model.calendars.keys().map(String::as_str).collect();
                err(format!(
                    "policy.calendar = {name:?} is not defined; defined calendars: {}",
                    if known.is_empty() { "none (add a [calendars.NAME] table)".to_string() } else { known.join(", ") }
                ))
            })?),
            (None, 1) => calendars.into_values().next(),
            (None, 0) => None,
            (None, _) => {
                return Err(err(
                    "several calendars are defined: say which one the SLA uses with [policy] calendar = \"NAME\"".into(),
                ))
            }
        };
        let sla = model
            .sla
            .as_ref()
            .map(Sla::from_toml)
            .transpose()
            .map_err(err)?;
        if sla.is_some() && calendar.is_none() {
            return Err(err(
                "[sla] needs a business calendar: add [calendars.NAME] with timezone and hours"
                    .into(),
            ));
        }
        let fields = match model.fields {
            None => Fields::default(),
            Some(f) => {
                if sla.is_none() {
                    return Err(err(
                        "[fields] maps SLA due times, but the policy has no [sla]".into(),
                    ));
                }
                Fields {
                    first_response_due: f
                        .first_response_due
                        .map(|r| field(r, "first_response_due"))
                        .transpose()
                        .map_err(err)?,
                    resolution_due: f
                        .resolution_due
                        .map(|r| field(r, "resolution_due"))
                        .transpose()
                        .map_err(err)?,
                    task_due_at: f.task_due_at,
                }
            }
        };
        Ok(Policy {
            name: model.policy.name,
            source: source.to_path_buf(),
            only_raise: model.policy.only_raise,
            rules,
            calendar,
            sla,
            fields,
        })
    }

    /// The business calendar the SLA runs on, if any.
    pub fn calendar(&self) -> Option<&Calendar> {
        self.calendar.as_ref()
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Decides what should happen to this ticket. `now` is when the decision is made.
    pub fn decide(&self, ticket: &Ticket, _now: DateTime<Utc>) -> Decision {
        let mut d = Decision::default();
        let mut notes = Vec::new();
        for rule in &self.rules {
            let reacts = match (&rule.on, &ticket.event) {
                (None, _) => true,
                (Some(kinds), Some(ev)) => kinds.contains(ev),
                (Some(_), None) => false,
            };
            if !reacts || !rule.when.matches(ticket) {
                continue;
            }
            d.matched_rules.push(rule.name.clone());
            if let Some(p) = rule.priority {
                d.priority = Some(d.priority.map_or(p, |q| q.max(p)));
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
            if let Some(n) = &rule.note {
                notes.push(n.trim().to_string());
            }
            if rule.stop {
                break;
            }
        }
        if self.only_raise {
            if let (Some(want), Some(have)) = (d.priority, ticket.priority) {
                if want < have {
                    d.priority = None;
                }
            }
        }
        // A tag both added and removed is added: the rule that adds it is the more specific intent.
        d.remove_tags.retain(|t| !d.add_tags.contains(t));
        if let (Some(cal), Some(sla)) = (&self.calendar, &self.sla) {
            if let Some(level) = d.priority.or(ticket.priority) {
                self.apply_sla(cal, sla, ticket, level, &mut d, &mut notes);
            }
        }
        if !notes.is_empty() {
            d.note = Some(format!("{NOTE_MARKER} {}", notes.join("\n\n")));
        }
        d
    }

    fn apply_sla(
        &self,
        cal: &Calendar,
        sla: &Sla,
        ticket: &Ticket,
        level: Priority,
        d: &mut Decision,
        notes: &mut Vec<String>,
    ) {
        let due = sla.due(cal, ticket, level);
        d.first_response_due = due.first_response;
        d.resolution_due = due.resolution;
        let write = |t: DateTime<Utc>, kind: FieldKind| match kind {
            FieldKind::Date => serde_json::Value::String(cal.local_day(t)),
            FieldKind::Text => {
                serde_json::Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            }
        };
        for (mapping, instant) in [
            (self.fields.first_response_due, due.first_response),
            (self.fields.resolution_due, due.resolution),
        ] {
            if let (Some((id, kind)), Some(t)) = (mapping, instant) {
                d.fields.insert(id, write(t, kind));
            }
        }
        if ticket.ticket_type.as_deref() == Some("task") {
            d.due_at = match self.fields.task_due_at {
                Some(DueKind::FirstResponse) => due.first_response,
                Some(DueKind::Resolution) => due.resolution,
                None => None,
            };
        }
        if sla.note {
            let mut parts = Vec::new();
            if let Some(t) = due.first_response {
                parts.push(format!("First response due {}", cal.describe(t)));
            }
            if let Some(t) = due.resolution {
                parts.push(format!("resolution due {}", cal.describe(t)));
            }
            if !parts.is_empty() {
                let plan = due.plan.map(|p| format!(" (plan {p})")).unwrap_or_default();
                notes.push(format!("{}{plan}.", parts.join("; ")));
            }
        }
    }
}

/// The running policy, shared by the worker and the health endpoint, replaceable at run time.
#[derive(Clone)]
pub struct PolicyHandle(Arc<RwLock<Arc<Policy>>>);

impl PolicyHandle {
    /// Wraps a loaded policy.
    pub fn new(policy: Policy) -> Self {
        PolicyHandle(Arc::new(RwLock::new(Arc::new(policy))))
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        // A poisoned lock only means a writer panicked mid-swap; the Arc inside is still whole.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Resolves a `[fields]` entry to a numeric id, reading `${VAR}` from the environment.
fn field(r: FieldRef, name: &str) -> Result<(u64, FieldKind), String> {
    let (id, kind) = match r {
        FieldRef::Id(id) => (id, FieldKind::Text),
        FieldRef::Typed { id, kind } => (id, kind),
    };
    let id = match id {
        FieldId::Number(n) => n,
        FieldId::Text(s) => {
            let text = interpolate(&s).map_err(|e| format!("fields.{name}: {e}"))?;
            text.trim().parse().map_err(|_| {
                format!("fields.{name}: {text:?} is not a Zendesk field id (a whole number)")
            })?
        }
    };
    Ok((id, kind))
}

/// Replaces each `${VAR}` with the variable's value; an unset variable is an error naming it.
pub fn interpolate(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{s:?}: `${{` without a closing `}}`"))?;
        let var = &after[..end];
        let value = std::env::var(var)
            .map_err(|_| format!("environment variable {var} is not set (used in {s:?})"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Zendesk stores tags lower-case and splits on whitespace, so a tag with a space cannot exist.
fn tags(list: &[String]) -> Result<Vec<String>, String> {
    list.iter()
        .map(|t| {
            let t = t.trim();
            if t.is_empty() || t.chars().any(char::is_whitespace) {
                Err(format!(
                    "tag {t:?} is not a Zendesk tag (tags are single words; use _ or -)"
                ))
            } else {
                Ok(t.to_lowercase())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[policy]
name = "test"
only_raise = true

[[rule]]
name = "urgent-subject"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
add_tags = ["escalated"]
note = "URGENT in the subject."

[[rule]]
name = "billing"
when = { text = { has_any_word = ["invoice", "refund"] } }
priority = "low"
add_tags = ["billing"]
remove_tags = ["escalated"]

[[rule]]
name = "on-comment"
on = ["comment_added"]
when = { comment = { has_word = "escalate" } }
add_tags = ["asked_to_escalate"]
stop = true

[[rule]]
name = "after-stop"
on = ["comment_added"]
add_tags = ["never"]
"#;

    fn ticket(subject: &str, event: &str) -> Ticket {
        Ticket {
            id: 1,
            subject: subject.into(),
            event: Some(EventKind::new(event)),
            ..Ticket::default()
        }
    }

    fn policy() -> Policy {
        Policy::parse(POLICY, Path::new("p.toml")).unwrap()
    }

    #[test]
    fn all_matching_rules_apply_and_most_severe_priority_wins() {
        let d = policy().decide(&ticket("URGENT refund please", "created"), Utc::now());
        assert_eq!(d.priority, Some(Priority::Urgent));
        assert_eq!(d.add_tags, vec!["escalated", "billing"]);
        assert!(d.remove_tags.is_empty());
        assert_eq!(d.matched_rules, vec!["urgent-subject", "billing"]);
        assert_eq!(d.note.as_deref(), Some("[deskbot] URGENT in the subject."));
    }

    #[test]
    fn only_raise_keeps_a_higher_manual_priority() {
        let mut t = ticket("refund", "created");
        t.priority = Some(Priority::High);
        assert_eq!(policy().decide(&t, Utc::now()).priority, None);
    }

    #[test]
    fn rules_react_to_created_by_default_and_stop_ends_evaluation() {
        let d = policy().decide(&ticket("URGENT", "priority_changed"), Utc::now());
        assert_eq!(d, Decision::default());
        let mut t = ticket("x", "comment_added");
        t.latest_comment = Some("please escalate this".into());
        let d = policy().decide(&t, Utc::now());
        assert_eq!(d.add_tags, vec!["asked_to_escalate"]);
    }

    const SLA_POLICY: &str = r#"
[policy]
name = "farapp"
calendar = "support_hours"

[calendars.support_hours]
timezone = "America/Los_Angeles"
hours = { mon-fri = "08:00-18:00" }
holidays = ["us-federal"]

[sla]
note = true
[sla.urgent]
first_response = "3 business hours"
resolution = "24 business hours"

[fields]
first_response_due = { id = "${DESKBOT_TEST_FR_FIELD}", type = "date" }
resolution_due = 222
task_due_at = "resolution"

[[rule]]
name = "urgent"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
"#;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn sla_due_times_fill_fields_note_and_task_due_at() {
        std::env::set_var("DESKBOT_TEST_FR_FIELD", "111");
        let p = Policy::parse(SLA_POLICY, Path::new("farapp.toml")).unwrap();
        let mut t = ticket("URGENT: orders stopped", "created");
        // Wednesday before Thanksgiving, 16:00 PST.
        t.created_at = Some(at("2026-11-25T16:00:00-08:00"));
        t.ticket_type = Some("task".into());
        let d = p.decide(&t, Utc::now());
        assert_eq!(d.first_response_due, Some(at("2026-11-27T09:00:00-08:00")));
        // 24 business hours: Wed 2 h, Fri 10 h, Mon 10 h, Tue 2 h → Tue 1 Dec 10:00.
        assert_eq!(d.resolution_due, Some(at("2026-12-01T10:00:00-08:00")));
        assert_eq!(d.fields.get(&111), Some(&serde_json::json!("2026-11-27")));
        assert_eq!(
            d.fields.get(&222),
            Some(&serde_json::json!("2026-12-01T18:00:00Z"))
        );
        assert_eq!(d.due_at, d.resolution_due);
        assert_eq!(
            d.note.as_deref(),
            Some("[deskbot] First response due Fri 27 Nov, 09:00 PST; resolution due Tue 1 Dec, 10:00 PST.")
        );
        // A level without targets gets no due dates.
        let calm = p.decide(&ticket("hello", "created"), Utc::now());
        assert_eq!((calm.first_response_due, calm.note), (None, None));
    }

    #[test]
    fn sla_configuration_errors() {
        let e = |src: &str| Policy::parse(src, Path::new("p.toml")).unwrap_err().message;
        assert_eq!(
            e("[policy]\nname = \"n\"\n[sla.urgent]\nfirst_response = \"1 business hour\"\n"),
            "[sla] needs a business calendar: add [calendars.NAME] with timezone and hours"
        );
        assert_eq!(
            e("[policy]\nname = \"n\"\ncalendar = \"hours\"\n"),
            "policy.calendar = \"hours\" is not defined; defined calendars: none (add a [calendars.NAME] table)"
        );
        assert_eq!(
            e(&SLA_POLICY.replace("DESKBOT_TEST_FR_FIELD", "DESKBOT_TEST_UNSET_FIELD")),
            "fields.first_response_due: environment variable DESKBOT_TEST_UNSET_FIELD is not set (used in \"${DESKBOT_TEST_UNSET_FIELD}\")"
        );
        assert!(
            e(&SLA_POLICY.replace("08:00-18:00", "18:00-08:00")).starts_with(
                "calendars.support_hours: hours.mon-fri: \"18:00-08:00\" crosses midnight"
            )
        );
    }

    #[test]
    fn errors_say_where() {
        let e = Policy::parse("[policy]\nname = 1\n", Path::new("x.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.toml: TOML parse error at line 2, column 8"),
            "{e}"
        );
        let e = Policy::parse(
            "[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\npriority = \"critical\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "rule #1 `r`: unknown priority \"critical\": expected low, normal, high or urgent"
        );
        let e = Policy::parse(
            "[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\nadd_tags = [\"two words\"]\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(e.message.contains("not a Zendesk tag"), "{e}");
    }
}
