//! `deskbot init`: a starting policy for a new account that passes `check` and `test` at once.
//!
//! The file is written from the answers given (time zone, hours, holidays, targets per priority);
//! its `[[test]]` due times are computed with the same calendar code `serve` uses, so they hold by
//! construction and show the author what their targets mean on their hours.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::calendar::{Calendar, CalendarSpec, HolidaySpec, Hours, Span};

/// What the policy is scaffolded from (`deskbot init`'s options).
#[derive(Debug, Clone, clap::Args)]
pub struct Answers {
    /// The policy's name.
    #[arg(long, default_value = "Support")]
    pub name: String,
    /// The support team's time zone (IANA name).
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// Opening hours, DAYS=HH:MM-HH:MM (repeat for several).
    #[arg(long, default_value = "mon-fri=09:00-17:00")]
    pub hours: Vec<String>,
    /// Holidays: us-federal, or dates YYYY-MM-DD (repeat for several).
    #[arg(long)]
    pub holidays: Vec<String>,
    /// Your own level names, NAME=PRIORITY (e.g. critical=urgent; repeat for several). Targets
    /// may then name the levels.
    #[arg(long = "level")]
    pub levels: Vec<String>,
    /// First-response targets, PRIORITY=DURATION or LEVEL=DURATION (repeat for several).
    #[arg(long = "first-response", default_values = ["urgent=2 business hours", "high=1 business day", "normal=2 business days", "low=3 business days"])]
    pub first_response: Vec<String>,
    /// Resolution targets, PRIORITY=DURATION or LEVEL=DURATION (repeat for several).
    #[arg(long, default_values = ["urgent=1 business day", "high=3 business days", "normal=5 business days", "low=10 business days"])]
    pub resolution: Vec<String>,
}

const PRIORITIES: [&str; 4] = ["urgent", "high", "normal", "low"];

/// `NAME=PRIORITY` level definitions, checked.
fn levels(list: &[String]) -> Result<Vec<(String, String)>, String> {
    list.iter()
        .map(|pair| {
            let (name, prio) = pair
                .split_once('=')
                .ok_or_else(|| format!("--level {pair:?}: write NAME=PRIORITY, e.g. critical=urgent"))?;
            let (name, prio) = (name.trim().to_ascii_lowercase(), prio.trim().to_ascii_lowercase());
            let word = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !word || PRIORITIES.contains(&name.as_str()) {
                return Err(format!(
                    "--level {pair:?}: a level name is one word other than urgent, high, normal or low"
                ));
            }
            if !PRIORITIES.contains(&prio.as_str()) {
                return Err(format!(
                    "--level {pair:?}: {prio:?} is not a priority: use urgent, high, normal or low"
                ));
            }
            Ok((name, prio))
        })
        .collect()
}

/// `level=duration` pairs, checked; `known` are the level names besides the priorities.
fn targets(
    list: &[String],
    flag: &str,
    known: &[(String, String)],
) -> Result<Vec<(String, Span)>, String> {
    list.iter()
        .map(|pair| {
            let (level, span) = pair.split_once('=').ok_or_else(|| {
                format!("{flag} {pair:?}: write PRIORITY=DURATION, e.g. urgent=\"3 business hours\"")
            })?;
            let level = level.trim().to_ascii_lowercase();
            if !PRIORITIES.contains(&level.as_str()) && !known.iter().any(|(n, _)| *n == level) {
                return Err(format!(
                    "{flag} {pair:?}: {level:?} is not a priority: use urgent, high, normal or low{}",
                    if known.is_empty() { String::new() } else {
                        let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
                        format!(", or a level: {}", names.join(", "))
                    }
                ));
            }
            let span: Span = span.trim().parse().map_err(|e| format!("{flag}: {e}"))?;
            Ok((level, span))
        })
        .collect()
}

