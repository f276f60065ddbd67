//! `[[test]]` blocks: a ticket in, the expected decision out, run by `deskbot test`.
//!
//! ```toml
//! [[test]]
//! name = "URGENT in the subject"
//! ticket = { subject = "URGENT: orders stopped", created_at = "2026-11-23T09:00:00-08:00" }
//! expect = { priority = "urgent", tags = ["escalated"], first_response_due = "2026-11-23T12:00:00-08:00" }
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use toml::{Table, Value};

use super::condition::unknown;
use super::diagnostic::Located;
use super::sequence::Scenario;
use super::Policy;
use crate::ticket::{parse_time, EventKind, Organization, Priority, Ticket};

const TEST_KEYS: &[&str] = &["name", "ticket", "expect", "events", "sla"];
const TICKET_KEYS: &[&str] = &[
    "id",
    "subject",
    "description",
    "comment",
    "tags",
    "priority",
    "status",
    "type",
    "channel",
    "recipient",
    "requester_email",
    "organization",
    "organization_fields",
    "custom_fields",
    "brand_id",
    "group_id",
    "form_id",
    "event",
    "created_at",
    "comment_by",
];
const EXPECT_KEYS: &[&str] = &[
    "priority",
    "level",
    "tags",
    "absent_tags",
    "first_response_due",
    "resolution_due",
    "fields",
    "rules",
    "note_contains",
    "group_id",
];

/// One test case.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// Its name (or "test #N").
    pub name: String,
    /// Key path in the file, for the position in reports.
    pub path: Vec<String>,
    ticket: Ticket,
    expect: Expect,
    /// An SLA event sequence with its expectations.
    scenario: Option<Scenario>,
}

#[derive(Debug, Clone, Default)]
struct Expect {
    /// `Some(None)`: expect no priority to be set ("none").
    priority: Option<Option<Priority>>,
    level: Option<Option<String>>,
    tags: Vec<String>,
    absent_tags: Vec<String>,
    first_response_due: Option<Option<DateTime<Utc>>>,
    resolution_due: Option<Option<DateTime<Utc>>>,
    fields: BTreeMap<u64, serde_json::Value>,
    rules: Option<Vec<String>>,
    note_contains: Vec<String>,
    group_id: Option<u64>,
}

fn err(path: &[String], key: &str, message: impl Into<String>) -> Located {
    let mut p = path.to_vec();
    if !key.is_empty() {
        p.push(key.to_string());
    }
    Located::new(&p, message)
}

fn keys(t: &Table, known: &[&str], path: &[String], what: &str) -> Result<(), Located> {
    match t.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(err(path, k, unknown(what, k, known))),
        None => Ok(()),
    }
}

fn text(t: &Table, key: &str, path: &[String]) -> Result<Option<String>, Located> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Integer(n)) => Ok(Some(n.to_string())),
        Some(Value::Datetime(d)) => Ok(Some(d.to_string())),
        Some(_) => Err(err(path, key, "expected a string")),
    }
}

fn list(t: &Table, key: &str, path: &[String]) -> Result<Vec<String>, Located> {
    match t.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err(path, key, "expected a list of strings"))
            })
            .collect(),
        Some(_) => Err(err(path, key, "expected a list of strings")),
    }
}

fn id(t: &Table, key: &str, path: &[String]) -> Result<Option<u64>, Located> {
    text(t, key, path)?
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| err(path, key, "expected a whole number"))
        })
        .transpose()
}

fn time(t: &Table, key: &str, path: &[String]) -> Result<Option<Option<DateTime<Utc>>>, Located> {
    match text(t, key, path)? {
        None => Ok(None),
        Some(s) if s == "none" => Ok(Some(None)),
        Some(s) => parse_time(&s).map(|t| Some(Some(t))).ok_or_else(|| {
            err(
                path,
                key,
                format!(
                    "{s:?} is not an RFC 3339 time like 2026-11-23T12:00:00-08:00 (or \"none\")"
                ),
            )
        }),
    }
}

fn json_table(
    t: &Table,
    key: &str,
    path: &[String],
) -> Result<BTreeMap<String, serde_json::Value>, Located> {
    match t.get(key) {
        None => Ok(BTreeMap::new()),
        Some(Value::Table(m)) => m
            .iter()
            .map(|(k, v)| {
                serde_json::to_value(v)
                    .map(|j| (k.clone(), j))
                    .map_err(|e| err(path, key, e.to_string()))
            })
            .collect(),
        Some(_) => Err(err(path, key, "expected a table")),
    }
}

