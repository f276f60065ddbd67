//! Policy text → compiled [`Policy`]. Every problem is reported with its key path, which
//! `diagnostic` turns into `file:line:col`. Unknown keys are errors with a "did you mean".

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::{Table, Value};

use super::cases::TestCase;
use super::condition::{unknown, Compiler, Condition, Field, Op, Vocabulary};
use super::diagnostic::Located;
use super::text::Phrases;
use super::{
    DueKind, FieldKind, Fields, Level, LevelRef, Piece, Policy, Rule, Template, Var, KNOWN_EVENTS,
};
use crate::calendar::{Calendar, CalendarSpec};
use crate::sla::{PlanSource, Sla};
use crate::ticket::{EventKind, Priority};

const TOP_KEYS: &[&str] = &[
    "policy",
    "levels",
    "calendars",
    "sla",
    "slas",
    "fields",
    "words",
    "rule",
    "unclassified",
    "test",
];
const POLICY_KEYS: &[&str] = &[
    "name",
    "calendar",
    "only_raise",
    "scope",
    "plan",
    "stemming",
    "typos",
];
const WORDS_KEYS: &[&str] = &["terms", "typos"];
/// `[unclassified]` is a rule without a name or a condition: it applies when no rule classified.
const UNCLASSIFIED_KEYS: &[&str] = &[
    "on",
    "priority",
    "add_tags",
    "remove_tags",
    "set_fields",
    "group",
    "note",
    "notify",
    "sla",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "on",
    "when",
    "priority",
    "raise",
    "add_tags",
    "remove_tags",
    "set_fields",
    "group",
    "note",
    "notify",
    "sla",
    "stop",
];
const FIELDS_KEYS: &[&str] = &["first_response_due", "resolution_due", "task_due_at"];
const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];

fn p(path: &[&str]) -> Vec<String> {
    path.iter().map(|s| s.to_string()).collect()
}

fn err(path: &[String], message: impl Into<String>) -> Located {
    Located::new(path, message)
}

fn child(path: &[String], key: impl Into<String>) -> Vec<String> {
    let mut v = path.to_vec();
    v.push(key.into());
    v
}

/// Replaces `${VAR}` in every string (and table key) with the environment variable's value;
/// every unset variable is reported (its string is left as written).
fn interpolate_all(v: &mut Value, path: &[String], errors: &mut Vec<Located>) {
    match v {
        Value::String(s) if s.contains("${") => match super::interpolate(s) {
            Ok(done) => *s = done,
            Err(m) => errors.push(err(path, m)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_all(item, &child(path, i.to_string()), errors);
            }
        }
        Value::Table(t) => {
            let keys: Vec<String> = t.keys().cloned().collect();
            for k in keys {
                let kp = child(path, k.clone());
                let Some(mut val) = t.remove(&k) else {
                    continue;
                };
                interpolate_all(&mut val, &kp, errors);
                let key = if k.contains("${") {
                    match super::interpolate(&k) {
                        Ok(key) => key,
                        Err(m) => {
                            errors.push(err(&kp, m));
                            k
                        }
                    }
                } else {
                    k
                };
                t.insert(key, val);
            }
        }
        _ => {}
    }
}

/// Keeps the value of `r`, or records its error and gives `None`, so that one mistake does not
/// hide the next: `check` reports every independent error in one run.
fn attempt<T>(errors: &mut Vec<Located>, r: Result<T, Located>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// A message that starts with the dotted key it is about (`hours.mon-fri: ...`,
/// `sla.urgent.first_response: ...`) is placed at that key under `base`, so the error points at
/// the value rather than at the section's header.
fn keyed(base: &[String], message: String) -> Located {
    let head = message.split_once(": ").map(|(h, _)| h).unwrap_or("");
    let is_path = !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !is_path {
        return err(base, message);
    }
    let mut segs = head.split('.').map(str::to_string);
    let mut path = base.to_vec();
    // `Sla` names its keys from "sla."; under [slas.NAME] the base already says where.
    match segs.next() {
        Some(first) if first == "sla" => {}
        Some(first) => path.push(first),
        None => {}
    }
    path.extend(segs);
    err(&path, message)
}

fn check_keys(t: &Table, known: &[&str], path: &[String], what: &str) -> Result<(), Located> {
    for k in t.keys() {
        if !known.contains(&k.as_str()) {
            return Err(err(&child(path, k.clone()), unknown(what, k, known)));
        }
    }
    Ok(())
}

fn table<'a>(v: &'a Value, path: &[String], what: &str) -> Result<&'a Table, Located> {
    v.as_table()
        .ok_or_else(|| err(path, format!("{what} must be a table")))
}

