//! Conditions: `all`, `any`, `not`, and `field = { operator = value }` tests, nested freely.
//!
//! A table with several keys means all of them. Word operators (`has_word`, `has_any_word`,
//! `has_all_words`, `near`) register their phrases in the policy's one automaton at compile time;
//! evaluation normalises each ticket text once and looks phrase hits up, so deciding costs one pass
//! over the text whatever the number of rules. Errors carry the key path of the offending value so
//! the loader can point at its line and column.

use std::cell::OnceCell;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use regex::Regex;
use toml::Value;

use super::text::{near, Hits, Phrases, Words};
use crate::calendar::Calendar;
use crate::ticket::{parse_time, Ticket};

/// A compile error at a key path below the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CondError {
    /// Keys (and array indices) from the condition down to the offending value.
    pub path: Vec<String>,
    /// What is wrong.
    pub message: String,
}

impl CondError {
    fn new(message: impl Into<String>) -> Self {
        CondError {
            path: Vec::new(),
            message: message.into(),
        }
    }

    fn at(mut self, key: impl Into<String>) -> Self {
        self.path.insert(0, key.into());
        self
    }
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Every condition holds (true when empty).
    All(Vec<Condition>),
    /// At least one holds (false when empty).
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
    /// One field tested with one operator.
    Test(Field, Op),
}

impl Condition {
    /// Phrases of which at least one must occur in the ticket's texts for this condition to hold,
    /// or `None` when it can hold without any. Deciding skips a rule whose phrases are all absent,
    /// so the cost of a decision follows the phrases the ticket contains, not the number of rules.
    pub fn necessary_phrases(&self) -> Option<Vec<usize>> {
        match self {
            Condition::Test(Field::Text(_) | Field::AnyText, op) => match op {
                Op::HasWord(t) => Some(t.ids.clone()),
                Op::HasAnyWord(ts) => Some(ts.iter().flat_map(|t| t.ids.iter().copied()).collect()),
                Op::HasAllWords(ts) => ts.first().map(|t| t.ids.clone()),
                Op::Near { a, .. } => Some(a.ids.clone()),
                _ => None,
            },
            Condition::Test(..) | Condition::Not(_) => None,
            Condition::All(cs) => cs
                .iter()
                .filter_map(Condition::necessary_phrases)
                .min_by_key(Vec::len),
            Condition::Any(cs) => {
                let mut out = Vec::new();
                for c in cs {
                    out.extend(c.necessary_phrases()?);
                }
                out.sort_unstable();
                out.dedup();
                Some(out)
            }
        }
    }
}

/// The three texts a ticket has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Subject line.
    Subject = 0,
    /// First comment.
    Description = 1,
    /// The comment of a comment_added event.
    Comment = 2,
}

/// A ticket field a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// One text part.
    Text(Part),
    /// Subject, description and comment: true if any part passes.
    AnyText,
    /// Tags (true if any tag passes).
    Tags,
    /// Zendesk priority.
    Priority,
    /// Status.
    Status,
    /// Ticket type.
    Type,
    /// `via.channel`.
    Channel,
    /// Support address the ticket was sent to.
    Recipient,
    /// Requester e-mail.
    RequesterEmail,
    /// Domain of the requester's e-mail.
    RequesterDomain,
    /// Organization name.
    Organization,
    /// An organization custom field, by key.
    OrganizationField(String),
    /// A ticket custom field, by id.
    CustomField(u64),
    /// Brand id.
    BrandId,
    /// Group id.
    GroupId,
    /// Ticket form id.
    FormId,
    /// What happened (created, comment_added, ...).
    Event,
    /// Who wrote the event's comment: `agent` or `end-user`.
    CommentBy,
    /// `inside` or `outside`: whether the ticket was created during the calendar's hours.
    BusinessHours,
    /// Creation time.
    CreatedAt,
    /// The SLA metric of an `sla.at_risk` / `sla.breached` event.
    SlaMetric,
}

const SIMPLE_FIELDS: &[(&str, Field)] = &[
    ("subject", Field::Text(Part::Subject)),
    ("description", Field::Text(Part::Description)),
    ("comment", Field::Text(Part::Comment)),
    ("text", Field::AnyText),
    ("tags", Field::Tags),
    ("priority", Field::Priority),
    ("status", Field::Status),
    ("type", Field::Type),
    ("channel", Field::Channel),
    ("recipient", Field::Recipient),
    ("requester_email", Field::RequesterEmail),
    ("requester_domain", Field::RequesterDomain),
    ("organization", Field::Organization),
    ("brand_id", Field::BrandId),
    ("group_id", Field::GroupId),
    ("form_id", Field::FormId),
    ("event", Field::Event),
    ("comment_by", Field::CommentBy),
    ("business_hours", Field::BusinessHours),
    ("created_at", Field::CreatedAt),
    ("sla_metric", Field::SlaMetric),
];