fn field_ids(
    m: BTreeMap<String, serde_json::Value>,
    key: &str,
    path: &[String],
) -> Result<BTreeMap<u64, serde_json::Value>, Located> {
    m.into_iter()
        .map(|(k, v)| {
            k.trim()
                .parse()
                .map(|id| (id, v))
                .map_err(|_| err(path, key, format!("field {k:?} is not a field id")))
        })
        .collect()
}

impl TestCase {
    /// Reads one `[[test]]` table.
    pub fn parse(v: &Value, path: &[String], levels: &[String]) -> Result<TestCase, Located> {
        let t = v
            .as_table()
            .ok_or_else(|| err(path, "", "a [[test]] is a table"))?;
        keys(t, TEST_KEYS, path, "key of a test")?;
        let name = text(t, "name", path)?.unwrap_or_else(|| {
            format!(
                "test #{}",
                path.last()
                    .and_then(|i| i.parse::<usize>().ok())
                    .map_or(0, |i| i + 1)
            )
        });
        let tp: Vec<String> = path.iter().cloned().chain(["ticket".to_string()]).collect();
        let tk = t
            .get("ticket")
            .and_then(Value::as_table)
            .ok_or_else(|| err(path, "", "a test needs ticket = { subject = \"...\", ... }"))?;
        keys(tk, TICKET_KEYS, &tp, "ticket field")?;
        let org_fields = json_table(tk, "organization_fields", &tp)?;
        let org_name = text(tk, "organization", &tp)?;
        let ticket = Ticket {
            id: id(tk, "id", &tp)?.unwrap_or(1),
            event: Some(EventKind::new(
                &text(tk, "event", &tp)?.unwrap_or_else(|| EventKind::CREATED.into()),
            )),
            subject: text(tk, "subject", &tp)?.unwrap_or_default(),
            description: text(tk, "description", &tp)?.unwrap_or_default(),
            latest_comment: text(tk, "comment", &tp)?,
            comment_by_staff: match text(tk, "comment_by", &tp)?.as_deref() {
                None => None,
                Some("agent") => Some(true),
                Some("end-user") => Some(false),
                Some(other) => {
                    return Err(err(
                        &tp,
                        "comment_by",
                        format!("{other:?}: expected \"agent\" or \"end-user\""),
                    ))
                }
            },
            tags: list(tk, "tags", &tp)?,
            priority: text(tk, "priority", &tp)?
                .map(|p| {
                    p.parse().map_err(|e: crate::ticket::UnknownPriority| {
                        err(&tp, "priority", e.to_string())
                    })
                })
                .transpose()?,
            status: text(tk, "status", &tp)?,
            ticket_type: text(tk, "type", &tp)?,
            channel: text(tk, "channel", &tp)?,
            recipient: text(tk, "recipient", &tp)?,
            requester_email: text(tk, "requester_email", &tp)?,
            organization: (org_name.is_some() || !org_fields.is_empty()).then(|| Organization {
                id: 1,
                name: org_name,
                fields: org_fields.into_iter().collect(),
            }),
            custom_fields: field_ids(json_table(tk, "custom_fields", &tp)?, "custom_fields", &tp)?,
            brand_id: id(tk, "brand_id", &tp)?,
            group_id: id(tk, "group_id", &tp)?,
            form_id: id(tk, "form_id", &tp)?,
            created_at: time(tk, "created_at", &tp)?.flatten(),
            ..Ticket::default()
        };
        let ep: Vec<String> = path.iter().cloned().chain(["expect".to_string()]).collect();
        let scenario = Scenario::parse(t, path)?;
        let empty = Table::new();
        let ex = match t.get("expect") {
            Some(v) => v.as_table().ok_or_else(|| err(path, "expect", "expected a table"))?,
            None if scenario.is_some() => &empty,
            None => {
                return Err(err(
                    path,
                    "",
                    "a test needs expect = { priority = \"...\", ... } (or an SLA scenario: events = [...], sla = { ... })",
                ))
            }
        };
        keys(ex, EXPECT_KEYS, &ep, "expectation")?;
        let expect = Expect {
            priority: text(ex, "priority", &ep)?
                .map(|p| match p.as_str() {
                    "none" => Ok(None),
                    _ => p
                        .parse()
                        .map(Some)
                        .map_err(|e: crate::ticket::UnknownPriority| {
                            err(&ep, "priority", e.to_string())
                        }),
                })
                .transpose()?,
            level: text(ex, "level", &ep)?
                .map(|l| match l.as_str() {
                    "none" => Ok(None),
                    _ if levels.contains(&l) => Ok(Some(l)),
                    _ => Err(err(
                        &ep,
                        "level",
                        format!(
                            "unknown level {l:?}; expected one of: {}",
                            levels.join(", ")
                        ),
                    )),
                })
                .transpose()?,
            tags: list(ex, "tags", &ep)?,
            absent_tags: list(ex, "absent_tags", &ep)?,
            first_response_due: time(ex, "first_response_due", &ep)?,
            resolution_due: time(ex, "resolution_due", &ep)?,
            fields: field_ids(json_table(ex, "fields", &ep)?, "fields", &ep)?,
            rules: ex
                .get("rules")
                .map(|_| list(ex, "rules", &ep))
                .transpose()?,
            note_contains: match ex.get("note_contains") {
                Some(Value::String(s)) => vec![s.clone()],
                _ => list(ex, "note_contains", &ep)?,
            },
            group_id: id(ex, "group_id", &ep)?,
        };
        Ok(TestCase {
            name,
            path: path.to_vec(),
            ticket,
            expect,
            scenario,
        })
    }