fn string(v: &Value, path: &[String]) -> Result<String, Located> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| err(path, format!("expected a string, found {}", v.type_str())))
}

fn strings(v: &Value, path: &[String]) -> Result<Vec<String>, Located> {
    let Value::Array(items) = v else {
        return Err(err(path, "expected a list of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, s)| string(s, &child(path, i.to_string())))
        .collect()
}

fn id(v: &Value, path: &[String]) -> Result<u64, Located> {
    match v {
        Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| err(path, format!("{s:?} is not a Zendesk id (a whole number)"))),
        _ => Err(err(path, "expected a Zendesk id (a whole number)")),
    }
}

/// Zendesk stores tags lower-case and splits on whitespace, so a tag with a space cannot exist.
fn tags(v: &Value, path: &[String]) -> Result<Vec<String>, Located> {
    strings(v, path)?
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t.trim().to_lowercase();
            if t.is_empty() || t.chars().any(char::is_whitespace) {
                Err(err(
                    &child(path, i.to_string()),
                    format!("{t:?} is not a Zendesk tag (tags are single words; use _ or -)"),
                ))
            } else {
                Ok(t)
            }
        })
        .collect()
}

fn condition(c: &mut Compiler<'_>, v: &Value, path: &[String]) -> Result<Condition, Located> {
    c.compile(v).map_err(|e| {
        let mut full = path.to_vec();
        full.extend(e.path);
        err(&full, e.message)
    })
}

fn template(s: &str, path: &[String]) -> Result<Template, Located> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Lit(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| err(path, "`{{` without a closing `}}` in the note"))?;
        let name = after[..end].trim();
        let var = Var::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = Var::ALL.iter().map(|(n, _)| *n).collect();
                err(path, unknown("placeholder", name, &names))
            })?;
        pieces.push(Piece::Var(var));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Lit(rest.to_string()));
    }
    Ok(Template(pieces))
}

/// A compiled file: the policy (`None` only when the file is not TOML) and every independent
/// error (a section that fails is left out, and what depends on it is not checked further). With
/// errors, the policy is what compiled, for the warnings about it; it must not be used.
pub struct Compiled {
    /// The policy, complete when `errors` is empty.
    pub policy: Option<Policy>,
    /// The errors.
    pub errors: Vec<Located>,
}

/// Compiles one policy file.
pub fn compile(text: &str, file: &Path) -> Compiled {
    match compile_parts(text, file) {
        Ok((policy, errors)) => Compiled {
            policy: Some(policy),
            errors,
        },
        Err(errors) => Compiled {
            policy: None,
            errors,
        },
    }
}

