//! The labelled corpus (`tests/corpus/`) through `deskbot replay`: the shipped policies keep the
//! agreement recorded in docs/rules.md, leave nothing unclassified and never over-escalate; and
//! `replay` itself: `--against`, thresholds, directories, unreadable lines.

use std::process::Output;

use serde_json::Value;

use crate::support::deskbot_command;

fn replay(args: &[&str]) -> Output {
    deskbot_command()
        .arg("replay")
        .args(args)
        .env_remove("STORECONNECT_BRAND_ID")
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Agreement recorded per corpus file (agreed, labelled); docs/rules.md has the table.
const RECORDED: &[(&str, &str, u64, u64)] = &[
    ("farapp", "tune", 82, 82),
    ("farapp", "held", 79, 80),
    ("farapp", "blind", 60, 60),
    ("farapp", "blind2", 40, 40),
    ("farapp", "blind3", 50, 50),
    ("farapp", "blind4", 50, 50),
    ("storeconnect", "tune", 80, 80),
    ("storeconnect", "held", 77, 77),
    ("storeconnect", "blind", 60, 60),
    ("storeconnect", "blind2", 40, 40),
    ("storeconnect", "blind3", 50, 50),
    ("storeconnect", "blind4", 50, 50),
];

#[test]
fn the_shipped_policies_keep_their_recorded_agreement_on_the_corpus() {
    let mut total = 0;
    for (policy, set, agreed, labelled) in RECORDED {
        let file = format!("tests/corpus/{policy}.{set}.jsonl");
        let rules = format!("rules/{policy}.toml");
        let out = replay(&["--json", "--rules", &rules, &file]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = &v["policies"][0];
        assert_eq!(r["labelled"], *labelled, "{file}");
        assert!(
            r["agreed"].as_u64().unwrap() >= *agreed,
            "{file}: {} of {labelled} agree, recorded {agreed}: {:#}",
            r["agreed"],
            r["disagreements"]
        );
        assert_eq!(r["unclassified"], 0, "{file}: {:#}", r["disagreements"]);
        // Nothing is made urgent (critical) that a lead would not make urgent.
        for d in r["disagreements"].as_array().unwrap() {
            assert!(
                !matches!(d["decided"].as_str(), Some("urgent" | "critical")),
                "{file}: over-escalated {d}"
            );
        }
        total += labelled;
    }
    assert!(total >= 300, "the corpus holds {total} labelled tickets");
}

const V1: &str = r#"[policy]
name = "shop"
[words]
outage = ["down", "offline"]
[[rule]]
name = "outage"
when = { text = { has_any_word = "@outage" } }
priority = "urgent"
add_tags = ["outage"]
[[rule]]
name = "question"
when = { text = { has_any_word = ["how do i", "question"] } }
priority = "normal"
"#;

const CORPUS: &str = r#"{"ticket": {"id": 1, "subject": "Store down", "description": "It is offline."}, "expect": {"level": "urgent"}}
{"ticket": {"id": 2, "subject": "Question", "description": "How do I add a user?"}, "expect": {"level": "normal"}}

{"ticket": {"id": 3, "subject": "Thanks", "description": "All good."}, "expect": {"level": "low"}}
{"ticket": {"id": 4, "subject": "Store offline", "description": "Since 9am."}}
"#;

fn workspace() -> (tempfile::TempDir, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.toml");
    let v2 = dir.path().join("v2.toml");
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(&v1, V1).unwrap();
    // The next version: "offline" is no longer an outage, and questions are low.
    std::fs::write(
        &v2,
        V1.replace("[\"down\", \"offline\"]", "[\"down\"]")
            .replace("priority = \"normal\"", "priority = \"low\""),
    )
    .unwrap();
    std::fs::write(&corpus, CORPUS).unwrap();
    let s = |p: std::path::PathBuf| p.display().to_string();
    (dir, s(v1), s(v2), s(corpus))
}

#[test]
fn replay_counts_levels_tags_agreement_and_the_unclassified() {
    let (_dir, v1, _, corpus) = workspace();
    let out = replay(&["--json", "--rules", &v1, &corpus]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tickets"], 4);
    let r = &v["policies"][0];
    assert_eq!(r["tickets"], 4);
    assert_eq!(r["unclassified"], 1);
    assert_eq!(r["labelled"], 3);
    assert_eq!(r["agreed"], 2);
    assert_eq!(r["tags"], serde_json::json!({"outage": 2}));
    assert_eq!(
        r["levels"],
        serde_json::json!([
            {"level": "urgent", "decided": 2, "expected": 1, "agreed": 1, "precision": 100.0, "recall": 100.0},
            {"level": "normal", "decided": 1, "expected": 1, "agreed": 1, "precision": 100.0, "recall": 100.0},
            {"level": "low", "decided": 0, "expected": 1, "agreed": 0, "precision": null, "recall": 0.0},
            {"level": "unclassified", "decided": 1, "expected": 0, "agreed": 0, "precision": 0.0, "recall": null},
        ])
    );
    assert_eq!(r["disagreements"][0]["place"], format!("{corpus}:4"));
    // The table for people says the same.
    let out = replay(&["--rules", &v1, &corpus]);
    let t = text(&out.stdout);
    assert!(t.contains("4 tickets, 1 unclassified"), "{t}");
    assert!(
        t.contains("agreement: 2 of 3 labelled tickets (66.7 %)"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{corpus}:4 #3 \"Thanks\": expected low, decided unclassified (no rule)"
        )),
        "{t}"
    );
}

#[test]
fn replay_against_another_version_lists_the_tickets_decided_differently() {
    let (_dir, v1, v2, corpus) = workspace();
    let out = replay(&["--rules", &v1, "--against", &v2, &corpus]);
    let t = text(&out.stdout);
    assert!(
        t.contains(&format!("2 of 4 tickets are decided differently by {v2}:")),
        "{t}"
    );
    assert!(!t.contains("#1 \"Store down\""), "{t}");
    assert!(
        t.contains(&format!("{corpus}:2 #2 \"Question\": normal → low")),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{corpus}:5 #4 \"Store offline\": urgent → unclassified -outage"
        )),
        "{t}"
    );
    let out = replay(&["--json", "--rules", &v1, "--against", &v2, &corpus]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["differences"].as_array().unwrap().len(), 2);
}

