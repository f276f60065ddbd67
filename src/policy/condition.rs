//! Conditions of a rule: `all`, `any`, `not`, and `field = { operator = value }` tests.
//!
//! A condition table with several keys means all of them. Text operators work on words: text is
//! lower-cased and split on anything that is not a letter or digit, so "URGENT!" has the word
//! "urgent" and "orders-not-syncing" has the phrase "not syncing".

use toml::Value;

use crate::ticket::Ticket;

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every condition holds (true when empty).
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
    /// One field tested with one operator.
    Test(Field, Op),
}

/// A ticket field a condition can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Subject line.
    Subject,
    /// First comment.
    Description,
    /// Comment of a comment_added event.
    Comment,
    /// Subject, description and comment together.
    Text,
    /// Tags (a list: true if any tag passes).
    Tags,
    /// Priority.
    Priority,
    /// Status.
    Status,
    /// Ticket type.
    Type,
    /// `via.channel`.
    Channel,
    /// Requester e-mail.
    RequesterEmail,
    /// What happened (created, comment_added, ...).
    Event,
}

const FIELDS: &[(&str, Field)] = &[
    ("subject", Field::Subject),
    ("description", Field::Description),
    ("comment", Field::Comment),
    ("text", Field::Text),
    ("tags", Field::Tags),
    ("priority", Field::Priority),
    ("status", Field::Status),
    ("type", Field::Type),
    ("channel", Field::Channel),
    ("requester_email", Field::RequesterEmail),
    ("event", Field::Event),
];

/// An operator with its operand, lower-cased at compile time.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Whole value equals (case-insensitive).
    Equals(String),
    /// Whole value is one of these.
    In(Vec<String>),
    /// Substring (case-insensitive).
    Contains(String),
    /// The word or phrase appears on word boundaries.
    HasWord(Vec<String>),
    /// Any of these words or phrases appears.
    HasAnyWord(Vec<Vec<String>>),
    /// All of these words or phrases appear.
    HasAllWords(Vec<Vec<String>>),
}

const OPS: &[&str] = &[
    "equals",
    "in",
    "contains",
    "has_word",
    "has_any_word",
    "has_all_words",
];

impl Condition {
    /// Compiles a TOML condition table; errors name the offending key.
    pub fn compile(value: &Value) -> Result<Condition, String> {
        let Value::Table(table) = value else {
            return Err(format!(
                "a condition must be a table like {{ subject = {{ has_word = \"urgent\" }} }}, found {}",
                value.type_str()
            ));
        };
        let mut parts = Vec::new();
        for (key, v) in table {
            parts.push(match key.as_str() {
                "all" => Condition::All(compile_list(key, v)?),
                "any" => Condition::Any(compile_list(key, v)?),
                "not" => Condition::Not(Box::new(Condition::compile(v)?)),
                name => {
                    let field = FIELDS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, f)| *f)
                        .ok_or_else(|| unknown("field", name, FIELDS.iter().map(|(n, _)| *n)))?;
                    compile_tests(field, name, v)?
                }
            });
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::All(parts)
        })
    }

    /// True when the ticket satisfies the condition.
    pub fn matches(&self, ticket: &Ticket) -> bool {
        match self {
            Condition::All(cs) => cs.iter().all(|c| c.matches(ticket)),
            Condition::Any(cs) => cs.iter().any(|c| c.matches(ticket)),
            Condition::Not(c) => !c.matches(ticket),
            Condition::Test(field, op) => values(*field, ticket).iter().any(|v| op.test(v)),
        }
    }
}

fn compile_list(key: &str, v: &Value) -> Result<Vec<Condition>, String> {
    let Value::Array(items) = v else {
        return Err(format!("`{key}` takes a list of conditions"));
    };
    items.iter().map(Condition::compile).collect()
}

fn compile_tests(field: Field, name: &str, v: &Value) -> Result<Condition, String> {
    let Value::Table(ops) = v else {
        return Err(format!(
            "`{name}` takes an operator table, e.g. {name} = {{ has_word = \"...\" }}"
        ));
    };
    if ops.is_empty() {
        return Err(format!("`{name}` has no operator"));
    }
    let mut tests = Vec::new();
    for (op, operand) in ops {
        let op = match op.as_str() {
            "equals" => Op::Equals(string(op, operand)?.to_lowercase()),
            "in" => Op::In(
                strings(op, operand)?
                    .iter()
                    .map(|s| s.to_lowercase())
                    .collect(),
            ),
            "contains" => Op::Contains(string(op, operand)?.to_lowercase()),
            "has_word" => Op::HasWord(phrase(op, &string(op, operand)?)?),
            "has_any_word" => Op::HasAnyWord(phrases(op, operand)?),
            "has_all_words" => Op::HasAllWords(phrases(op, operand)?),
            other => return Err(unknown("operator", other, OPS.iter().copied())),
        };
        tests.push(Condition::Test(field, op));
    }
    Ok(if tests.len() == 1 {
        tests.remove(0)
    } else {
        Condition::All(tests)
    })
}