fn compile_parts(text: &str, file: &Path) -> Result<(Policy, Vec<Located>), Vec<Located>> {
    let root: Table = toml::from_str(text).map_err(|e| {
        // toml's own position comes back through its span; keep its one-line message.
        vec![Located {
            path: vec![format!("@{}", e.span().map_or(0, |s| s.start))],
            message: e.message().trim().to_string(),
        }]
    })?;
    let mut errors = Vec::new();
    let mut as_value = Value::Table(root);
    interpolate_all(&mut as_value, &[], &mut errors);
    let Value::Table(root) = as_value else {
        return Err(vec![err(&[], "a policy file is a TOML table")]);
    };
    let e = &mut errors;
    attempt(e, check_keys(&root, TOP_KEYS, &[], "top-level table"));

    let pol_path = p(&["policy"]);
    let empty = Table::new();
    let pol = match root.get("policy") {
        None => {
            e.push(err(
                &[],
                "missing [policy] table with at least name = \"...\"",
            ));
            &empty
        }
        Some(v) => attempt(e, table(v, &pol_path, "[policy]")).unwrap_or(&empty),
    };
    attempt(
        e,
        check_keys(pol, POLICY_KEYS, &pol_path, "key of [policy]"),
    );
    let name = match pol.get("name") {
        Some(v) => attempt(e, string(v, &child(&pol_path, "name"))).unwrap_or_default(),
        None => {
            if root.contains_key("policy") {
                e.push(err(&pol_path, "[policy] needs name = \"...\""));
            }
            String::new()
        }
    };
    let mut flag = |key: &str, default: bool| match pol.get(key) {
        None => default,
        Some(v) => attempt(
            e,
            v.as_bool()
                .ok_or_else(|| err(&child(&pol_path, key), "expected true or false")),
        )
        .unwrap_or(default),
    };
    let only_raise = flag("only_raise", false);
    let stemming = flag("stemming", true);
    let typos = flag("typos", false);

    // Where plan tiers are read from, for notes and plan-based targets alike.
    let plan = pol.get("plan").and_then(|v| {
        attempt(
            e,
            PlanSource::from_toml(v, "plan").map_err(|m| keyed(&pol_path, m)),
        )
    });

    // Levels: author-named priorities mapped onto Zendesk's four.
    let mut levels = Vec::new();
    if let Some(v) = root.get("levels") {
        let lp = p(&["levels"]);
        for (lname, def) in attempt(e, table(v, &lp, "[levels]")).into_iter().flatten() {
            if let Some(l) = attempt(e, level(lname, def, &child(&lp, lname.clone()))) {
                levels.push(l);
            }
        }
    }
    let level_names: Vec<String> = PRIORITIES
        .iter()
        .map(|s| s.to_string())
        .chain(levels.iter().map(|l| l.name.clone()))
        .collect();

    // Calendars.
    let base = file.parent().unwrap_or(Path::new("."));
    let mut calendars: BTreeMap<String, Calendar> = BTreeMap::new();
    let mut broken_calendar = false;
    if let Some(v) = root.get("calendars") {
        for (cname, spec) in attempt(e, table(v, &p(&["calendars"]), "[calendars]"))
            .into_iter()
            .flatten()
        {
            let at = p(&["calendars", cname]);
            let built = CalendarSpec::deserialize(spec.clone())
                .map_err(|x| err(&at, x.message().trim().to_string()))
                .and_then(|spec| Calendar::build(&spec, base).map_err(|m| keyed(&at, m)));
            match attempt(e, built) {
                Some(cal) => {
                    calendars.insert(cname.clone(), cal);
                }
                None => broken_calendar = true,
            }
        }
    }
    let calendar = match pol.get("calendar") {
        Some(v) => {
            let at = child(&pol_path, "calendar");
            attempt(e, string(v, &at)).and_then(|cname| {
                let known: Vec<&str> = calendars.keys().map(String::as_str).collect();
                let found = calendars.get(&cname).cloned();
                if found.is_none() && !broken_calendar {
                    e.push(if known.is_empty() {
                        err(
                            &at,
                            format!("calendar {cname:?} is not defined: add a [calendars.{cname}] table"),
                        )
                    } else {
                        err(&at, unknown("calendar", &cname, &known))
                    });
                }
                found
            })
        }
        None if calendars.len() == 1 => calendars.values().next().cloned(),
        None if calendars.is_empty() => None,
        None => {
            e.push(err(
                &pol_path,
                "several calendars are defined: say which one the SLA uses with calendar = \"NAME\"",
            ));
            None
        }
    };

    // SLA sets: the default [sla] and named [slas.NAME].
    let sla = root.get("sla").and_then(|v| {
        attempt(
            e,
            Sla::from_toml(v, &level_names, plan.as_ref()).map_err(|m| keyed(&p(&["sla"]), m)),
        )
    });
    let mut slas = BTreeMap::new();
    if let Some(v) = root.get("slas") {
        for (sname, s) in attempt(e, table(v, &p(&["slas"]), "[slas]"))
            .into_iter()
            .flatten()
        {
            let built = Sla::from_toml(s, &level_names, plan.as_ref())
                .map_err(|m| keyed(&p(&["slas", sname]), m));
            if let Some(s) = attempt(e, built) {
                slas.insert(sname.clone(), s);
            }
        }
    }
    let has_sla = root.contains_key("sla") || root.contains_key("slas");
    if has_sla && calendar.is_none() && !broken_calendar && !pol.contains_key("calendar") {
        e.push(err(
            &p(&["sla"]),
            "SLA targets need a business calendar: add [calendars.NAME] with timezone and hours",
        ));
    }

    let fields = match root.get("fields") {
        None => Fields::default(),
        Some(v) => attempt(e, fields(v, has_sla)).unwrap_or_default(),
    };

    let vocabularies = root.get("words").map(|v| words(v, e)).unwrap_or_default();
    let mut phrases = Phrases::new(stemming);
    let mut compiler = Compiler {
        phrases: &mut phrases,
        has_calendar: calendar.is_some() || broken_calendar,
        vocabularies: &vocabularies,
        typos,
        expanded: Default::default(),
        used: Default::default(),
    };
    let scope = pol
        .get("scope")
        .and_then(|v| attempt(e, condition(&mut compiler, v, &child(&pol_path, "scope"))));

    let mut rules = Vec::new();
    if let Some(v) = root.get("rule") {
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = p(&["rule", &i.to_string()]);
                    let compiled = rule(&mut compiler, item, &at, &levels, &slas, sla.is_some());
                    if let Some(r) = attempt(e, compiled) {
                        rules.push(r);
                    }
                }
            }
            _ => e.push(err(&p(&["rule"]), "rules are written as [[rule]] tables")),
        }
    }
    let unclassified = root.get("unclassified").and_then(|v| {
        let at = p(&["unclassified"]);
        attempt(
            e,
            unclassified_rule(&mut compiler, v, &at, &levels, &slas, sla.is_some()),
        )
    });
    let unused: Vec<String> = vocabularies
        .keys()
        .filter(|k| !compiler.used.contains(*k))
        .cloned()
        .collect();
    let mut names = std::collections::HashSet::new();
    for r in &rules {
        if !names.insert(r.name.clone()) {
            e.push(err(
                &child(&r.line_path, "name"),
                format!("two rules are named {:?}; names must be unique", r.name),
            ));
        }
    }
    attempt(e, phrases.build().map_err(|m| err(&[], m)));

    let mut tests = Vec::new();
    if let Some(v) = root.get("test") {
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = p(&["test", &i.to_string()]);
                    if let Some(t) = attempt(e, TestCase::parse(item, &at, &level_names)) {
                        tests.push(t);
                    }
                }
            }
            _ => e.push(err(&p(&["test"]), "tests are written as [[test]] tables")),
        }
    }
    let clock_rules = sla
        .as_ref()
        .map(Sla::rules)
        .filter(|r| calendar.is_some() && !r.metrics.is_empty());
    let policy = Policy {
        name,
        source: file.to_path_buf(),
        only_raise,
        plan,
        scope,
        phrases,
        rules,
        levels,
        calendar,
        sla,
        clock_rules,
        slas,
        fields,
        tests,
        unclassified,
        unused_vocabularies: unused,
    };
    Ok((policy, errors))
}