    /// Runs the case; `Err` lists each difference between expected and actual.
    pub fn run(&self, policy: &Policy) -> Result<(), Vec<String>> {
        let d = policy.decide(&self.ticket, Utc::now());
        let e = &self.expect;
        let mut diffs = Vec::new();
        let show = |p: Option<Priority>| p.map_or("none".to_string(), |p| p.to_string());
        if let Some(want) = e.priority {
            if want != d.priority {
                diffs.push(format!(
                    "priority: expected {}, got {}",
                    show(want),
                    show(d.priority)
                ));
            }
        }
        if let Some(want) = &e.level {
            if *want != d.level {
                let s = |l: &Option<String>| l.clone().unwrap_or_else(|| "none".into());
                diffs.push(format!("level: expected {}, got {}", s(want), s(&d.level)));
            }
        }
        let mut after: Vec<String> = self
            .ticket
            .tags
            .iter()
            .filter(|t| !d.remove_tags.contains(t))
            .cloned()
            .collect();
        after.extend(
            d.add_tags
                .iter()
                .filter(|t| !self.ticket.tags.contains(t))
                .cloned(),
        );
        let missing: Vec<&String> = e.tags.iter().filter(|t| !after.contains(t)).collect();
        if !missing.is_empty() {
            diffs.push(format!(
                "tags: missing {:?}; the ticket would have {after:?}",
                missing
            ));
        }
        let present: Vec<&String> = e.absent_tags.iter().filter(|t| after.contains(t)).collect();
        if !present.is_empty() {
            diffs.push(format!(
                "tags: {:?} should be absent; the ticket would have {after:?}",
                present
            ));
        }
        let cal = policy.calendar();
        let at = |t: Option<DateTime<Utc>>| match (t, cal) {
            (Some(t), Some(c)) => format!(
                "{} ({})",
                t.with_timezone(&c.timezone()).to_rfc3339(),
                c.describe(t)
            ),
            (Some(t), None) => t.to_rfc3339(),
            (None, _) => "none".into(),
        };
        for (name, want, got) in [
            (
                "first_response_due",
                e.first_response_due,
                d.first_response_due,
            ),
            ("resolution_due", e.resolution_due, d.resolution_due),
        ] {
            if let Some(want) = want {
                if want != got {
                    diffs.push(format!("{name}: expected {}, got {}", at(want), at(got)));
                }
            }
        }
        for (id, want) in &e.fields {
            if d.fields.get(id) != Some(want) {
                diffs.push(format!(
                    "fields.{id}: expected {want}, got {}",
                    d.fields
                        .get(id)
                        .map_or("nothing".to_string(), |v| v.to_string())
                ));
            }
        }
        if let Some(want) = &e.rules {
            if *want != d.matched_rules {
                diffs.push(format!(
                    "rules: expected {want:?}, matched {:?}",
                    d.matched_rules
                ));
            }
        }
        for s in &e.note_contains {
            if !d.note.as_deref().unwrap_or("").contains(s.as_str()) {
                diffs.push(format!(
                    "note: expected it to contain {s:?}, got {:?}",
                    d.note.as_deref().unwrap_or("")
                ));
            }
        }
        if let Some(g) = e.group_id {
            if d.group_id != Some(g) {
                diffs.push(format!("group_id: expected {g}, got {:?}", d.group_id));
            }
        }
        if let Some(sc) = &self.scenario {
            diffs.extend(sc.run(policy, &self.ticket, &d));
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(diffs)
        }
    }
}