fn string(op: &str, v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("`{op}` takes a string"))
}

fn strings(op: &str, v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else {
        return Err(format!("`{op}` takes a list of strings"));
    };
    items.iter().map(|i| string(op, i)).collect()
}

fn phrase(op: &str, s: &str) -> Result<Vec<String>, String> {
    let w = words(s);
    if w.is_empty() {
        return Err(format!("`{op}` needs at least one word, got {s:?}"));
    }
    Ok(w)
}

fn phrases(op: &str, v: &Value) -> Result<Vec<Vec<String>>, String> {
    strings(op, v)?.iter().map(|s| phrase(op, s)).collect()
}

fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a str> + Clone) -> String {
    let suggestion = known
        .clone()
        .min_by_key(|k| edit_distance(k, name))
        .filter(|k| edit_distance(k, name) <= 2);
    let list: Vec<&str> = known.collect();
    match suggestion {
        Some(s) => format!("unknown {what} `{name}` (did you mean `{s}`?)"),
        None => format!("unknown {what} `{name}`; known: {}", list.join(", ")),
    }
}

// Levenshtein distance over chars; names here are a few bytes long, so the quadratic cost is nothing.
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

/// Lower-cased words of a text: maximal runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn values(field: Field, t: &Ticket) -> Vec<String> {
    let one = |s: Option<&str>| s.map(|s| vec![s.to_string()]).unwrap_or_default();
    match field {
        Field::Subject => vec![t.subject.clone()],
        Field::Description => vec![t.description.clone()],
        Field::Comment => one(t.latest_comment.as_deref()),
        Field::Text => vec![format!(
            "{}\n{}\n{}",
            t.subject,
            t.description,
            t.latest_comment.as_deref().unwrap_or("")
        )],
        Field::Tags => t.tags.clone(),
        Field::Priority => one(t.priority.map(|p| p.as_str())),
        Field::Status => one(t.status.as_deref()),
        Field::Type => one(t.ticket_type.as_deref()),
        Field::Channel => one(t.channel.as_deref()),
        Field::RequesterEmail => one(t.requester_email.as_deref()),
        Field::Event => one(t.event.as_ref().map(|e| e.as_str())),
    }
}

impl Op {
    fn test(&self, value: &str) -> bool {
        match self {
            Op::Equals(want) => value.to_lowercase() == *want,
            Op::In(set) => set.contains(&value.to_lowercase()),
            Op::Contains(needle) => value.to_lowercase().contains(needle.as_str()),
            Op::HasWord(p) => has_phrase(&words(value), p),
            Op::HasAnyWord(ps) => {
                let w = words(value);
                ps.iter().any(|p| has_phrase(&w, p))
            }
            Op::HasAllWords(ps) => {
                let w = words(value);
                ps.iter().all(|p| has_phrase(&w, p))
            }
        }
    }
}

fn has_phrase(text: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && text.windows(phrase.len()).any(|w| w == phrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(src: &str) -> Result<Condition, String> {
        let v: toml::Table = toml::from_str(&format!("when = {src}")).unwrap();
        Condition::compile(&v["when"])
    }

    fn ticket(subject: &str) -> Ticket {
        Ticket {
            subject: subject.into(),
            ..Ticket::default()
        }
    }

    #[test]
    fn has_word_respects_word_boundaries_and_case() {
        let c = cond(r#"{ subject = { has_word = "urgent" } }"#).unwrap();
        assert!(c.matches(&ticket("URGENT: orders stopped")));
        assert!(c.matches(&ticket("this is (urgent)!")));
        assert!(!c.matches(&ticket("urgently needed")));
    }

    #[test]
    fn phrases_and_negation() {
        let c = cond(r#"{ all = [ { subject = { has_word = "urgent" } }, { not = { subject = { has_word = "not urgent" } } } ] }"#).unwrap();
        assert!(c.matches(&ticket("Urgent: sync down")));
        assert!(!c.matches(&ticket("This is not urgent, just curious")));
    }

    #[test]
    fn unknown_names_suggest_the_closest() {
        assert_eq!(
            cond(r#"{ subjet = { has_word = "x" } }"#),
            Err("unknown field `subjet` (did you mean `subject`?)".into())
        );
        assert_eq!(
            cond(r#"{ subject = { has_wrd = "x" } }"#),
            Err("unknown operator `has_wrd` (did you mean `has_word`?)".into())
        );
    }

    #[test]
    fn tags_match_any_element() {
        let c = cond(r#"{ tags = { in = ["vip", "gold"] } }"#).unwrap();
        let mut t = ticket("x");
        t.tags = vec!["foo".into(), "Gold".into()];
        assert!(c.matches(&t));
        t.tags = vec!["foo".into()];
        assert!(!c.matches(&t));
    }
}