/// A bad pattern as rustc shows a bad token: what is wrong, then the pattern with a caret under
/// the character where it goes wrong (the file position follows, from the diagnostic).
fn regex_error(pattern: &str, e: &regex::Error) -> String {
    let parsed = regex_syntax::ast::parse::Parser::new().parse(pattern);
    let Err(ast) = parsed else {
        // Parses, yet `regex` refuses it (too big once compiled, or a Unicode class it lacks).
        return format!("invalid regex: {}", e.to_string().replace('\n', " "));
    };
    let column = pattern[..ast.span().start.offset.min(pattern.len())]
        .chars()
        .count();
    format!(
        "invalid regex: {}\n      pattern: {pattern}\n               {}^",
        ast.kind(),
        " ".repeat(column)
    )
}

/// Why one test of a rule held, for `explain`: the condition, the field, and what passed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Evidence {
    /// The test as written (`text has_any_word ["order", …]`).
    pub condition: String,
    /// The field it reads.
    pub field: String,
    /// What passed it: quoted ticket text with where it is, or the value that matched.
    pub matched: Vec<Quote>,
}

/// A piece of the ticket that passed a test.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quote {
    /// The customer's own words (or the field's value).
    pub text: String,
    /// `subject`, `description` or `comment`, for text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<&'static str>,
    /// Byte offsets in that text, `[start, end)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<[usize; 2]>,
    /// The vocabulary the words matched through (`@sync_failure`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocabulary: Option<String>,
    /// Words read as another one edit away: `"oders" as "orders" (one edit)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub typos: Vec<String>,
}

impl Quote {
    /// What the quote adds to the bare words: the vocabulary, and typos read through.
    fn detail(&self) -> String {
        let mut parts: Vec<String> = self.vocabulary.iter().cloned().collect();
        parts.extend(self.typos.iter().map(|t| format!("matched {t}")));
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join("; "))
        }
    }
}

impl Evidence {
    /// One line as a support lead reads it: no byte offsets.
    pub fn plain(&self) -> String {
        let quotes: Vec<String> = self
            .matched
            .iter()
            .map(|q| match q.part {
                Some(part) => format!("{:?} in {part}{}", q.text, q.detail()),
                None => q.text.clone(),
            })
            .collect();
        format!("{}: {}", self.condition, quotes.join(", "))
    }
}

impl std::fmt::Display for Evidence {
    /// With the offsets, as the tests and `--json` users know them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quotes: Vec<String> = self
            .matched
            .iter()
            .map(|q| match (q.part, q.span) {
                (Some(part), Some([a, b])) => {
                    format!("{:?} in {part} at {a}..{b}{}", q.text, q.detail())
                }
                _ => q.text.clone(),
            })
            .collect();
        write!(f, "{}: {}", self.condition, quotes.join(", "))
    }
}

fn value(text: String) -> Vec<Quote> {
    vec![Quote {
        text,
        part: None,
        span: None,
        vocabulary: None,
        typos: Vec::new(),
    }]
}

/// Field names a rule author may write, for suggestions and the schema.
pub fn field_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = SIMPLE_FIELDS.iter().map(|(n, _)| *n).collect();
    v.extend(["organization_fields", "custom_fields", "all", "any", "not"]);
    v
}

/// Comparison of `gt`/`gte`/`lt`/`lte`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
}

/// A number or an instant to compare with.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// A number.
    Number(f64),
    /// An instant (a bare date means its midnight UTC).
    Time(DateTime<Utc>),
}

/// An operator with its compiled operand.
#[derive(Debug, Clone)]
pub enum Op {
    /// Whole value equals (case-insensitive).
    Equals(String),
    /// Whole value is one of these.
    In(Vec<String>),
    /// Substring (case-insensitive, not word-aware).
    Contains(String),
    /// The term appears on word boundaries.
    HasWord(Term),
    /// Any of the terms appears.
    HasAnyWord(Vec<Term>),
    /// All of the terms appear.
    HasAllWords(Vec<Term>),
    /// Two terms within N words of each other.
    Near {
        /// First term.
        a: Term,
        /// Second term.
        b: Term,
        /// Most words allowed between them.
        within: usize,
    },
    /// Regular expression (Rust `regex` syntax; `(?i)` for case-insensitive).
    Regex(Regex),
    /// The field has a non-empty value (`true`) or not (`false`).
    Exists(bool),
    /// Numeric or date comparison.
    Compare(Cmp, Bound),
}

/// What a word operator looks for: one phrase, or a named vocabulary (any of its phrases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// Phrase ids (one for a phrase).
    pub ids: Vec<usize>,
    /// The vocabulary's name, when the term is `@name`.
    pub vocabulary: Option<String>,
}

/// A named vocabulary as `[words]` defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    /// Phrases and `@references`, as written.
    pub terms: Vec<String>,
    /// Whether its words tolerate one typo.
    pub typos: bool,
}

/// Operator names, for suggestions and the schema.
pub const OPS: &[&str] = &[
    "equals",
    "in",
    "contains",
    "has_word",
    "has_any_word",
    "has_all_words",
    "near",
    "regex",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
];