/// The calendar the answers describe, checked as `check` would.
fn calendar(a: &Answers) -> Result<(CalendarSpec, Calendar), String> {
    let mut hours = std::collections::BTreeMap::new();
    for h in &a.hours {
        let (days, span) = h.split_once('=').ok_or_else(|| {
            format!("--hours {h:?}: write DAYS=HH:MM-HH:MM, e.g. mon-fri=09:00-17:00")
        })?;
        hours.insert(days.trim().to_string(), Hours::One(span.trim().to_string()));
    }
    let spec = CalendarSpec {
        timezone: a.timezone.clone(),
        hours,
        holidays: a.holidays.iter().cloned().map(HolidaySpec::Named).collect(),
    };
    let cal = Calendar::build(&spec, Path::new(".")).map_err(|e| format!("calendar: {e}"))?;
    Ok((spec, cal))
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// The policy text.
pub fn render(a: &Answers) -> Result<String, String> {
    if a.name.trim().is_empty() {
        return Err("--name: give the policy a name".into());
    }
    let (spec, cal) = calendar(a)?;
    let named = levels(&a.levels)?;
    let first = targets(&a.first_response, "--first-response", &named)?;
    let resolution = targets(&a.resolution, "--resolution", &named)?;
    let mut out = String::new();
    let w = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(w, "#:schema ./deskbot.schema.json");
    let _ = writeln!(
        w,
        "# {} — made by `deskbot init`. The language: docs/rules.md; calendars: docs/calendars.md;",
        a.name
    );
    let _ = writeln!(w, "# SLA clocks and escalation: docs/sla.md. Check it with `deskbot check` and `deskbot test`.\n");
    let _ = writeln!(
        w,
        "[policy]\nname = {}\ncalendar = \"support_hours\"",
        quote(&a.name)
    );
    let _ = writeln!(w, "# Agents' manual priorities survive: a rule never lowers a priority already on the ticket.\nonly_raise = true\n");
    if !named.is_empty() {
        let _ = writeln!(
            w,
            "# Your levels, each mapped onto a Zendesk priority and tagged on the ticket.\n[levels]"
        );
        for (name, prio) in &named {
            let _ = writeln!(
                w,
                "{name} = {{ priority = {}, tag = {} }}",
                quote(prio),
                quote(name)
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "[calendars.support_hours]\ntimezone = {}",
        quote(&spec.timezone)
    );
    let hours: Vec<String> = spec
        .hours
        .iter()
        .map(|(d, h)| match h {
            Hours::One(s) => format!("{d} = {}", quote(s)),
            Hours::Many(v) => format!("{d} = {v:?}"),
        })
        .collect();
    let _ = writeln!(w, "hours = {{ {} }}", hours.join(", "));
    let holidays: Vec<String> = a.holidays.iter().map(|h| quote(h)).collect();
    let _ = writeln!(w, "holidays = [{}]\n", holidays.join(", "));
    let _ = writeln!(w, "[sla]\npause_on = [\"pending\"]          # resolution waits while the customer owes an answer\nwarn_before = \"30 business minutes\"  # when the at-risk escalation below fires\n");
    let mut order: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    order.extend(PRIORITIES);
    for level in order {
        let f = first.iter().find(|(l, _)| l == level);
        let r = resolution.iter().find(|(l, _)| l == level);
        if f.is_none() && r.is_none() {
            continue;
        }
        let _ = writeln!(w, "[sla.{level}]");
        if let Some((_, s)) = f {
            let _ = writeln!(w, "first_response = {}", quote(&s.to_string()));
        }
        if let Some((_, s)) = r {
            let _ = writeln!(w, "resolution = {}", quote(&s.to_string()));
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "# Vocabularies: lists several rules use, written once and named with @ (\"@not_urgent\")."
    );
    let _ = writeln!(
        w,
        "[words]\nnot_urgent = [\"not urgent\", \"no rush\", \"whenever you can\"]\n"
    );
    let _ = writeln!(w, "# Rules apply in file order; every matching rule adds its tags, the most severe priority wins.");
    let _ = writeln!(w, "[[rule]]\nname = \"urgent in the subject\"\nwhen = {{ all = [\n  {{ subject = {{ has_word = \"urgent\" }} }},\n  {{ not = {{ subject = {{ has_any_word = \"@not_urgent\" }} }} }},\n] }}\npriority = \"urgent\"\nadd_tags = [\"urgent_subject\"]\nnote = \"Classified urgent: the subject says so.\"\n");
    // The urgent ticket's targets come from one [sla] table, as in the policy: its level's (a
    // level mapped onto urgent) when that has any target, else `urgent`'s.
    let has = |key: &str| first.iter().chain(&resolution).any(|(l, _)| l == key);
    let key = named
        .iter()
        .find(|(n, p)| p == "urgent" && has(n))
        .map_or("urgent", |(n, _)| n.as_str());
    let urgent_target = |list: &[(String, Span)]| -> Option<Span> {
        list.iter().find(|(l, _)| l == key).map(|(_, s)| *s)
    };
    let urgent_first = urgent_target(&first);
    let urgent_resolution = urgent_target(&resolution);
    let escalated = urgent_first.is_some();
    if escalated {
        let _ = writeln!(w, "[[rule]]\nname = \"urgent ticket without a first reply, target missed\"\non = [\"sla.breached\"]\nwhen = {{ all = [{{ sla_metric = {{ equals = \"first_response\" }} }}, {{ priority = {{ equals = \"urgent\" }} }}] }}\nadd_tags = [\"sla_breached_first_response\"]\nnote = \"SLA breached: the {{{{sla.metric}}}} target ({{{{sla.target}}}}) was missed by {{{{sla.missed_by}}}}.\"\n");
    }
    // A Monday, 10:00 on the policy's own clock.
    let created = example_start(&cal)?;
    let local = |t: DateTime<Utc>| t.with_timezone(&cal.timezone()).to_rfc3339();
    let mut expect = vec![
        "priority = \"urgent\"".to_string(),
        "tags = [\"urgent_subject\"]".to_string(),
    ];
    if let Some(s) = urgent_first {
        expect.push(format!(
            "first_response_due = {}",
            quote(&local(cal.add(created, s)))
        ));
    }
    match urgent_resolution {
        Some(s) => expect.push(format!(
            "resolution_due = {}",
            quote(&local(cal.add(created, s)))
        )),
        None => expect.push("resolution_due = \"none\"".into()),
    }
    let _ = writeln!(w, "# A ticket no rule classified is never left silently: it is tagged for triage.\n[unclassified]\nadd_tags = [\"deskbot_unclassified\"]\nnote = \"No rule classified this ticket: please set its priority by hand.\"\n");
    let _ = writeln!(w, "[[test]]\nname = \"urgent in the subject\"\nticket = {{ subject = \"URGENT: checkout is down\", created_at = {} }}\nexpect = {{ {} }}\n", quote(&local(created)), expect.join(", "));
    let _ = writeln!(w, "[[test]]\nname = \"not urgent: no rule classifies it, so [unclassified] tags it for triage\"\nticket = {{ subject = \"Not urgent: a question about invoices\", created_at = {} }}\nexpect = {{ priority = \"none\", tags = [\"deskbot_unclassified\"], absent_tags = [\"urgent_subject\"] }}", quote(&local(created)));
    if let (true, Some(s)) = (escalated, urgent_first) {
        let due = cal.add(created, s);
        let _ = writeln!(w, "\n[[test]]\nname = \"urgent, no reply: escalated at the breach\"\nticket = {{ subject = \"URGENT: checkout is down\", created_at = {} }}\nsla = {{ until = {}, first_response = \"breached\", tags = [\"sla_breached_first_response\"] }}", quote(&local(created)), quote(&local(due)));
    }
    Ok(out)
}

/// Monday 23 November 2026, 10:00 in the calendar's zone.
fn example_start(cal: &Calendar) -> Result<DateTime<Utc>, String> {
    let day = NaiveDate::from_ymd_opt(2026, 11, 23).ok_or("bad example date")?;
    let naive = day.and_hms_opt(10, 0, 0).ok_or("bad example time")?;
    cal.timezone()
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| "the example time does not exist in this time zone".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn answers() -> Answers {
        Answers {
            name: "Acme support".into(),
            timezone: "Europe/Berlin".into(),
            hours: vec!["mon-fri=09:00-17:00".into()],
            holidays: vec!["2026-12-24".into()],
            levels: vec![],
            first_response: vec![
                "urgent=2 business hours".into(),
                "high=1 business day".into(),
            ],
            resolution: vec!["urgent=3 business days".into()],
        }
    }

    #[test]
    fn the_scaffold_passes_check_and_its_tests() {
        let text = render(&answers()).unwrap();
        let loaded =
            Policy::parse(&text, Path::new("acme.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(loaded.warnings.is_empty());
        let p = loaded.policy;
        assert_eq!(p.tests().len(), 3);
        for case in p.tests() {
            assert_eq!(case.run(&p), Ok(()), "{}\n{text}", case.name);
        }
        assert!(
            text.contains("first_response_due = \"2026-11-23T12:00:00+01:00\""),
            "{text}"
        );
    }

    #[test]
    fn levels_are_defined_and_targets_may_name_them() {
        let mut a = answers();
        a.levels = vec!["critical=urgent".into(), "minor=low".into()];
        a.first_response = vec![
            "critical=1 business hour".into(),
            "minor=5 business days".into(),
        ];
        let text = render(&a).unwrap();
        assert!(
            text.contains("[levels]\ncritical = { priority = \"urgent\", tag = \"critical\" }"),
            "{text}"
        );
        assert!(
            text.contains("[sla.critical]\nfirst_response = \"1 business hour\""),
            "{text}"
        );
        let loaded =
            Policy::parse(&text, Path::new("acme.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let p = loaded.policy;
        for case in p.tests() {
            assert_eq!(case.run(&p), Ok(()), "{}\n{text}", case.name);
        }
        assert!(
            text.contains("first_response_due = \"2026-11-23T11:00:00+01:00\""),
            "{text}"
        );
        let mut a = answers();
        a.levels = vec!["urgent=high".into()];
        assert!(render(&a)
            .unwrap_err()
            .contains("a level name is one word other than urgent"));
    }

    #[test]
    fn bad_answers_say_what_to_write() {
        let mut a = answers();
        a.timezone = "Berlin".into();
        assert!(render(&a)
            .unwrap_err()
            .starts_with("calendar: timezone: unknown time zone \"Berlin\""));
        let mut a = answers();
        a.first_response = vec!["critical=1 business day".into()];
        assert_eq!(
            render(&a).unwrap_err(),
            "--first-response \"critical=1 business day\": \"critical\" is not a priority: use urgent, high, normal or low"
        );
        let mut a = answers();
        a.hours = vec!["weekdays".into()];
        assert!(render(&a)
            .unwrap_err()
            .starts_with("--hours \"weekdays\": write DAYS=HH:MM-HH:MM"));
    }
}
