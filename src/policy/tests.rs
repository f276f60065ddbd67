//! Precedence, levels, SLA wiring, scopes and load errors, through the policy's public surface.

use super::*;
use crate::ticket::EventKind;

const POLICY: &str = r#"
[policy]
name = "test"
only_raise = true

[[rule]]
name = "urgent-subject"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
add_tags = ["escalated"]
note = "URGENT in the subject of #{{ticket.id}}."

[[rule]]
name = "billing"
when = { text = { has_any_word = ["invoice", "refund"] } }
priority = "low"
add_tags = ["billing"]
remove_tags = ["escalated"]
group = 42

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
        id: 7,
        subject: subject.into(),
        event: Some(EventKind::new(event)),
        ..Ticket::default()
    }
}

fn policy(src: &str) -> Policy {
    Policy::parse(src, Path::new("p.toml"))
        .map(|l| l.policy)
        .unwrap()
}

fn error(src: &str) -> String {
    Policy::parse(src, Path::new("p.toml"))
        .err()
        .unwrap()
        .to_string()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn all_matching_rules_apply_and_most_severe_priority_wins() {
    let d = policy(POLICY).decide(&ticket("URGENT refund please", "created"), Utc::now());
    assert_eq!(d.priority, Some(Priority::Urgent));
    assert_eq!(d.add_tags, vec!["escalated", "billing"]);
    assert!(
        d.remove_tags.is_empty(),
        "a tag both added and removed is added"
    );
    assert_eq!(d.matched_rules, vec!["urgent-subject", "billing"]);
    assert_eq!(d.group_id, Some(42));
    assert_eq!(
        d.note.as_deref(),
        Some("[deskbot] URGENT in the subject of #7.")
    );
}

#[test]
fn only_raise_keeps_a_higher_manual_priority() {
    let mut t = ticket("refund", "created");
    t.priority = Some(Priority::High);
    assert_eq!(policy(POLICY).decide(&t, Utc::now()).priority, None);
}

#[test]
fn rules_react_to_created_by_default_and_stop_ends_evaluation() {
    let p = policy(POLICY);
    assert_eq!(
        p.decide(&ticket("URGENT", "priority_changed"), Utc::now()),
        Decision::default()
    );
    let mut t = ticket("x", "comment_added");
    t.latest_comment = Some("please escalate this".into());
    assert_eq!(p.decide(&t, Utc::now()).add_tags, vec!["asked_to_escalate"]);
}

const LEVELS: &str = r#"
[policy]
name = "storeconnect"

[levels]
critical = { priority = "urgent", tag = "sc_critical" }
high = { priority = "high", tag = "sc_high" }
medium = { priority = "normal", tag = "sc_medium" }

[calendars.support]
timezone = "Australia/Sydney"
hours = { mon-fri = "09:00-17:00" }

[sla]
note = true
plan = { organization_field = "plan" }
[sla.critical]
first_response = { flagship = "1 business day", default = "3 business days" }

[slas.premium.critical]
first_response = "2 business hours"

[[rule]]
name = "store down"
when = { text = { near = { terms = ["store", "down"], within = 2 } } }
priority = "critical"
note = "Level {{level}} ({{priority}}), plan {{plan}}: respond by {{first_response_due}}."

[[rule]]
name = "premium"
when = { tags = { equals = "premium" } }
sla = "premium"

[[rule]]
name = "training"
when = { text = { has_word = "training" } }
priority = "medium"
"#;

#[test]
fn levels_map_onto_priorities_with_tags_and_sla() {
    let p = policy(LEVELS);
    let mut t = ticket("Our store is down!", "created");
    t.created_at = Some(at("2026-11-23T10:00:00+11:00"));
    t.tags = vec!["sc_medium".into()];
    let d = p.decide(&t, Utc::now());
    assert_eq!(
        (d.priority, d.level.as_deref()),
        (Some(Priority::Urgent), Some("critical"))
    );
    assert_eq!(d.add_tags, vec!["sc_critical"]);
    assert_eq!(d.remove_tags, vec!["sc_high", "sc_medium"]);
    assert_eq!(
        d.first_response_due,
        Some(at("2026-11-26T10:00:00+11:00")),
        "no plan → default 3 business days"
    );
    assert_eq!(
        d.note.as_deref(),
        Some("[deskbot] Level critical (urgent), plan : respond by Thu 26 Nov, 10:00 AEDT.\n\nFirst response due Thu 26 Nov, 10:00 AEDT.")
    );
    t.tags.push("premium".into());
    let d = p.decide(&t, Utc::now());
    assert_eq!(
        d.first_response_due,
        Some(at("2026-11-23T12:00:00+11:00")),
        "the rule chose the premium SLA set"
    );
}

#[test]
fn scopes_route_tickets_and_two_unscoped_policies_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), "[policy]\nname = \"brand a\"\nscope = { brand_id = { equals = 1 } }\n[[rule]]\nname = \"r\"\nadd_tags = [\"a\"]\n").unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "[policy]\nname = \"fallback\"\n[[rule]]\nname = \"r\"\nadd_tags = [\"b\"]\n",
    )
    .unwrap();
    let (set, _) = PolicySet::load(dir.path()).unwrap();
    let mut t = ticket("x", "created");
    t.brand_id = Some(1);
    assert_eq!(set.decide(&t, Utc::now()).add_tags, vec!["a"]);
    t.brand_id = Some(2);
    assert_eq!(set.decide(&t, Utc::now()).add_tags, vec!["b"]);
    std::fs::write(dir.path().join("c.toml"), "[policy]\nname = \"another\"\n").unwrap();
    let e = PolicySet::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("2 policies have no [policy] scope"), "{e}");
}