#[test]
fn replay_thresholds_give_an_exit_status_for_ci() {
    let (_dir, v1, _, corpus) = workspace();
    let out = replay(&["--rules", &v1, "--max-unclassified", "0", &corpus]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("1 of 4 tickets unclassified, more than --max-unclassified allows"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        replay(&["--rules", &v1, "--max-unclassified", "25%", &corpus])
            .status
            .success()
    );
    let out = replay(&["--rules", &v1, "--min-agreement", "97%", &corpus]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr)
        .contains("2 of 3 labelled tickets agree (66.7 %), less than --min-agreement"));
    let out = replay(&["--rules", &v1, "--max-unclassified", "two", &corpus]);
    assert_eq!(out.status.code(), Some(2), "a bad flag is a usage error");
    assert!(text(&out.stderr).contains("write a share like 2% or a number of tickets like 3"));
}

#[test]
fn replay_reads_a_directory_and_reports_every_unreadable_line() {
    let (dir, v1, _, _) = workspace();
    let tickets = dir.path().join("tickets");
    std::fs::create_dir(&tickets).unwrap();
    std::fs::copy(
        "examples/farapp-orders-not-syncing.json",
        tickets.join("a.json"),
    )
    .unwrap();
    std::fs::write(
        tickets.join("b.json"),
        "{\"ticket\": {\"id\": 9, \"subject\": \"down\"}}",
    )
    .unwrap();
    std::fs::write(tickets.join("notes.txt"), "not a ticket").unwrap();
    let out = replay(&["--json", "--rules", &v1, &tickets.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tickets"], 2);

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"ticket\": {\"id\": 1, \"subject\": \"down\"}}\nnot json\n{\"ticket\": {\"id\": \"seven\"}}\n").unwrap();
    let out = replay(&["--rules", &v1, &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out.stdout);
    assert!(
        t.contains(&format!("error: {}:2: not JSON", bad.display())),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "error: {}:3: \"ticket\" is not a Zendesk API ticket",
            bad.display()
        )),
        "{t}"
    );
    assert!(text(&out.stderr).contains("2 line(s) could not be read as tickets"));
    let out = replay(&["--rules", &v1, "/nonexistent/corpus.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/corpus.jsonl"));
}