/// What compiling needs from the rest of the policy.
pub struct Compiler<'p> {
    /// The policy's phrase automaton (phrases are added here).
    pub phrases: &'p mut Phrases,
    /// Whether the policy has a calendar (needed by `business_hours`).
    pub has_calendar: bool,
    /// The policy's named vocabularies.
    pub vocabularies: &'p std::collections::BTreeMap<String, Vocabulary>,
    /// `[policy] typos`: every word operator tolerates one typo.
    pub typos: bool,
    /// Vocabularies already turned into phrase ids, by name and typo tolerance.
    pub expanded: std::collections::HashMap<(String, bool), Vec<usize>>,
    /// Vocabulary names used somewhere.
    pub used: std::collections::BTreeSet<String>,
}

impl Compiler<'_> {
    /// Compiles a TOML condition table.
    pub fn compile(&mut self, value: &Value) -> Result<Condition, CondError> {
        let Value::Table(table) = value else {
            return Err(CondError::new(format!(
                "a condition must be a table like {{ subject = {{ has_word = \"urgent\" }} }}, found {}",
                value.type_str()
            )));
        };
        let mut parts = Vec::new();
        for (key, v) in table {
            let compiled = match key.as_str() {
                "all" => self.list(v).map(Condition::All),
                "any" => self.list(v).map(Condition::Any),
                "not" => self.compile(v).map(|c| Condition::Not(Box::new(c))),
                "organization_fields" => {
                    self.keyed(v, |k| Ok(Field::OrganizationField(k.to_string())))
                }
                "custom_fields" => self.keyed(v, |k| {
                    k.trim().parse().map(Field::CustomField).map_err(|_| {
                        CondError::new(format!(
                            "custom field {k:?} is not a field id (a whole number)"
                        ))
                    })
                }),
                name => match SIMPLE_FIELDS.iter().find(|(n, _)| *n == name) {
                    Some((_, field)) => self.tests(field.clone(), v),
                    None => Err(CondError::new(unknown("field", name, &field_names()))),
                },
            };
            parts.push(compiled.map_err(|e| e.at(key.clone()))?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::All(parts)
        })
    }

    fn list(&mut self, v: &Value) -> Result<Vec<Condition>, CondError> {
        let Value::Array(items) = v else {
            return Err(CondError::new(
                "takes a list of conditions: [ {...}, {...} ]",
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, c)| self.compile(c).map_err(|e| e.at(i.to_string())))
            .collect()
    }

    fn keyed(
        &mut self,
        v: &Value,
        field: impl Fn(&str) -> Result<Field, CondError>,
    ) -> Result<Condition, CondError> {
        let Value::Table(t) = v else {
            return Err(CondError::new(
                "takes a table: { <key> = { equals = \"...\" } }",
            ));
        };
        let mut tests = Vec::new();
        for (k, ops) in t {
            let f = field(k).map_err(|e| e.at(k.clone()))?;
            tests.push(self.tests(f, ops).map_err(|e| e.at(k.clone()))?);
        }
        Ok(Condition::All(tests))
    }

    fn tests(&mut self, field: Field, v: &Value) -> Result<Condition, CondError> {
        let Value::Table(ops) = v else {
            return Err(CondError::new(
                "takes an operator table, e.g. { has_word = \"...\" } or { equals = \"...\" }",
            ));
        };
        if ops.is_empty() {
            return Err(CondError::new("has no operator"));
        }
        if field == Field::BusinessHours && !self.has_calendar {
            return Err(CondError::new(
                "business_hours needs the policy's calendar: add [calendars.NAME]",
            ));
        }
        let mut tests = Vec::new();
        for (name, operand) in ops {
            let op = self
                .op(&field, name, operand)
                .map_err(|e| e.at(name.clone()))?;
            tests.push(Condition::Test(field.clone(), op));
        }
        Ok(if tests.len() == 1 {
            tests.remove(0)
        } else {
            Condition::All(tests)
        })
    }

    fn phrase(&mut self, s: &str, typos: bool) -> Result<usize, CondError> {
        self.phrases
            .add(s, typos)
            .ok_or_else(|| CondError::new(format!("{s:?} has no words to match")))
    }

    /// A term as written: a phrase, or `@name` for a vocabulary.
    pub fn term(&mut self, s: &str) -> Result<Term, CondError> {
        match s.trim().strip_prefix('@') {
            Some(name) => Ok(Term {
                ids: self.vocabulary(name, self.typos)?,
                vocabulary: Some(name.to_string()),
            }),
            None => Ok(Term {
                ids: vec![self.phrase(s, self.typos)?],
                vocabulary: None,
            }),
        }
    }

    /// The phrase ids of vocabulary `name` (and of those it names), typo-tolerant when it or
    /// whatever names it says so.
    ///
    /// The loader has already left out every vocabulary that is part of a circle, so following
    /// the references ends.
    fn vocabulary(&mut self, name: &str, typos: bool) -> Result<Vec<usize>, CondError> {
        let vocabularies = self.vocabularies;
        let Some(v) = vocabularies.get(name) else {
            let known: Vec<String> = vocabularies.keys().map(|k| format!("@{k}")).collect();
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(CondError::new(if known.is_empty() {
                format!("no vocabulary is named `@{name}`: define it under [words], e.g. {name} = [\"...\"]")
            } else {
                unknown("vocabulary", &format!("@{name}"), &known)
            }));
        };
        self.used.insert(name.to_string());
        let typos = typos || v.typos;
        let key = (name.to_string(), typos);
        if let Some(ids) = self.expanded.get(&key) {
            return Ok(ids.clone());
        }
        let mut ids = Vec::new();
        for term in &v.terms {
            match term.trim().strip_prefix('@') {
                Some(inner) => ids.extend(self.vocabulary(inner, typos)?),
                None => ids.push(self.phrase(term, typos)?),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        self.expanded.insert(key, ids.clone());
        Ok(ids)
    }

    fn op(&mut self, field: &Field, name: &str, v: &Value) -> Result<Op, CondError> {
        Ok(match name {
            "equals" => Op::Equals(scalar(v)?.to_lowercase()),
            "in" => {
                let items = strings(v)?;
                if items.is_empty() {
                    return Err(CondError::new("`in` with an empty list never matches"));
                }
                Op::In(items.iter().map(|s| s.to_lowercase()).collect())
            }
            "contains" => Op::Contains(string(v)?.to_lowercase()),
            "has_word" => Op::HasWord(self.term(&string(v)?)?),
            "has_any_word" | "has_all_words" => {
                // A single "@name" stands for the vocabulary's list.
                let list = match v {
                    Value::String(one) if one.trim().starts_with('@') => vec![one.clone()],
                    _ => strings(v)?,
                };
                if list.is_empty() {
                    return Err(CondError::new(format!(
                        "`{name}` needs at least one phrase"
                    )));
                }
                let ids = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| self.term(s).map_err(|e| e.at(i.to_string())))
                    .collect::<Result<Vec<_>, _>>()?;
                if name == "has_any_word" {
                    Op::HasAnyWord(ids)
                } else {
                    Op::HasAllWords(ids)
                }
            }
            "near" => {
                if !matches!(field, Field::Text(_) | Field::AnyText) {
                    return Err(CondError::new(
                        "`near` works on subject, description, comment or text",
                    ));
                }
                let Value::Table(t) = v else {
                    return Err(CondError::new(
                        "`near` takes { terms = [\"orders\", \"not syncing\"], within = 5 }",
                    ));
                };
                if let Some(k) = t.keys().find(|k| *k != "terms" && *k != "within") {
                    return Err(
                        CondError::new(unknown("key of `near`", k, &["terms", "within"]))
                            .at(k.clone()),
                    );
                }
                let terms = t
                    .get("terms")
                    .map(strings)
                    .transpose()?
                    .ok_or_else(|| CondError::new("`near` needs terms = [\"a\", \"b\"]"))?;
                let [a, b] = terms.as_slice() else {
                    return Err(CondError::new("`near` takes exactly two terms").at("terms"));
                };
                let within = match t.get("within") {
                    Some(Value::Integer(n)) if *n >= 0 => *n as usize,
                    Some(_) => {
                        return Err(CondError::new("`within` is a number of words (0 or more)")
                            .at("within"))
                    }
                    None => 5,
                };
                Op::Near {
                    a: self.term(a).map_err(|e| e.at("0").at("terms"))?,
                    b: self.term(b).map_err(|e| e.at("1").at("terms"))?,
                    within,
                }
            }
            "regex" => {
                let s = string(v)?;
                Op::Regex(Regex::new(&s).map_err(|e| CondError::new(regex_error(&s, &e)))?)
            }
            "exists" => Op::Exists(
                v.as_bool()
                    .ok_or_else(|| CondError::new("`exists` takes true or false"))?,
            ),
            "gt" | "gte" | "lt" | "lte" => {
                let cmp = match name {
                    "gt" => Cmp::Gt,
                    "gte" => Cmp::Gte,
                    "lt" => Cmp::Lt,
                    _ => Cmp::Lte,
                };
                Op::Compare(cmp, bound(v)?)
            }
            other => return Err(CondError::new(unknown("operator", other, OPS))),
        })
    }
}

fn scalar(v: &Value) -> Result<String, CondError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(CondError::new("takes a string or a number")),
    }
}