#[test]
fn every_error_has_file_line_col() {
    assert!(
        error("[policy]\nname = 1\n").starts_with("p.toml:2:1: expected a string, found integer")
    );
    assert!(error("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\nwhen = { subjet = { has_word = \"x\" } }\n")
        .starts_with("p.toml:5:10: unknown field `subjet` (did you mean `subject`?)"));
    assert!(
        error("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\npriorty = \"high\"\n")
            .starts_with("p.toml:5:1: unknown key of a rule `priorty` (did you mean `priority`?)")
    );
    assert!(
        error("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\npriority = \"critical\"\n")
            .starts_with("p.toml:5:1: unknown priority `critical`")
    );
    assert!(
        error("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\non = [\"create\"]\n")
            .starts_with("p.toml:5:7: unknown event `create` (did you mean `created`?)")
    );
    assert!(error(
        "[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\nnote = \"{{ticket.subjet}}\"\n"
    )
    .contains("unknown placeholder `ticket.subjet` (did you mean `ticket.subject`?)"));
    assert!(
        error("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\nadd_tags = [\"two words\"]\n")
            .starts_with("p.toml:5:13: \"two words\" is not a Zendesk tag")
    );
    assert!(error("[policy\nname = \"n\"\n").starts_with("p.toml:1:8:"));
    assert!(error("[policy]\nname = \"n\"\n[rules]\n")
        .contains("unknown top-level table `rules` (did you mean `rule`?)"));
    assert!(error("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\nset_fields = { \"${DESKBOT_TEST_UNSET_VAR}\" = \"x\" }\n")
        .contains("environment variable DESKBOT_TEST_UNSET_VAR is not set"));
    // The offending line is shown under the position.
    let e = error("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\nwhen = { subjet = { has_word = \"x\" } }\n");
    assert!(
        e.contains("\n    when = { subjet = { has_word = \"x\" } }\n             ^"),
        "{e}"
    );
}

#[test]
fn warnings_for_rules_that_cannot_match_or_never_run() {
    let src = "[policy]\nname = \"n\"\n[[rule]]\nname = \"contradiction\"\nwhen = { all = [ { priority = { equals = \"high\" } }, { priority = { equals = \"low\" } } ] }\n[[rule]]\nname = \"catch-all\"\nstop = true\n[[rule]]\nname = \"shadowed\"\nadd_tags = [\"x\"]\n";
    let w: Vec<String> = Policy::parse(src, Path::new("p.toml"))
        .unwrap()
        .warnings
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("p.toml:5:1: warning: rule \"contradiction\" can never match"),
        "{}",
        w[0]
    );
    assert!(w[1].starts_with("p.toml:10:1: warning: rule \"shadowed\" never runs: rule \"catch-all\" above always matches"), "{}", w[1]);
}