/// `[words]`: named vocabularies, `name = ["phrase", "@other", ...]` or
/// `name = { terms = [...], typos = true }`. Every reference is checked here, with its position.
fn words(v: &Value, e: &mut Vec<Located>) -> BTreeMap<String, Vocabulary> {
    let wp = p(&["words"]);
    let mut out = BTreeMap::new();
    let mut places: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, def) in attempt(e, table(v, &wp, "[words]")).into_iter().flatten() {
        let at = child(&wp, name.clone());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            e.push(err(
                &at,
                format!("vocabulary name {name:?}: use letters, digits, _ or -"),
            ));
            continue;
        }
        let (terms_at, list, typos) = match def {
            Value::Array(_) => (at.clone(), strings(def, &at), false),
            Value::Table(t) => {
                if attempt(e, check_keys(t, WORDS_KEYS, &at, "key of a vocabulary")).is_none() {
                    continue;
                }
                let tp = child(&at, "terms");
                let list = match t.get("terms") {
                    Some(l) => strings(l, &tp),
                    None => Err(err(&at, "a vocabulary table needs terms = [\"...\"]")),
                };
                let typos = match t.get("typos") {
                    None => false,
                    Some(Value::Boolean(b)) => *b,
                    Some(_) => {
                        e.push(err(&child(&at, "typos"), "expected true or false"));
                        false
                    }
                };
                (tp, list, typos)
            }
            _ => {
                e.push(err(
                    &at,
                    format!("a vocabulary is a list of phrases, like {name} = [\"not syncing\", \"stuck\"]"),
                ));
                continue;
            }
        };
        let Some(terms) = attempt(e, list) else {
            continue;
        };
        if terms.is_empty() {
            e.push(err(&terms_at, format!("vocabulary @{name} has no phrases")));
            continue;
        }
        places.insert(name.clone(), terms_at);
        out.insert(name.clone(), Vocabulary { terms, typos });
    }
    // References: known names, and no circle.
    let names: Vec<String> = out.keys().map(|k| format!("@{k}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut broken = Vec::new();
    for (name, v) in &out {
        for (i, t) in v.terms.iter().enumerate() {
            let at = child(&places[name], i.to_string());
            match t.trim().strip_prefix('@') {
                Some(r) if !out.contains_key(r) => {
                    e.push(err(&at, unknown("vocabulary", &format!("@{r}"), &names)));
                    broken.push(name.clone());
                }
                Some(_) => {}
                None if !t.chars().any(char::is_alphanumeric) => {
                    e.push(err(&at, format!("{t:?} has no words to match")));
                    broken.push(name.clone());
                }
                None => {}
            }
        }
    }
    for name in out.keys() {
        if let Some(cycle) = circle(&out, name, &mut vec![name.clone()]) {
            e.push(err(
                &places[name],
                format!(
                    "vocabularies name each other in a circle: @{}",
                    cycle.join(" → @")
                ),
            ));
            broken.push(name.clone());
        }
    }
    for b in broken {
        out.remove(&b);
    }
    out
}

/// A chain of references from `chain`'s last vocabulary back to its first, if there is one.
fn circle(
    all: &BTreeMap<String, Vocabulary>,
    start: &str,
    chain: &mut Vec<String>,
) -> Option<Vec<String>> {
    let last = chain.last()?.clone();
    for r in all
        .get(&last)
        .into_iter()
        .flat_map(|v| &v.terms)
        .filter_map(|t| t.trim().strip_prefix('@'))
    {
        if r == start {
            let mut c = chain.clone();
            c.push(r.to_string());
            return Some(c);
        }
        if chain.iter().any(|c| c == r) {
            continue;
        }
        chain.push(r.to_string());
        if let Some(c) = circle(all, start, chain) {
            return Some(c);
        }
        chain.pop();
    }
    None
}

/// `[unclassified]`: what a ticket gets when no rule gave it a level.
fn unclassified_rule(
    c: &mut Compiler<'_>,
    v: &Value,
    at: &[String],
    levels: &[Level],
    slas: &BTreeMap<String, Sla>,
    has_default_sla: bool,
) -> Result<Rule, Located> {
    let t = table(v, at, "[unclassified]")?;
    for k in t.keys() {
        if !UNCLASSIFIED_KEYS.contains(&k.as_str()) {
            let why = match k.as_str() {
                "when" | "name" | "stop" | "raise" => format!(
                    "[unclassified] takes no `{k}`: it applies exactly when no rule set a priority or level"
                ),
                _ => unknown("key of [unclassified]", k, UNCLASSIFIED_KEYS),
            };
            return Err(err(&child(at, k.clone()), why));
        }
    }
    let mut named = t.clone();
    named.insert("name".into(), Value::String("[unclassified]".into()));
    rule(c, &Value::Table(named), at, levels, slas, has_default_sla)
}

/// One `[levels]` entry.
fn level(lname: &str, def: &Value, at: &[String]) -> Result<Level, Located> {
    let (prio, tag) = match def {
        Value::String(s) => (s.clone(), None),
        Value::Table(t) => {
            check_keys(t, &["priority", "tag"], at, "key of a level")?;
            let prio = string(
                t.get("priority").ok_or_else(|| {
                    err(at, "a level needs priority = \"urgent|high|normal|low\"")
                })?,
                &child(at, "priority"),
            )?;
            let tag = t
                .get("tag")
                .map(|v| tags(&Value::Array(vec![v.clone()]), &child(at, "tag")))
                .transpose()?
                .and_then(|mut v| v.pop());
            (prio, tag)
        }
        _ => {
            return Err(err(
                at,
                "a level is \"urgent\" or { priority = \"urgent\", tag = \"...\" }",
            ))
        }
    };
    let priority: Priority = prio
        .parse()
        .map_err(|x: crate::ticket::UnknownPriority| err(at, x.to_string()))?;
    Ok(Level {
        name: lname.to_lowercase(),
        priority,
        tag,
    })
}

/// The `[fields]` table: where due times are written.
fn fields(v: &Value, has_sla: bool) -> Result<Fields, Located> {
    let fp = p(&["fields"]);
    let t = table(v, &fp, "[fields]")?;
    check_keys(t, FIELDS_KEYS, &fp, "key of [fields]")?;
    if !has_sla {
        return Err(err(
            &fp,
            "[fields] maps SLA due times, but the policy has no [sla]",
        ));
    }
    let field = |key: &str| -> Result<Option<(u64, FieldKind)>, Located> {
        let Some(v) = t.get(key) else { return Ok(None) };
        let at = child(&fp, key);
        // An id that is empty (e.g. `${DESKBOT_FIELD_X:-}` with the variable unset) maps nothing.
        let empty = |v: &Value| v.as_str().is_some_and(|s| s.trim().is_empty());
        if empty(v) || v.as_table().and_then(|ft| ft.get("id")).is_some_and(empty) {
            return Ok(None);
        }
        Ok(Some(match v {
            Value::Table(ft) => {
                check_keys(ft, &["id", "type"], &at, "key of a field")?;
                let fid = id(
                    ft.get("id").ok_or_else(|| err(&at, "needs id = ..."))?,
                    &child(&at, "id"),
                )?;
                let kind = match ft
                    .get("type")
                    .map(|k| string(k, &child(&at, "type")))
                    .transpose()?
                    .as_deref()
                {
                    None | Some("text") => FieldKind::Text,
                    Some("date") => FieldKind::Date,
                    Some(other) => {
                        return Err(err(
                            &child(&at, "type"),
                            format!("field type {other:?}: expected \"date\" or \"text\""),
                        ))
                    }
                };
                (fid, kind)
            }
            other => (id(other, &at)?, FieldKind::Text),
        }))
    };
    Ok(Fields {
        first_response_due: field("first_response_due")?,
        resolution_due: field("resolution_due")?,
        task_due_at: match t.get("task_due_at") {
            None => None,
            Some(v) => Some(match string(v, &child(&fp, "task_due_at"))?.as_str() {
                "first_response" => DueKind::FirstResponse,
                "resolution" => DueKind::Resolution,
                other => {
                    return Err(err(
                        &child(&fp, "task_due_at"),
                        format!("{other:?}: expected \"first_response\" or \"resolution\""),
                    ))
                }
            }),
        },
    })
}

fn rule(
    c: &mut Compiler<'_>,
    item: &Value,
    at: &[String],
    levels: &[Level],
    slas: &BTreeMap<String, Sla>,
    has_default_sla: bool,
) -> Result<Rule, Located> {
    let t = table(item, at, "a [[rule]]")?;
    check_keys(t, RULE_KEYS, at, "key of a rule")?;
    let name = string(
        t.get("name")
            .ok_or_else(|| err(at, "a rule needs name = \"...\""))?,
        &child(at, "name"),
    )?;
    let on = match t.get("on") {
        None => Some(vec![EventKind::new(EventKind::CREATED)]),
        Some(v) => {
            let list = strings(v, &child(at, "on"))?;
            if list.iter().any(|e| e == "*") {
                None
            } else {
                let mut kinds = Vec::new();
                for (i, e) in list.iter().enumerate() {
                    if !KNOWN_EVENTS.contains(&e.as_str()) {
                        return Err(err(
                            &child(&child(at, "on"), i.to_string()),
                            unknown("event", e, KNOWN_EVENTS),
                        ));
                    }
                    kinds.push(EventKind::new(e));
                }
                Some(kinds)
            }
        }
    };
    let when = match t.get("when") {
        Some(v) => condition(c, v, &child(at, "when"))?,
        None => Condition::All(Vec::new()),
    };
    let priority = match t.get("priority") {
        None => None,
        Some(v) => {
            let pp = child(at, "priority");
            let s = string(v, &pp)?.to_lowercase();
            Some(match levels.iter().find(|l| l.name == s) {
                Some(l) => LevelRef {
                    level: Some(l.name.clone()),
                    priority: l.priority,
                },
                None => LevelRef {
                    level: None,
                    priority: s.parse().map_err(|_| {
                        let mut known: Vec<&str> = PRIORITIES.to_vec();
                        known.extend(levels.iter().map(|l| l.name.as_str()));
                        err(&pp, unknown("priority", &s, &known))
                    })?,
                },
            })
        }
    };
    let mut set_fields = Vec::new();
    if let Some(v) = t.get("set_fields") {
        let fp = child(at, "set_fields");
        for (k, val) in table(v, &fp, "set_fields")? {
            let fid = id(&Value::String(k.clone()), &child(&fp, k.clone()))?;
            let json = serde_json::to_value(val)
                .map_err(|e| err(&child(&fp, k.clone()), e.to_string()))?;
            set_fields.push((fid, json));
        }
    }
    let sla = match t.get("sla") {
        None => None,
        Some(v) => {
            let sp = child(at, "sla");
            let s = string(v, &sp)?;
            if s != "default" && !slas.contains_key(&s) {
                let mut known: Vec<&str> = slas.keys().map(String::as_str).collect();
                if has_default_sla {
                    known.push("default");
                }
                return Err(err(&sp, unknown("SLA set", &s, &known)));
            }
            Some(s)
        }
    };
    Ok(Rule {
        line_path: at.to_vec(),
        name,
        on,
        gate: when.necessary_phrases(),
        when,
        priority,
        raise: match t.get("raise") {
            None => 0,
            Some(Value::Integer(n)) if (1..=3).contains(n) => *n as u8,
            Some(_) => {
                return Err(err(
                    &child(at, "raise"),
                    "raise is a number of levels: 1, 2 or 3",
                ))
            }
        },
        add_tags: t
            .get("add_tags")
            .map(|v| tags(v, &child(at, "add_tags")))
            .transpose()?
            .unwrap_or_default(),
        remove_tags: t
            .get("remove_tags")
            .map(|v| tags(v, &child(at, "remove_tags")))
            .transpose()?
            .unwrap_or_default(),
        set_fields,
        group: t
            .get("group")
            .map(|v| id(v, &child(at, "group")))
            .transpose()?,
        note: t
            .get("note")
            .map(|v| {
                string(v, &child(at, "note")).and_then(|s| template(s.trim(), &child(at, "note")))
            })
            .transpose()?,
        notify: t
            .get("notify")
            .map(|v| {
                string(v, &child(at, "notify"))
                    .and_then(|s| template(s.trim(), &child(at, "notify")))
            })
            .transpose()?,
        sla,
        stop: match t.get("stop") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| err(&child(at, "stop"), "expected true or false"))?,
        },
    })
}