fn string(v: &Value) -> Result<String, CondError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| CondError::new("takes a string"))
}

fn strings(v: &Value) -> Result<Vec<String>, CondError> {
    let Value::Array(items) = v else {
        return Err(CondError::new("takes a list: [\"...\", \"...\"]"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, s)| scalar(s).map_err(|e| e.at(i.to_string())))
        .collect()
}

fn bound(v: &Value) -> Result<Bound, CondError> {
    match v {
        Value::Integer(n) => Ok(Bound::Number(*n as f64)),
        Value::Float(f) => Ok(Bound::Number(*f)),
        Value::String(s) => time_of(s)
            .map(Bound::Time)
            .ok_or_else(|| CondError::new(format!("{s:?} is neither a number nor a date/time"))),
        Value::Datetime(d) => time_of(&d.to_string())
            .map(Bound::Time)
            .ok_or_else(|| CondError::new("a date/time needs a date")),
        _ => Err(CondError::new("takes a number or a date")),
    }
}

/// An RFC 3339 time, or a bare date (its midnight UTC).
pub fn time_of(s: &str) -> Option<DateTime<Utc>> {
    parse_time(s).or_else(|| {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .ok()
            .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
    })
}

/// "unknown field `subjet` (did you mean `subject`?)", or the list of known names.
pub fn unknown(what: &str, name: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (edit_distance(k, name), *k))
        .min()
        .filter(|(d, _)| *d <= 2 || (name.len() > 3 && *d <= name.len() / 3));
    match best {
        Some((_, s)) => format!("unknown {what} `{name}` (did you mean `{s}`?)"),
        None => format!(
            "unknown {what} `{name}`; expected one of: {}",
            known.join(", ")
        ),
    }
}