#[test]
fn env_defaults_and_unmapped_fields() {
    let p = policy("[policy]\nname = \"n\"\n[calendars.c]\ntimezone = \"UTC\"\nhours = { mon-fri = \"09:00-17:00\" }\n[sla.urgent]\nfirst_response = \"1 business hour\"\n[fields]\nfirst_response_due = { id = \"${DESKBOT_TEST_UNSET_FIELD:-}\", type = \"date\" }\n[[rule]]\nname = \"r\"\nwhen = { recipient = { equals = \"${DESKBOT_TEST_UNSET_ADDRESS:-}\" } }\nraise = 1\n");
    let mut t = ticket("x", "created");
    t.created_at = Some(at("2026-11-23T09:00:00Z"));
    t.priority = Some(Priority::High);
    let d = p.decide(&t, Utc::now());
    assert!(d.fields.is_empty(), "an empty field id maps nothing");
    assert_eq!(d.priority, None, "equals an empty default never matches");
    t.recipient = Some("escalations@farapp.example".into());
    std::env::set_var("DESKBOT_TEST_SET_ADDRESS", "escalations@farapp.example");
    let p = policy("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\nwhen = { recipient = { equals = \"${DESKBOT_TEST_SET_ADDRESS:-}\" } }\nraise = 1\n");
    assert_eq!(
        p.decide(&t, Utc::now()).priority,
        Some(Priority::Urgent),
        "raise one level from the ticket's high"
    );
}

#[test]
fn env_interpolation_reads_account_ids() {
    std::env::set_var("DESKBOT_TEST_GROUP_ID", "360055");
    let p = policy(
        "[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\ngroup = \"${DESKBOT_TEST_GROUP_ID}\"\n",
    );
    assert_eq!(
        p.decide(&ticket("x", "created"), Utc::now()).group_id,
        Some(360055)
    );
}

#[test]
fn explain_gives_spans_and_near_misses() {
    let p = policy("[policy]\nname = \"n\"\n[[rule]]\nname = \"orders\"\nwhen = { all = [ { text = { has_word = \"orders\" } }, { text = { has_word = \"not syncing\" } } ] }\npriority = \"urgent\"\n[[rule]]\nname = \"comment-only\"\non = [\"comment_added\"]\nwhen = { subject = { has_word = \"order\" } }\n");
    let e = p.evaluate(&ticket("Order #12 is stuck", "created"), Utc::now(), true);
    assert!(e.matched.is_empty());
    assert_eq!(e.near_misses.len(), 2);
    assert_eq!(
        e.near_misses[0].reason,
        "all but one condition hold; failed: text has_word \"not syncing\""
    );
    assert!(e.near_misses[1]
        .reason
        .starts_with("conditions hold, but the rule reacts only to [comment_added]"));
    let e = p.evaluate(&ticket("Orders NOT syncing", "created"), Utc::now(), true);
    let evidence: Vec<String> = e.matched[0]
        .evidence
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(
        evidence,
        vec![
            "text has_word \"orders\": \"Orders\" in subject at 0..6".to_string(),
            "text has_word \"not syncing\": \"NOT syncing\" in subject at 7..18".to_string(),
        ]
    );
}

#[test]
fn inline_tests_run_and_report_differences() {
    let src = format!("{LEVELS}\n[[test]]\nname = \"down\"\nticket = {{ subject = \"store down\", created_at = \"2026-11-23T10:00:00+11:00\", organization_fields = {{ plan = \"Flagship\" }} }}\nexpect = {{ priority = \"urgent\", level = \"critical\", tags = [\"sc_critical\"], first_response_due = \"2026-11-24T10:00:00+11:00\" }}\n[[test]]\nname = \"wrong\"\nticket = {{ subject = \"training please\" }}\nexpect = {{ priority = \"high\", absent_tags = [\"sc_medium\"] }}\n");
    let p = policy(&src);
    assert_eq!(p.tests().len(), 2);
    assert_eq!(p.tests()[0].run(&p), Ok(()));
    assert_eq!(
        p.tests()[1].run(&p),
        Err(vec![
            "priority: expected high, got normal".to_string(),
            "tags: [\"sc_medium\"] should be absent; the ticket would have [\"sc_medium\"]"
                .to_string(),
        ])
    );
}