/// Warnings: rules that can never match, rules shadowed by an unconditional `stop` above them,
/// and note placeholders that are always empty for the policy as written.
pub fn lint(policy: &Policy) -> Vec<Located> {
    let mut out = Vec::new();
    for name in &policy.unused_vocabularies {
        out.push(Located::new(
            &p(&["words", name]),
            format!("vocabulary @{name} is not used by any rule"),
        ));
    }
    for r in &policy.rules {
        for (key, t) in [("note", &r.note), ("notify", &r.notify)] {
            for why in t.iter().flat_map(|t| empty_placeholders(policy, r, t)) {
                out.push(Located::new(&child(&r.line_path, key), why));
            }
        }
    }
    for (i, r) in policy.rules.iter().enumerate() {
        if let Some(why) = never_matches(&r.when) {
            out.push(Located::new(
                &child(&r.line_path, "when"),
                format!("rule {:?} can never match: {why}", r.name),
            ));
        }
        let shadow = policy.rules[..i].iter().find(|above| {
            above.stop
                && matches!(&above.when, Condition::All(v) if v.is_empty())
                && match (&above.on, &r.on) {
                    (None, _) => true,
                    (Some(a), Some(b)) => b.iter().all(|e| a.contains(e)),
                    (Some(_), None) => false,
                }
        });
        if let Some(above) = shadow {
            out.push(Located::new(
                &child(&r.line_path, "name"),
                format!(
                    "rule {:?} never runs: rule {:?} above always matches and has stop = true",
                    r.name, above.name
                ),
            ));
        }
    }
    out
}