// Levenshtein distance over chars; the names compared are short, so the quadratic cost is nothing.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// One ticket under evaluation: its texts are normalised and searched at most once.
pub struct Eval<'a> {
    /// The ticket.
    pub ticket: &'a Ticket,
    phrases: &'a Phrases,
    calendar: Option<&'a Calendar>,
    texts: [OnceCell<(Words, Hits)>; 3],
    /// One bit per phrase: found in any text. Built once, read by every rule's gate.
    presence: OnceCell<Vec<u64>>,
    spans: bool,
}

impl<'a> Eval<'a> {
    /// Prepares evaluation of `ticket` against conditions compiled with `phrases`.
    pub fn new(ticket: &'a Ticket, phrases: &'a Phrases, calendar: Option<&'a Calendar>) -> Self {
        Eval {
            ticket,
            phrases,
            calendar,
            texts: Default::default(),
            presence: OnceCell::new(),
            spans: false,
        }
    }

    /// Like [`Eval::new`], keeping word positions so a trace can quote the matching text.
    pub fn explaining(
        ticket: &'a Ticket,
        phrases: &'a Phrases,
        calendar: Option<&'a Calendar>,
    ) -> Self {
        Eval {
            spans: true,
            ..Eval::new(ticket, phrases, calendar)
        }
    }