#[test]
fn schema_is_valid_json_with_every_operator() {
    let s = schema::schema();
    assert_eq!(s["$schema"], "http://json-schema.org/draft-04/schema#");
    for op in condition::OPS {
        assert!(
            s["definitions"]["operators"]["properties"]
                .get(*op)
                .is_some(),
            "{op}"
        );
    }
    assert!(s["definitions"]["condition"]["properties"]
        .get("organization_fields")
        .is_some());
    // Vocabularies, the fallback and the reading switches are known keys, as the compiler's are.
    for key in ["words", "unclassified"] {
        assert!(s["properties"].get(key).is_some(), "{key}");
    }
    for key in ["stemming", "typos"] {
        assert!(
            s["properties"]["policy"]["properties"].get(key).is_some(),
            "{key}"
        );
    }
    assert_eq!(
        s["properties"]["words"]["additionalProperties"]["oneOf"][1]["properties"]["typos"]["type"],
        "boolean"
    );
    assert_eq!(
        s["definitions"]["operators"]["properties"]["has_any_word"]["oneOf"][1]["pattern"],
        "^\\s*@"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const POLICY: &str = r#"
[policy]
name = "prop"
[levels]
critical = { priority = "urgent", tag = "lvl_critical" }
[calendars.c]
timezone = "America/Los_Angeles"
hours = { mon-fri = "08:00-18:00" }
holidays = ["us-federal"]
[sla.critical]
first_response = "3 business hours"
[[rule]]
name = "a"
when = { text = { near = { terms = ["orders", "not syncing"], within = 3 } } }
priority = "critical"
note = "{{ticket.subject}} {{first_response_due}}"
[[rule]]
name = "b"
on = ["*"]
when = { any = [ { subject = { regex = "(?i)ürgent|urgent" } }, { text = { has_all_words = ["café", "straße"] } }, { not = { tags = { contains = "x" } } } ] }
add_tags = ["b"]
[[rule]]
name = "c"
when = { description = { has_any_word = ["isn't working", "日本"] } }
priority = "high"
"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn decisions_are_deterministic_and_never_panic(
            subject in "\\PC{0,80}",
            description in "(\\PC|[ \n'’-]){0,400}",
            comment in proptest::option::of("\\PC{0,100}"),
            tags in proptest::collection::vec("[a-z_]{1,8}", 0..4),
            created in 1_577_836_800i64..2_082_758_400,
        ) {
            let p = Policy::parse(POLICY, Path::new("p.toml")).unwrap().policy;
            let t = Ticket {
                id: 1,
                event: Some(EventKind::new("created")),
                subject,
                description,
                latest_comment: comment,
                tags,
                created_at: DateTime::from_timestamp(created, 0),
                ..Ticket::default()
            };
            let now = Utc::now();
            let first = p.decide(&t, now);
            prop_assert_eq!(&first, &p.decide(&t, now));
            // Explaining (every rule, quoted spans) agrees with deciding and does not panic either.
            prop_assert_eq!(&first, &p.evaluate(&t, now, true).decision);
        }
    }
}

#[test]
fn placeholders_that_are_always_empty_are_warned_about_and_plan_works_without_sla() {
    let src = r#"
[policy]
name = "p"
[[rule]]
name = "r"
note = "plan {{plan}}, level {{level}}, due {{sla.due}}"
"#;
    let loaded = Policy::parse(src, Path::new("p.toml")).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(
        warnings,
        vec![
            "rule \"r\": {{plan}} is always empty here: the policy reads no plan tier: add plan = { organization_field = \"plan\" } (or { tag_prefix = \"plan_\" }) to [policy]",
            "rule \"r\": {{level}} is always empty here: the policy defines no [levels]",
            "rule \"r\": {{sla.due}} is always empty here: it has a value only in rules that react to sla.at_risk or sla.breached",
        ]
    );
    assert_eq!(loaded.warnings[0].line, 6);

    // A plan source of its own: no SLA, no calendar, and the note names the plan.
    let src = r#"
[policy]
name = "p"
plan = { tag_prefix = "plan_" }
[[rule]]
name = "r"
note = "from a {{plan}} customer"
"#;
    let loaded = Policy::parse(src, Path::new("p.toml")).unwrap();
    assert!(loaded.warnings.is_empty());
    let t = Ticket {
        tags: vec!["plan_Gold".into()],
        event: Some(EventKind::new("created")),
        ..Ticket::default()
    };
    assert_eq!(
        loaded.policy.decide(&t, Utc::now()).note.as_deref(),
        Some("[deskbot] from a gold customer")
    );
}

