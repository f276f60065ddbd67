//! The rule authors' tools (`check`, `test`, `explain`, `schema`) and hot reload, as a user runs them.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{deskbot_command, spawn_app_with, Options};

fn deskbot(args: &[&str]) -> Output {
    deskbot_command().args(args).output().unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// A policy file `p.toml` holding `policy`, in a directory that lives as long as the first value.
fn policy_file(policy: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.toml");
    std::fs::write(&f, policy).unwrap();
    (dir, f)
}

const GOOD: &str = r#"[policy]
name = "tools"

[[rule]]
name = "urgent"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
add_tags = ["escalated"]

[[test]]
name = "passes"
ticket = { subject = "URGENT please" }
expect = { priority = "urgent", tags = ["escalated"] }

[[test]]
name = "fails"
ticket = { subject = "hello" }
expect = { priority = "high" }
"#;

#[test]
fn check_points_at_the_bad_value_not_its_section() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.toml");
    let head = "[policy]\nname = \"x\"\n[calendars.c]\n";
    for (body, want) in [
        (
            "timezone = \"Pacific Time\"\nhours = { mon-fri = \"08:00-17:00\" }\n",
            "p.toml:4:1: timezone: unknown time zone \"Pacific Time\"",
        ),
        (
            "timezone = \"UTC\"\nhours = { mon-fri = \"8am\" }\n",
            "p.toml:5:11: hours.mon-fri: \"8am\" is not an interval",
        ),
        (
            "timezone = \"UTC\"\nhours = { mon-fri = \"08:00-17:00\" }\n[sla.urgent]\nresolution = \"1 day\"\nfirst_response = \"3 bussiness hours\"\n",
            "p.toml:8:1: sla.urgent.first_response: \"3 bussiness hours\" is not a duration",
        ),
    ] {
        std::fs::write(&f, format!("{head}{body}")).unwrap();
        let out = deskbot(&["check", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains(want), "{want} in\n{err}");
    }
}

#[test]
fn check_reports_errors_with_position_and_exits_1() {
    let (_dir, f) = policy_file("[policy]\nname = \"x\"\n[[rule]]\nname = \"r\"\nwhen = { subject = { has_wrd = \"a\" } }\n");
    let out = deskbot(&["check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("p.toml:5:22: unknown operator `has_wrd` (did you mean `has_word`?)"),
        "{err}"
    );
    assert!(
        err.contains("\n    when = { subject = { has_wrd = \"a\" } }\n                         ^"),
        "{err}"
    );
    assert!(err.trim_end().ends_with("\n1 error, 0 warnings"), "{err}");

    std::fs::write(&f, GOOD).unwrap();
    let out = deskbot(&["check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok: policy \"tools\", 1 rules, 2 tests"));
}

#[test]
fn test_prints_a_diff_per_failure_and_the_count_last() {
    let (_dir, f) = policy_file(GOOD);
    let out = deskbot(&["test", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "FAIL {}:16: fails\n    priority: expected high, got none",
            f.display()
        )),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("1 passed, 1 failed"));
}

#[test]
fn test_on_a_policy_that_does_not_load_says_so() {
    let (_dir, f) =
        policy_file("[policy]\nname = \"x\"\n[[rule]]\nname = \"r\"\npriority = \"urgnt\"\n");
    let out = deskbot(&["test", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(err.contains("p.toml:5:"), "{err}");
    assert!(
        err.trim_end().ends_with(&format!(
            "no test ran: the policy does not load (the errors above; `deskbot check {}` lists them)",
            f.display()
        )),
        "{err}"
    );
}

#[test]
fn shipped_rules_pass_check_and_their_tests() {
    let out = deskbot(&["check", "rules"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("0 errors, 0 warnings"),
        "{}",
        text(&out.stdout)
    );
    let out = deskbot(&["test", "rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).trim_end().ends_with(" passed, 0 failed"));
}

#[test]
fn explain_json_has_the_documented_keys() {
    let out = deskbot(&[
        "explain",
        "--json",
        "examples/farapp-orders-not-syncing.json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "ticket_id",
        "priority",
        "add_tags",
        "remove_tags",
        "first_response_due",
        "resolution_due",
        "fields",
        "group_id",
        "note",
        "matched_rules",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["ticket_id"], 4711);
    assert_eq!(v["priority"], "urgent");
    assert_eq!(
        v["matched_rules"],
        serde_json::json!(["4.1a orders not syncing", "3.1 URGENT in the subject"])
    );
    let urgent: Vec<&serde_json::Value> = v["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["rule"] == "3.1 URGENT in the subject")
        .collect();
    assert_eq!(
        urgent[0],
        &serde_json::json!({"rule": "3.1 URGENT in the subject", "field": "subject",
            "condition": "subject has_word \"urgent\"",
            "matched": [{"text": "URGENT", "part": "subject", "span": [0, 6]}]})
    );
    assert_eq!(v["first_response_due"], "2026-11-23T20:04:10Z");
    assert_eq!(v["unclassified"], false);
    // A match through a vocabulary names it.
    let orders = v["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["rule"] == "4.1a orders not syncing")
        .unwrap();
    assert_eq!(
        orders,
        &serde_json::json!({"rule": "4.1a orders not syncing", "field": "text",
            "condition": "text has_any_word [@orders]",
            "matched": [{"text": "orders", "part": "subject", "span": [8, 14], "vocabulary": "@orders"}]})
    );
}

#[test]
fn explain_reads_api_tickets_and_uses_the_organization() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("p.toml");
    std::fs::write(
        &rules,
        r#"[policy]
name = "plans"
[calendars.c]
timezone = "Australia/Sydney"
hours = { mon-fri = "09:00-17:00" }
[sla]
plan = { organization_field = "plan" }
[sla.urgent]
first_response = { flagship = "1 business day", default = "3 business days" }
[[rule]]
name = "down"
when = { text = { has_word = "down" } }
priority = "urgent"
"#,
    )
    .unwrap();
    let file = dir.path().join("t.json");
    std::fs::write(&file, r#"{"ticket": {"id": 9, "subject": "Store down", "priority": null, "tags": [], "created_at": "2026-11-23T00:00:00Z", "updated_at": "2026-11-23T00:00:00Z"},
                              "organization": {"id": 3, "name": "Shop", "organization_fields": {"plan": "flagship"}}}"#).unwrap();
    let out = deskbot(&[
        "explain",
        "--json",
        "--rules",
        rules.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["first_response_due"], "2026-11-24T00:00:00Z");
    let human = deskbot(&[
        "explain",
        "--rules",
        rules.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(
        text(&human.stdout)
            .contains("first response due: Tue 24 Nov, 11:00 AEDT (2026-11-24T00:00:00Z)"),
        "{}",
        text(&human.stdout)
    );
    let out = deskbot(&["explain", "--rules", rules.to_str().unwrap(), "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("deskbot: Cargo.toml: not JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn schema_is_json_and_the_shipped_copy_is_current() {
    let out = deskbot(&["schema"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "deskbot policy");
    let shipped: Value =
        serde_json::from_str(&std::fs::read_to_string("rules/deskbot.schema.json").unwrap())
            .unwrap();
    assert!(
        shipped == v,
        "rules/deskbot.schema.json is stale: run `deskbot schema > rules/deskbot.schema.json`"
    );
    for entry in std::fs::read_dir("rules").unwrap() {
        let f = entry.unwrap().path();
        if f.extension().is_some_and(|x| x == "toml") {
            let first = std::fs::read_to_string(&f).unwrap();
            assert_eq!(
                first.lines().next(),
                Some("#:schema ./deskbot.schema.json"),
                "{}",
                f.display()
            );
        }
    }
}

const RELOAD_V1: &str = "[policy]\nname = \"v1\"\n[[rule]]\nname = \"r\"\nwhen = { subject = { has_word = \"urgent\" } }\npriority = \"urgent\"\n";

#[tokio::test]
async fn hot_reload_keeps_the_old_policy_on_a_bad_edit() {
    let app = spawn_app_with(Options {
        policy: RELOAD_V1,
        ..Options::default()
    })
    .await;
    let file = app.db.parent().unwrap().join("policy.toml");
    std::fs::write(
        &file,
        "[policy]\nname = \"v2\"\n[[rule]]\nname = \"r\"\nwhen = { subjet = {} }\n",
    )
    .unwrap();
    let mut health = Value::Null;
    for _ in 0..100 {
        health = app.get_json("/healthz").await.1;
        if !health["policy"]["error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = health["policy"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error shown: {health}"));
    assert!(
        error.contains("policy.toml:5:10: unknown field `subjet`"),
        "{error}"
    );
    assert_eq!(
        health["policy"]["name"], "v1",
        "the old policy stays in force"
    );
    assert_eq!(health["status"], "ok");

    std::fs::write(&file, RELOAD_V1.replace("v1", "v2")).unwrap();
    let mut health = Value::Null;
    for _ in 0..100 {
        health = app.get_json("/healthz").await.1;
        if health["policy"]["name"] == "v2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health["policy"]["name"], "v2");
    assert!(health["policy"]["error"].is_null());
    app.stop().await;
}

#[test]
fn sighup_reloads_even_when_the_file_looks_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("p.toml");
    std::fs::write(&rules, RELOAD_V1).unwrap();
    let mtime = std::fs::metadata(&rules).unwrap().modified().unwrap();
    let port = crate::support::free_port();
    let mut child = deskbot_command()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rules",
            rules.to_str().unwrap(),
            "--db",
            dir.path().join("d.db").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let health = || -> Option<Value> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        conn.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        conn.read_to_string(&mut response).ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    };
    let started = Instant::now();
    while health().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Same length, same modification time: only SIGHUP can notice this edit.
    let broken = RELOAD_V1.replace("subject", "subjeqt");
    assert_eq!(broken.len(), RELOAD_V1.len());
    std::fs::write(&rules, &broken).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&rules)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        health().unwrap()["policy"]["error"].is_null(),
        "polling must not have seen it"
    );
    assert!(Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Value::Null;
    while Instant::now() < deadline {
        seen = health().unwrap_or_default();
        if !seen["policy"]["error"].is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(
        seen["policy"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown field `subjeqt`")),
        "{seen}"
    );
}

#[test]
fn every_example_explains_and_routes_by_brand() {
    for (file, rules, priority, rule) in [
        (
            "examples/farapp-orders-not-syncing.json",
            "rules/farapp.toml",
            "urgent",
            "4.1a orders not syncing",
        ),
        (
            "examples/farapp-few-orders-missing.json",
            "rules/farapp.toml",
            "high",
            "4.2a a few orders not importing or importing incorrectly",
        ),
        (
            "examples/farapp-escalation-comment.json",
            "rules/farapp.toml",
            "high",
            "3.1 customer asks to escalate in a comment",
        ),
        (
            "examples/storeconnect-store-down.json",
            "rules/storeconnect.toml",
            "urgent",
            "critical: store unavailable or down",
        ),
    ] {
        let out = deskbot(&["explain", "--json", "--rules", rules, file]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["priority"], priority, "{file}");
        assert!(
            v["matched_rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == rule),
            "{file}: {v}"
        );
    }
    // Through the whole directory: without the brand id, FarApp (unscoped) takes every ticket...
    let out = deskbot(&[
        "explain",
        "--json",
        "--rules",
        "rules",
        "examples/storeconnect-store-down.json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policy"], "FarApp support");
    // ...with it, the StoreConnect brand's tickets go to StoreConnect.
    let out = deskbot_command()
        .args([
            "explain",
            "--json",
            "--rules",
            "rules",
            "examples/storeconnect-store-down.json",
        ])
        .env("STORECONNECT_BRAND_ID", "9938120000017")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policy"], "StoreConnect support");
    assert_eq!(v["level"], "critical");
}

#[test]
fn farapp_escalation_address_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    std::fs::write(&file, r#"{"ticket": {"id": 5, "subject": "Still not fixed", "description": "Escalating per your policy.", "priority": "normal",
        "recipient": "Escalations@FarApp.example", "tags": [], "created_at": "2026-11-23T17:00:00Z", "updated_at": "2026-11-23T17:00:00Z"}}"#).unwrap();
    let run = |env: Option<&str>| -> Value {
        let mut c = deskbot_command();
        c.args([
            "explain",
            "--json",
            "--rules",
            "rules/farapp.toml",
            file.to_str().unwrap(),
        ])
        .env_remove("FARAPP_ESCALATION_EMAIL");
        if let Some(v) = env {
            c.env("FARAPP_ESCALATION_EMAIL", v);
        }
        serde_json::from_slice(&c.output().unwrap().stdout).unwrap()
    };
    let unset = run(None);
    assert!(
        !unset["add_tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "farapp_escalation_email"),
        "{unset}"
    );
    let set = run(Some("escalations@farapp.example"));
    assert!(
        set["add_tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "farapp_escalation_email"),
        "{set}"
    );
    assert!(set["matched_rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "3.2 sent to the escalation address"));
}

#[test]
fn explain_shows_each_clock_timeline_through_the_files_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut body: Value = serde_json::from_str(
        &std::fs::read_to_string("examples/farapp-orders-not-syncing.json").unwrap(),
    )
    .unwrap();
    body["events"] = serde_json::json!([
        {"at": "2026-11-23T13:00:00-08:00", "status": "pending"},
        {"at": "2026-11-24T10:00:00-08:00", "status": "open"}
    ]);
    let file = dir.path().join("t.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let o = deskbot(&["explain", "--rules", "rules", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let timeline = out
        .split("SLA clocks (America/Los_Angeles):\n")
        .nth(1)
        .unwrap();
    assert_eq!(
        timeline.lines().map(str::trim).collect::<Vec<_>>(),
        vec![
            "Mon 23 Nov, 09:04 PST    first_response #1  started (3 business hours)",
            "Mon 23 Nov, 09:04 PST    resolution #1      started (1 business day)",
            "Mon 23 Nov, 11:34 PST    first_response #1  at risk: escalated by 5 urgent ticket without a first reply, 30 minutes before the target",
            "Mon 23 Nov, 12:04 PST    first_response #1  breached: escalated by 5 urgent ticket without a first reply, target missed",
            "Mon 23 Nov, 13:00 PST    resolution #1      paused",
            "Tue 24 Nov, 10:00 PST    resolution #1      resumed",
            "Tue 24 Nov, 15:34 PST    resolution #1      at risk (to come)",
            "Tue 24 Nov, 16:04 PST    resolution #1      due",
        ]
    );
    let o = deskbot(&[
        "explain",
        "--json",
        "--rules",
        "rules",
        file.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sla_timeline"][4]["what"], "paused");
    assert_eq!(v["sla_timeline"][4]["at"], "2026-11-23T21:00:00Z");

    body["events"] = serde_json::json!([{"at": "2026-11-23T13:00:00-08:00", "status": "asleep"}]);
    std::fs::write(&file, body.to_string()).unwrap();
    let o = deskbot(&["explain", "--rules", "rules", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("events.0.status: unknown status `asleep`"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn version_is_a_command_as_well_as_a_flag() {
    let sub = deskbot(&["version"]);
    let flag = deskbot(&["--version"]);
    assert!(sub.status.success() && flag.status.success());
    assert_eq!(
        text(&sub.stdout),
        format!("deskbot {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(text(&sub.stdout), text(&flag.stdout));
}

#[test]
fn every_policy_command_takes_rules_and_help_shows_only_its_own_options() {
    for args in [
        vec!["check", "--rules", "rules/farapp.toml"],
        vec!["check", "rules/farapp.toml"],
        vec!["test", "--rules", "rules/farapp.toml"],
        vec!["test", "rules/farapp.toml"],
    ] {
        let out = deskbot(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            !text(&out.stdout).contains("storeconnect"),
            "{args:?} read only FarApp"
        );
    }
    let register = text(&deskbot(&["register", "--help"]).stdout);
    assert!(register.contains("--zendesk-url"), "{register}");
    assert!(
        !register.contains("RATE_LIMIT"),
        "register makes a few calls: {register}"
    );
    let serve = text(&deskbot(&["serve", "--help"]).stdout);
    assert!(serve.contains("ZENDESK_RATE_LIMIT_PER_MINUTE"), "{serve}");
}

#[test]
fn the_storeconnect_example_routes_to_storeconnect_with_its_brand_set() {
    let out = deskbot_command()
        .args([
            "explain",
            "--rules",
            "rules",
            "examples/storeconnect-store-down.json",
        ])
        .env("STORECONNECT_BRAND_ID", "9938120000017")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("ticket 9120 → policy \"StoreConnect support\""),
        "{stdout}"
    );
    assert!(stdout.contains("(level critical"), "{stdout}");
    let unset = deskbot_command()
        .args([
            "explain",
            "--rules",
            "rules",
            "examples/storeconnect-store-down.json",
        ])
        .env_remove("STORECONNECT_BRAND_ID")
        .output()
        .unwrap();
    assert_eq!(
        text(&unset.stdout).lines().nth(1),
        Some("not \"StoreConnect support\": its scope (brand_id equals \"\") does not hold for this ticket; STORECONNECT_BRAND_ID is unset")
    );
}

/// The README's `explain` sample is the command's real output (a line `    …` in the README
/// stands for lines it leaves out): this fails when the two drift apart.
#[test]
fn the_readme_explain_sample_is_real_output() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let command = "$ deskbot explain examples/farapp-few-orders-missing.json\n";
    let start = readme
        .find(command)
        .expect("the README shows the explain sample")
        + command.len();
    let sample: Vec<&str> = readme[start..]
        .split("\n```")
        .next()
        .unwrap()
        .lines()
        .collect();
    let out = deskbot_command()
        .args(["explain", "examples/farapp-few-orders-missing.json"])
        .env_remove("STORECONNECT_BRAND_ID")
        .output()
        .unwrap();
    let real = text(&out.stdout);
    let real: Vec<&str> = real.lines().map(str::trim_end).collect();
    let mut r = 0;
    for (n, line) in sample.iter().enumerate() {
        if line.trim() == "…" {
            let next = sample.get(n + 1).copied().unwrap_or_default();
            while r < real.len() && real[r] != next {
                r += 1;
            }
            continue;
        }
        assert_eq!(
            real.get(r).copied(),
            Some(*line),
            "README line {} differs from `deskbot explain` (regenerate the sample)",
            n + 1
        );
        r += 1;
    }
    assert_eq!(
        r,
        real.len(),
        "the README sample ends before the output does"
    );
}

#[test]
fn init_scaffolds_a_policy_that_passes_check_and_test_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("acme.toml");
    let p = f.to_str().unwrap();
    let out = deskbot(&[
        "init",
        p,
        "--name",
        "Acme",
        "--timezone",
        "Australia/Sydney",
        "--hours",
        "mon-fri=08:30-17:30",
        "--holidays",
        "2026-12-25",
        "--first-response",
        "urgent=1 business hour",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("wrote {p}: check it with")));
    let check = deskbot(&["check", p]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(text(&check.stdout).ends_with("0 errors, 0 warnings\n"));
    let test = deskbot(&["test", p]);
    assert_eq!(
        text(&test.stdout).lines().last(),
        Some("3 passed, 0 failed")
    );
    let again = deskbot(&["init", p]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("init never overwrites a file"));
    let printed = deskbot(&["init", "-", "--timezone", "Mars/Olympus"]);
    assert_eq!(printed.status.code(), Some(1));
    assert!(text(&printed.stderr).contains("unknown time zone \"Mars/Olympus\""));
}

#[test]
fn check_reports_every_independent_error_in_one_run_in_file_order() {
    let (_dir, f) = policy_file("[policy]\nname = \"x\"\nonly_raise = \"yes\"\n[calendars.c]\ntimezone = \"Pacific Time\"\n\
         hours = { mon-fri = \"08:00-17:00\" }\n[sla.urgent]\nfirst_response = \"3 bussiness hours\"\n\
         [[rule]]\nname = \"a\"\nwhen = { subjet = { has_word = \"x\" } }\n[[rule]]\nname = \"b\"\n\
         priority = \"urgnt\"\n[[test]]\nticket = { subject = \"x\" }\nexpect = { priority = \"hgh\" }\n");
    let out = deskbot(&["check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let positions: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix(f.to_str().unwrap()))
        .map(|l| l.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        positions,
        vec![":3:1", ":5:1", ":8:1", ":11:10", ":14:1", ":17:12"],
        "{err}"
    );
    assert!(err.trim_end().ends_with("\n6 errors, 0 warnings"), "{err}");
}

#[test]
fn a_bad_regex_shows_the_pattern_with_a_caret_under_the_fault() {
    let (_dir, f) = policy_file("[policy]\nname = \"x\"\n[[rule]]\nname = \"r\"\nwhen = { subject = { regex = \"order #(\\\\d+\" } }\n");
    let out = deskbot(&["check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}:5:22: invalid regex: unclosed group\n      pattern: order #(\\d+\n                      ^\n    when = {{ subject = {{ regex = \"order #(\\\\d+\" }} }}\n                         ^\n1 error, 0 warnings\n",
            f.display()
        )
    );
}

#[test]
fn check_reports_warnings_with_the_errors() {
    let (_dir, f) = policy_file(
        "[policy]\nname = \"x\"\n[[rule]]\nname = \"never\"\nwhen = { any = [] }\n[[rule]]\nname = \"bad\"\npriority = \"urgnt\"\n",
    );
    let out = deskbot(&["check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let firsts: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(f.to_str().unwrap()))
        .collect();
    assert_eq!(firsts.len(), 2, "{err}");
    assert!(
        firsts[0].contains(":5:1: warning: rule \"never\" can never match"),
        "{err}"
    );
    assert!(
        firsts[1].contains(":8:1: unknown priority `urgnt`"),
        "{err}"
    );
    assert!(err.trim_end().ends_with("\n1 error, 1 warning"), "{err}");
}