    fn raw(&self, part: Part) -> &'a str {
        match part {
            Part::Subject => &self.ticket.subject,
            Part::Description => &self.ticket.description,
            Part::Comment => self.ticket.latest_comment.as_deref().unwrap_or(""),
        }
    }

    fn searched(&self, part: Part) -> &(Words, Hits) {
        self.texts[part as usize].get_or_init(|| {
            let raw = self.raw(part);
            let words = if self.spans {
                self.phrases.words_with_spans(raw)
            } else {
                self.phrases.words(raw)
            };
            let hits = self.phrases.find(&words);
            (words, hits)
        })
    }

    /// True when phrase `id` occurs in the subject, description or comment.
    pub fn present(&self, id: usize) -> bool {
        let bits = self.presence.get_or_init(|| {
            let mut bits = vec![0u64; self.phrases.len().div_ceil(64)];
            for p in [Part::Subject, Part::Description, Part::Comment] {
                for phrase in self.searched(p).1.found() {
                    bits[phrase / 64] |= 1 << (phrase % 64);
                }
            }
            bits
        });
        bits.get(id / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn scalars(&self, field: &Field) -> Vec<String> {
        let t = self.ticket;
        let one = |s: Option<String>| s.into_iter().filter(|s| !s.is_empty()).collect();
        match field {
            Field::Text(p) => one(Some(self.raw(*p).to_string())),
            Field::AnyText => [Part::Subject, Part::Description, Part::Comment]
                .iter()
                .map(|p| self.raw(*p).to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            Field::Tags => t.tags.clone(),
            Field::Priority => one(t.priority.map(|p| p.as_str().to_string())),
            Field::Status => one(t.status.clone()),
            Field::Type => one(t.ticket_type.clone()),
            Field::Channel => one(t.channel.clone()),
            Field::Recipient => one(t.recipient.clone()),
            Field::RequesterEmail => one(t.requester_email.clone()),
            Field::RequesterDomain => one(t
                .requester_email
                .as_deref()
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d.to_string())),
            Field::Organization => one(t.organization.as_ref().and_then(|o| o.name.clone())),
            Field::OrganizationField(k) => one(t
                .organization
                .as_ref()
                .and_then(|o| o.fields.get(k))
                .and_then(json_scalar)),
            Field::CustomField(id) => one(t.custom_fields.get(id).and_then(json_scalar)),
            Field::BrandId => one(t.brand_id.map(|v| v.to_string())),
            Field::GroupId => one(t.group_id.map(|v| v.to_string())),
            Field::FormId => one(t.form_id.map(|v| v.to_string())),
            Field::Event => one(t.event.as_ref().map(|e| e.as_str().to_string())),
            Field::CommentBy => one(t
                .comment_by_staff
                .map(|staff| if staff { "agent" } else { "end-user" }.to_string())),
            Field::BusinessHours => one(match (self.calendar, t.created_at) {
                (Some(c), Some(at)) => {
                    Some(if c.is_open(at) { "inside" } else { "outside" }.to_string())
                }
                _ => None,
            }),
            Field::CreatedAt => one(t.created_at.map(|c| c.to_rfc3339())),
            Field::SlaMetric => one(t.sla.as_ref().map(|a| a.metric.clone())),
        }
    }

    /// Evaluates `c`; when `trace` is given, records why each matching test matched.
    pub fn check(&self, c: &Condition, trace: &mut Option<&mut Vec<Evidence>>) -> bool {
        match c {
            Condition::All(cs) => cs.iter().all(|c| self.check(c, trace)),
            Condition::Any(cs) => cs.iter().any(|c| self.check(c, trace)),
            Condition::Not(c) => !self.check(c, &mut None),
            Condition::Test(field, op) => {
                let found = self.test(field, op, trace.is_some());
                let held = found.is_some();
                if let (Some(matched), Some(t)) = (found, trace.as_mut()) {
                    t.push(Evidence {
                        condition: describe(field, op, self.phrases),
                        field: field_name(field),
                        matched,
                    });
                }
                held
            }
        }
    }

    /// `Some(what passed)` when the test passes; it is only spelled out when `quote` is set.
    fn test(&self, field: &Field, op: &Op, quote: bool) -> Option<Vec<Quote>> {
        let parts: &[Part] = match field {
            Field::Text(p) => std::slice::from_ref(p),
            Field::AnyText => &[Part::Subject, Part::Description, Part::Comment],
            _ => &[],
        };
        if !parts.is_empty() {
            if let Some(e) = self.text_test(parts, op, quote) {
                return e;
            }
        }
        let values = self.scalars(field);
        match op {
            Op::Exists(want) => {
                (values.is_empty() != *want).then(|| value(format!("{} value(s)", values.len())))
            }
            _ => values.iter().find_map(|v| scalar_test(v, op)).map(value),
        }
    }

    /// Word operators on ticket texts go through the automaton's hits; `None` means "not a word operator".
    fn text_test(&self, parts: &[Part], op: &Op, spell_out: bool) -> Option<Option<Vec<Quote>>> {
        if !spell_out {
            // Deciding (not explaining): lookups only, no allocation.
            let found = |t: &Term| {
                t.ids.iter().any(|id| {
                    parts
                        .iter()
                        .any(|p| !self.searched(*p).1.of(*id).is_empty())
                })
            };
            let hit = match op {
                Op::HasWord(t) => found(t),
                Op::HasAnyWord(ts) => ts.iter().any(found),
                Op::HasAllWords(ts) => ts.iter().all(found),
                Op::Near { a, b, within } => parts
                    .iter()
                    .any(|p| near(&self.searched(*p).1, &a.ids, &b.ids, *within).is_some()),
                _ => return None,
            };
            return Some(hit.then(Vec::new));
        }
        let quote = |part: Part, words: &Words, first: usize, last: usize, via: &[&Term]| {
            let span = words.original_span(first, last);
            let name = match part {
                Part::Subject => "subject",
                Part::Description => "description",
                Part::Comment => "comment",
            };
            let raw = self.raw(part);
            let typos = self
                .phrases
                .corrections(words, first, last)
                .into_iter()
                .map(|c| format!("{:?} as {:?} (one edit)", &raw[c.span], c.read_as))
                .collect();
            let vocabularies: Vec<String> = via
                .iter()
                .filter_map(|t| t.vocabulary.as_ref().map(|v| format!("@{v}")))
                .collect();
            Quote {
                text: raw[span.clone()].to_string(),
                part: Some(name),
                span: Some([span.start, span.end]),
                vocabulary: (!vocabularies.is_empty()).then(|| vocabularies.join(", ")),
                typos,
            }
        };
        let find = |t: &Term| {
            parts.iter().find_map(|p| {
                let (w, hits) = self.searched(*p);
                t.ids
                    .iter()
                    .filter_map(|id| hits.of(*id).first())
                    .min_by_key(|h| h.first)
                    .map(|h| quote(*p, w, h.first, h.last, &[t]))
            })
        };
        Some(match op {
            Op::HasWord(t) => find(t).map(|q| vec![q]),
            Op::HasAnyWord(ts) => ts.iter().find_map(find).map(|q| vec![q]),
            Op::HasAllWords(ts) => ts.iter().map(find).collect::<Option<Vec<_>>>(),
            Op::Near { a, b, within } => parts.iter().find_map(|p| {
                let (w, hits) = self.searched(*p);
                near(hits, &a.ids, &b.ids, *within).map(|(x, y)| {
                    let (first, last) = (x.first.min(y.first), x.last.max(y.last));
                    vec![quote(*p, w, first, last, &[a, b])]
                })
            }),
            _ => return None,
        })
    }
}

fn json_scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A test on one plain value (tags, ids, names, or a text when not a word operator).
fn scalar_test(value: &str, op: &Op) -> Option<String> {
    let lower = value.to_lowercase();
    let hit = match op {
        Op::Equals(want) => lower.trim() == want.trim(),
        Op::In(set) => set.iter().any(|w| w.trim() == lower.trim()),
        Op::Contains(needle) => lower.contains(needle.as_str()),
        Op::Regex(re) => re.is_match(value),
        Op::Compare(cmp, bound) => compare(value, *cmp, bound),
        // Word operators on a short value: normalise it and look for the phrase's words.
        Op::HasWord(_)
        | Op::HasAnyWord(_)
        | Op::HasAllWords(_)
        | Op::Near { .. }
        | Op::Exists(_) => false,
    };
    hit.then(|| format!("{value:?}"))
}

fn compare(value: &str, cmp: Cmp, bound: &Bound) -> bool {
    let ord = match bound {
        Bound::Number(b) => value
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|v| v.partial_cmp(b)),
        Bound::Time(b) => time_of(value).map(|v| v.cmp(b)),
    };
    let Some(ord) = ord else { return false };
    match cmp {
        Cmp::Gt => ord.is_gt(),
        Cmp::Gte => ord.is_ge(),
        Cmp::Lt => ord.is_lt(),
        Cmp::Lte => ord.is_le(),
    }
}