const VOCAB: &str = r#"[policy]
name = "n"
[words]
sync_failure = ["not syncing", "stuck", "@outage"]
outage = { terms = ["down", "offline"] }
orders = { typos = true, terms = ["order"] }
[[rule]]
name = "orders"
when = { all = [
  { text = { has_any_word = "@orders" } },
  { text = { has_any_word = ["@sync_failure", "broken"] } },
] }
priority = "urgent"
[[rule]]
name = "near"
when = { text = { near = { terms = ["@orders", "@outage"], within = 2 } } }
add_tags = ["near"]
[unclassified]
priority = "normal"
add_tags = ["deskbot_unclassified"]
"#;

#[test]
fn vocabularies_are_defined_once_and_used_by_name() {
    let p = policy(VOCAB);
    let d = p.decide(&ticket("Our orders are stuck", "created"), Utc::now());
    assert_eq!(d.priority, Some(Priority::Urgent));
    assert!(!d.unclassified);
    // A vocabulary can name another: @sync_failure includes @outage.
    let d = p.decide(&ticket("order sync down", "created"), Utc::now());
    assert_eq!(d.priority, Some(Priority::Urgent));
    assert_eq!(d.add_tags, vec!["near".to_string()]);
    // Typo tolerance is the vocabulary's: "oders" reads as "orders", evidence says so.
    let e = p.evaluate(&ticket("oders stuck", "created"), Utc::now(), true);
    let evidence: Vec<String> = e.matched[0].evidence.iter().map(|x| x.plain()).collect();
    assert_eq!(
        evidence,
        vec![
            "text has_any_word [@orders]: \"oders\" in subject (@orders; matched \"oders\" as \"order\" (one edit))".to_string(),
            "text has_any_word [@sync_failure, \"broken\"]: \"stuck\" in subject (@sync_failure)".to_string(),
        ]
    );
}

#[test]
fn unclassified_applies_only_when_no_rule_gave_a_level() {
    let p = policy(VOCAB);
    let d = p.decide(&ticket("Thanks!", "created"), Utc::now());
    assert!(d.unclassified);
    assert_eq!(d.priority, Some(Priority::Normal));
    assert_eq!(d.add_tags, vec!["deskbot_unclassified".to_string()]);
    assert_eq!(d.matched_rules, vec!["[unclassified]".to_string()]);
    // Classification runs on creation (the default `on`): a comment is not unclassified.
    let d = p.decide(&ticket("Thanks!", "comment_added"), Utc::now());
    assert!(!d.unclassified);
    assert!(d.add_tags.is_empty());
    // Without [unclassified], the decision still says so, and changes nothing.
    let bare = policy("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\nwhen = { subject = { has_word = \"down\" } }\npriority = \"high\"\n");
    let d = bare.decide(&ticket("Thanks!", "created"), Utc::now());
    assert!(d.unclassified);
    assert_eq!(d.priority, None);
}

#[test]
fn stemming_can_be_switched_off_per_policy() {
    let src = |on: bool| {
        format!("[policy]\nname = \"n\"\nstemming = {on}\n[[rule]]\nname = \"r\"\nwhen = {{ text = {{ has_word = \"price\" }} }}\npriority = \"high\"\n")
    };
    let t = ticket("Pricing is wrong", "created");
    assert_eq!(
        policy(&src(true)).decide(&t, Utc::now()).priority,
        Some(Priority::High)
    );
    assert_eq!(policy(&src(false)).decide(&t, Utc::now()).priority, None);
    // Plurals still match without stemming.
    let t = ticket("Prices are wrong", "created");
    assert_eq!(
        policy(&src(false)).decide(&t, Utc::now()).priority,
        Some(Priority::High)
    );
}