/// Why each placeholder of `t` would always render empty in rule `r` of `policy`.
fn empty_placeholders(policy: &Policy, r: &Rule, t: &Template) -> Vec<String> {
    let sla_event =
        r.on.as_ref()
            .is_none_or(|on| on.iter().any(|e| e.as_str().starts_with("sla.")));
    let mut out = Vec::new();
    for piece in &t.0 {
        let Piece::Var(v) = piece else { continue };
        let name = Var::ALL
            .iter()
            .find(|(_, x)| x == v)
            .map_or("?", |(n, _)| *n);
        let why = match v {
            Var::Plan if policy.plan_source().is_none() => {
                "the policy reads no plan tier: add plan = { organization_field = \"plan\" } (or { tag_prefix = \"plan_\" }) to [policy]"
            }
            Var::Level if policy.levels.is_empty() => "the policy defines no [levels]",
            Var::Metric | Var::Target | Var::Due | Var::MissedBy if !sla_event => {
                "it has a value only in rules that react to sla.at_risk or sla.breached"
            }
            _ => continue,
        };
        out.push(format!(
            "rule {:?}: {{{{{name}}}}} is always empty here: {why}",
            r.name
        ));
    }
    out
}

fn never_matches(c: &Condition) -> Option<String> {
    match c {
        Condition::Any(v) if v.is_empty() => Some("`any` with an empty list is never true".into()),
        Condition::Not(inner) if matches!(inner.as_ref(), Condition::All(v) if v.is_empty()) => {
            Some("`not` of an empty condition is never true".into())
        }
        Condition::All(parts) => {
            if let Some(why) = parts.iter().find_map(never_matches) {
                return Some(why);
            }
            // Two different `equals` on one single-valued field.
            let mut seen: Vec<(&Field, &str)> = Vec::new();
            for part in parts {
                if let Condition::Test(f, Op::Equals(v)) = part {
                    if single_valued(f) {
                        if let Some((_, other)) = seen.iter().find(|(sf, sv)| *sf == f && sv != v) {
                            return Some(
                                format!("{f:?} cannot equal both {other:?} and {v:?}")
                                    .to_lowercase(),
                            );
                        }
                        seen.push((f, v));
                    }
                }
            }
            None
        }
        _ => None,
    }
}

fn single_valued(f: &Field) -> bool {
    !matches!(f, Field::Tags | Field::AnyText)
}