fn field_name(f: &Field) -> String {
    match f {
        Field::OrganizationField(k) => format!("organization_fields.{k}"),
        Field::CustomField(id) => format!("custom_fields.{id}"),
        other => SIMPLE_FIELDS
            .iter()
            .find(|(_, x)| x == other)
            .map_or_else(|| format!("{other:?}"), |(n, _)| n.to_string()),
    }
}

/// "subject has_word \"urgent\"": a test as a rule author wrote it.
pub fn describe(field: &Field, op: &Op, phrases: &Phrases) -> String {
    let f = field_name(field);
    // Long phrase lists are abbreviated: the evidence after the description quotes what matched.
    // Phrases that read alike once normalised ("mapping", "mappings") are listed once.
    let term = |t: &Term| match (&t.vocabulary, t.ids.first()) {
        (Some(v), _) => format!("@{v}"),
        (None, Some(id)) => format!("{:?}", phrases.written(*id)),
        (None, None) => String::new(),
    };
    let list = |ts: &[Term]| {
        let mut unique: Vec<String> = Vec::new();
        for p in ts.iter().map(term) {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        let shown: Vec<&str> = unique.iter().take(3).map(String::as_str).collect();
        match unique.len() {
            n if n > 3 => format!("{}, … {} more", shown.join(", "), n - 3),
            _ => shown.join(", "),
        }
    };
    match op {
        Op::Equals(v) => format!("{f} equals {v:?}"),
        Op::In(v) => format!("{f} in {v:?}"),
        Op::Contains(v) => format!("{f} contains {v:?}"),
        Op::HasWord(t) => format!("{f} has_word {}", term(t)),
        Op::HasAnyWord(ts) => format!("{f} has_any_word [{}]", list(ts)),
        Op::HasAllWords(ts) => format!("{f} has_all_words [{}]", list(ts)),
        Op::Near { a, b, within } => {
            format!("{f} near {} and {} within {within} words", term(a), term(b))
        }
        Op::Regex(re) => format!("{f} regex {:?}", re.as_str()),
        Op::Exists(b) => format!("{f} exists = {b}"),
        Op::Compare(c, b) => format!("{f} {c:?} {b:?}").to_lowercase(),
    }
}

impl fmt::Display for CondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.join("."), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{EventKind, Organization, Priority};
    use serde_json::json;

    struct Fixture {
        phrases: Phrases,
        cond: Condition,
    }

    fn compile(src: &str) -> Result<Fixture, CondError> {
        let v: toml::Table = toml::from_str(&format!("when = {src}")).unwrap();
        let mut phrases = Phrases::default();
        let vocabularies = std::collections::BTreeMap::new();
        let cond = Compiler {
            phrases: &mut phrases,
            has_calendar: false,
            vocabularies: &vocabularies,
            typos: false,
            expanded: Default::default(),
            used: Default::default(),
        }
        .compile(&v["when"])?;
        phrases.build().unwrap();
        Ok(Fixture { phrases, cond })
    }

    fn matches(src: &str, t: &Ticket) -> bool {
        let f = compile(src).unwrap();
        Eval::new(t, &f.phrases, None).check(&f.cond, &mut None)
            && Eval::explaining(t, &f.phrases, None).check(&f.cond, &mut Some(&mut Vec::new()))
    }

    fn subject(s: &str) -> Ticket {
        Ticket {
            subject: s.into(),
            ..Ticket::default()
        }
    }

    #[test]
    fn has_word_is_word_aware_case_and_plural_insensitive() {
        let c = r#"{ subject = { has_word = "urgent" } }"#;
        assert!(matches(c, &subject("URGENT: orders stopped")));
        assert!(matches(c, &subject("this is (urgent)!")));
        assert!(
            matches(c, &subject("urgently needed")),
            "a word form of urgent"
        );
        assert!(
            !matches(c, &subject("urgency")),
            "another word, not a form of it"
        );
        let c = r#"{ text = { has_word = "order not syncing" } }"#;
        assert!(matches(c, &subject("Orders not syncing")));
        let c = r#"{ subject = { has_word = "aren't syncing" } }"#;
        assert!(matches(c, &subject("orders AREN’T syncing")));
    }

    #[test]
    fn negated_phrases() {
        let c = r#"{ all = [ { subject = { has_word = "urgent" } }, { not = { subject = { has_any_word = ["not urgent", "isn't urgent"] } } } ] }"#;
        assert!(matches(c, &subject("Urgent: sync down")));
        assert!(!matches(c, &subject("This is not urgent, just curious")));
        assert!(!matches(c, &subject("it isn't urgent")));
    }

    #[test]
    fn any_all_and_near() {
        let c = r#"{ description = { has_all_words = ["inventory", "not syncing"] } }"#;
        let mut t = Ticket {
            description: "Inventory levels are not syncing".into(),
            ..Ticket::default()
        };
        assert!(matches(c, &t));
        t.description = "Inventory is fine".into();
        assert!(!matches(c, &t));
        let c = r#"{ text = { near = { terms = ["orders", "not syncing"], within = 3 } } }"#;
        assert!(matches(c, &subject("our orders are still not syncing")));
        assert!(!matches(
            c,
            &subject("orders shipped yesterday, but the inventory is not syncing")
        ));
    }

    #[test]
    fn text_spans_both_subject_and_comment() {
        let c = r#"{ text = { has_all_words = ["refund", "escalate"] } }"#;
        let t = Ticket {
            subject: "Refund".into(),
            latest_comment: Some("please escalate".into()),
            ..Ticket::default()
        };
        assert!(matches(c, &t));
    }

    #[test]
    fn scalar_fields_and_operators() {
        let t = Ticket {
            tags: vec!["vip".into(), "Plan_Gold".into()],
            priority: Some(Priority::High),
            requester_email: Some("Ana@Shop.Example".into()),
            organization: Some(Organization {
                id: 1,
                name: Some("Shop".into()),
                fields: [
                    ("plan".to_string(), json!("Flagship")),
                    ("seats".to_string(), json!(40)),
                ]
                .into_iter()
                .collect(),
            }),
            custom_fields: [(360001, json!("yes"))].into_iter().collect(),
            brand_id: Some(77),
            event: Some(EventKind::new("created")),
            created_at: Some("2026-11-23T17:00:00Z".parse().unwrap()),
            ..Ticket::default()
        };
        assert!(matches(r#"{ tags = { in = ["gold", "plan_gold"] } }"#, &t));
        assert!(matches(
            r#"{ requester_domain = { equals = "shop.example" } }"#,
            &t
        ));
        assert!(matches(
            r#"{ organization_fields.plan = { equals = "flagship" } }"#,
            &t
        ));
        assert!(matches(
            r#"{ organization_fields.seats = { gte = 40 } }"#,
            &t
        ));
        assert!(!matches(
            r#"{ organization_fields.seats = { gt = 40 } }"#,
            &t
        ));
        assert!(matches(
            r#"{ custom_fields.360001 = { equals = "YES" } }"#,
            &t
        ));
        assert!(matches(r#"{ brand_id = { equals = 77 } }"#, &t));
        assert!(matches(r#"{ priority = { in = ["high", "urgent"] } }"#, &t));
        assert!(matches(r#"{ event = { equals = "created" } }"#, &t));
        assert!(matches(r#"{ recipient = { exists = false } }"#, &t));
        assert!(matches(
            r#"{ requester_email = { regex = "(?i)@shop\\.example$" } }"#,
            &t
        ));
        assert!(matches(r#"{ created_at = { lt = "2026-11-24" } }"#, &t));
        assert!(!matches(
            r#"{ created_at = { gt = 2026-11-24T00:00:00Z } }"#,
            &t
        ));
    }

    #[test]
    fn errors_have_paths_and_suggestions() {
        let e = |src: &str| compile(src).err().unwrap();
        assert_eq!(
            e(r#"{ subjet = { has_word = "x" } }"#),
            CondError {
                path: vec!["subjet".into()],
                message: "unknown field `subjet` (did you mean `subject`?)".into()
            }
        );
        assert_eq!(
            e(r#"{ any = [ { subject = { has_word = "x" } }, { subject = { has_wrd = "x" } } ] }"#)
                .path,
            vec!["any", "1", "subject", "has_wrd"]
        );
        assert_eq!(
            e(r#"{ subject = { regex = "(" } }"#).path,
            vec!["subject", "regex"]
        );
        assert!(e(r#"{ subject = { has_word = "!!" } }"#)
            .message
            .contains("no words"));
        assert!(e(r#"{ tags = { near = { terms = ["a", "b"] } } }"#)
            .message
            .contains("`near` works on"));
        assert!(e(r#"{ business_hours = { equals = "outside" } }"#)
            .message
            .contains("calendar"));
        assert!(e(r#"{ custom_fields.abc = { equals = "x" } }"#)
            .message
            .contains("not a field id"));
    }
}