#[test]
fn vocabulary_mistakes_are_errors_at_their_position() {
    let base = "[policy]\nname = \"n\"\n[words]\nsync_failure = [\"stuck\"]\n";
    let rule = |when: &str| format!("{base}[[rule]]\nname = \"r\"\nwhen = {when}\n");
    let e = error(&rule(
        "{ text = { has_any_word = [\"x\", \"@sync_falure\"] } }",
    ));
    assert!(
        e.contains(
            "p.toml:7:40: unknown vocabulary `@sync_falure` (did you mean `@sync_failure`?)"
        ),
        "{e}"
    );
    let e = error(&rule(
        "{ text = { near = { terms = [\"x\", \"@nope\"] } } }",
    ));
    assert!(e.contains("p.toml:7:42: unknown vocabulary `@nope`"), "{e}");
    let e = error("[policy]\nname = \"n\"\n[[rule]]\nname = \"r\"\nwhen = { text = { has_word = \"@stuff\" } }\n");
    assert!(
        e.contains("p.toml:5:19: no vocabulary is named `@stuff`: define it under [words]"),
        "{e}"
    );
    let e = error("[policy]\nname = \"n\"\n[words]\na = [\"@b\"]\nb = [\"x\", \"@a\"]\n");
    assert!(
        e.contains("p.toml:4:1: vocabularies name each other in a circle: @a → @b → @a"),
        "{e}"
    );
    let e = error("[policy]\nname = \"n\"\n[words]\na = [\"x\", \"@c\"]\nb = [\"y\"]\n");
    assert!(e.contains("p.toml:4:11: unknown vocabulary `@c`"), "{e}");
    let e = error("[policy]\nname = \"n\"\n[words]\na = []\n");
    assert!(
        e.contains("p.toml:4:1: vocabulary @a has no phrases"),
        "{e}"
    );
    let e = error("[policy]\nname = \"n\"\n[words]\na = { terms = [\"x\"], typo = true }\n");
    assert!(
        e.contains("p.toml:4:22: unknown key of a vocabulary `typo` (did you mean `typos`?)"),
        "{e}"
    );
    let e = error("[policy]\nname = \"n\"\n[words]\na = { terms = [\"x\"], typos = \"yes\" }\n");
    assert!(e.contains("p.toml:4:22: expected true or false"), "{e}");
    let e = error("[policy]\nname = \"n\"\n[words]\na = \"x\"\n");
    assert!(
        e.contains("p.toml:4:1: a vocabulary is a list of phrases"),
        "{e}"
    );
    let e = error("[policy]\nname = \"n\"\nstemming = \"no\"\n");
    assert!(e.contains("p.toml:3:1: expected true or false"), "{e}");
    let e = error(
        "[policy]\nname = \"n\"\n[unclassified]\nwhen = { subject = { has_word = \"x\" } }\n",
    );
    assert!(
        e.contains("p.toml:4:1: [unclassified] takes no `when`: it applies exactly when no rule set a priority or level"),
        "{e}"
    );
    let e = error("[policy]\nname = \"n\"\n[unclassified]\nprority = \"normal\"\n");
    assert!(
        e.contains("unknown key of [unclassified] `prority` (did you mean `priority`?)"),
        "{e}"
    );
    // An unused vocabulary is a warning, not an error.
    let w = Policy::parse(
        "[policy]\nname = \"n\"\n[words]\nspare = [\"x\"]\n",
        Path::new("p.toml"),
    )
    .unwrap()
    .warnings;
    assert_eq!(
        w[0].to_string().lines().next(),
        Some("p.toml:4:1: warning: vocabulary @spare is not used by any rule")
    );
}

#[test]
fn a_rule_raises_a_ticket_once() {
    let p = policy("[policy]\nname = \"n\"\n[[rule]]\nname = \"asks\"\non = [\"comment_added\"]\nwhen = { comment = { has_word = \"escalate\" } }\nraise = 1\nadd_tags = [\"escalation_requested\"]\n");
    let mut t = ticket("Re: order", "comment_added");
    t.latest_comment = Some("Please escalate.".into());
    t.priority = Some(Priority::Normal);
    assert_eq!(p.decide(&t, Utc::now()).priority, Some(Priority::High));
    // Raised before (the rule's tag is on the ticket): asking again raises nothing.
    t.priority = Some(Priority::High);
    t.tags = vec!["Escalation_Requested".into()];
    let d = p.decide(&t, Utc::now());
    assert_eq!(d.priority, None);
    assert_eq!(d.matched_rules, vec!["asks".to_string()]);
}
