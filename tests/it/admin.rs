//! `deskbot register` and `deskbot doctor` against the fake Zendesk, run as an admin would run them.

use std::process::Output;

use axum::http::Method;
use serde_json::{json, Value};

use crate::support::{api_ticket, eventually, spawn_app, FakeZendesk};

const URL: &str = "https://deskbot.example/webhooks/zendesk";

async fn run(z: &FakeZendesk, args: &[&str]) -> Output {
    let base = z.url.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        crate::support::deskbot_command()
            .args(&args)
            .env("ZENDESK_URL", base)
            .env("ZENDESK_EMAIL", "admin@example.com")
            .env("ZENDESK_API_TOKEN", "token")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn register_creates_once_and_a_second_run_changes_nothing() {
    let z = FakeZendesk::start().await;
    let first = run(&z, &["register", "--url", URL]).await;
    assert!(first.status.success(), "{}", err(&first));
    let text = out(&first);
    assert!(
        text.contains("webhook \"deskbot: ticket events\": created (id 01WEBHOOK00001)"),
        "{text}"
    );
    assert!(
        text.contains("fly secrets set DESKBOT_WEBHOOK_SECRETS=secret-of-01WEBHOOK00001"),
        "{text}"
    );
    let hook = z.admin(|a| a.webhooks[0].clone());
    assert_eq!(
        hook["subscriptions"],
        json!([
            "zen:event-type:ticket.created",
            "zen:event-type:ticket.comment_added",
            "zen:event-type:ticket.status_changed",
            "zen:event-type:ticket.priority_changed"
        ])
    );
    assert_eq!(hook["endpoint"], URL);
    assert_eq!(
        z.writes(),
        vec![(Method::POST, "/api/v2/webhooks".to_string())]
    );

    let second = run(&z, &["register", "--url", URL]).await;
    assert!(second.status.success());
    assert!(out(&second).contains("unchanged (id 01WEBHOOK00001)"));
    assert_eq!(z.writes().len(), 1, "the second run wrote nothing");

    // A new URL updates the same webhook in place.
    let moved = run(
        &z,
        &["register", "--url", "https://new.example/webhooks/zendesk"],
    )
    .await;
    assert!(
        out(&moved).contains("updated (id 01WEBHOOK00001)"),
        "{}",
        out(&moved)
    );
    assert_eq!(z.admin(|a| a.webhooks.len()), 1);
}

#[tokio::test]
async fn trigger_mode_creates_a_category_and_a_trigger_idempotently() {
    let z = FakeZendesk::start().await;
    let first = run(&z, &["register", "--url", URL, "--mode", "triggers"]).await;
    assert!(first.status.success(), "{}", err(&first));
    let text = out(&first);
    assert!(
        text.contains("trigger category \"deskbot\": created"),
        "{text}"
    );
    assert!(
        text.contains("trigger \"deskbot: notify on ticket created\": created"),
        "{text}"
    );
    let trigger = z.admin(|a| a.triggers[0].clone());
    assert_eq!(trigger["actions"][0]["field"], "notification_webhook");
    assert_eq!(
        trigger["actions"][0]["value"][1],
        deskbot::webhook::payload::TRIGGER_BODY
    );
    assert_eq!(
        trigger["conditions"]["all"][0],
        json!({"field": "update_type", "operator": "is", "value": "Create"})
    );
    let writes = z.writes().len();
    let second = run(&z, &["register", "--url", URL, "--mode", "triggers"]).await;
    assert!(out(&second).contains("trigger category \"deskbot\": reused"));
    assert!(out(&second).contains("trigger \"deskbot: notify on ticket created\": unchanged"));
    assert_eq!(z.writes().len(), writes, "the second run wrote nothing");

    // An account without trigger categories: no category, and the trigger is still created.
    let z = FakeZendesk::start().await;
    z.admin(|a| a.categories = None);
    let o = run(&z, &["register", "--url", URL, "--mode", "both"]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(!out(&o).contains("trigger category"));
    assert_eq!(z.admin(|a| (a.webhooks.len(), a.triggers.len())), (2, 1));
    assert!(out(&o)
        .contains("DESKBOT_WEBHOOK_SECRETS=secret-of-01WEBHOOK00001,secret-of-01WEBHOOK00002"));
}

#[tokio::test]
async fn zendesk_errors_become_one_sentence_with_the_fix() {
    let z = FakeZendesk::start().await;
    for (method, status, expected) in [
        (
            Method::GET,
            401,
            "Zendesk refused the credentials (401): check ZENDESK_EMAIL and ZENDESK_API_TOKEN",
        ),
        (
            Method::GET,
            403,
            "The Zendesk user may not do this (403): webhooks, triggers and fields need an admin",
        ),
        (
            Method::POST,
            422,
            "Zendesk rejected the create_webhook request as invalid (422)",
        ),
    ] {
        z.fail_next(method, 1, status, None);
        let o = run(&z, &["register", "--url", URL]).await;
        assert_eq!(o.status.code(), Some(1));
        let e = err(&o);
        assert!(e.starts_with(&format!("deskbot: {expected}")), "{e}");
        assert_eq!(e.trim_end().lines().count(), 1, "one sentence: {e}");
    }
    let o = run(
        &z,
        &[
            "register",
            "--url",
            "http://deskbot.example/webhooks/zendesk",
        ],
    )
    .await;
    assert!(err(&o).contains("Zendesk only calls HTTPS endpoints"));
}

#[tokio::test]
async fn dry_run_sends_nothing_and_secret_files_are_private() {
    let z = FakeZendesk::start().await;
    let o = run(
        &z,
        &["register", "--url", URL, "--mode", "both", "--dry-run"],
    )
    .await;
    assert!(o.status.success());
    assert!(z.requests().is_empty(), "a dry run sends nothing");
    let text = out(&o);
    assert!(
        text.contains("POST /api/v2/webhooks") && text.contains("POST /api/v2/triggers"),
        "{text}"
    );
    assert!(
        text.contains("conditional_ticket_events")
            && text.contains("zen:event-type:ticket.created")
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    let o = run(
        &z,
        &[
            "register",
            "--url",
            URL,
            "--secret-file",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        !out(&o).contains("secret-of-"),
        "the secret is not printed when written to a file"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "secret-of-01WEBHOOK00001\n"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

const DOCTOR_POLICY: &str = r#"[policy]
name = "doctor"
[calendars.c]
timezone = "UTC"
hours = { mon-fri = "09:00-17:00" }
[sla]
plan = { organization_field = "plan" }
[sla.urgent]
first_response = { gold = "1 business hour", default = "2 business hours" }
[fields]
first_response_due = { id = 360001, type = "date" }
[[rule]]
name = "r"
set_fields = { "360002" = "yes" }
"#;

#[tokio::test]
async fn doctor_passes_a_good_setup_and_names_each_problem() {
    let z = FakeZendesk::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("p.toml");
    std::fs::write(&rules, DOCTOR_POLICY).unwrap();
    let db = dir.path().join("d.db");
    z.admin(|a| {
        a.ticket_fields.insert(360001, json!({"id": 360001, "type": "date"}));
        a.ticket_fields.insert(360002, json!({"id": 360002, "type": "checkbox"}));
        a.organization_fields.push(json!({"key": "plan", "type": "dropdown"}));
        a.webhooks.push(json!({"id": "01W", "name": "deskbot: ticket events", "endpoint": URL, "status": "active",
                               "subscriptions": ["zen:event-type:ticket.created", "zen:event-type:ticket.comment_added",
                                                 "zen:event-type:ticket.status_changed", "zen:event-type:ticket.priority_changed"]}));
    });
    let args = [
        "doctor",
        "--rules",
        rules.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--url",
        URL,
    ];
    let o = run(&z, &args).await;
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    for line in [
        "ok    policy: doctor",
        "ok    database:",
        "ok    credentials: admin@example.com (admin)",
        "ok    ticket updates:",
        "ok    clock:",
        "ok    field 360001: fields.first_response_due: a date field",
        "ok    field 360002:",
        "ok    organization field \"plan\":",
        "ok    webhook:",
        "ok    SLA events: the webhook sends every event the clocks need",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.trim_end().ends_with("10 checks, 0 failed"), "{text}");

    // A webhook set up before the clocks existed: a warning, not a failure.
    z.admin(|a| a.webhooks[0]["subscriptions"] = json!(["zen:event-type:ticket.created"]));
    let o = run(&z, &args).await;
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("warn  SLA events: the webhook does not send zen:event-type:ticket.comment_added, zen:event-type:ticket.status_changed, zen:event-type:ticket.priority_changed: SLA clocks will miss replies, pauses or priority changes; run `deskbot register --url https://deskbot.example/webhooks/zendesk`"), "{text}");

    z.admin(|a| {
        a.ticket_fields
            .insert(360001, json!({"id": 360001, "type": "text"}));
        a.ticket_fields.remove(&360002);
        a.organization_fields.clear();
        a.webhooks.clear();
        a.me = json!({"user": {"id": 5, "email": "someone@example.com", "role": "end-user"}});
    });
    let o = run(&z, &args).await;
    assert_eq!(o.status.code(), Some(1));
    let text = out(&o);
    for line in [
        "FAIL  ticket updates: the user is an end-user",
        "FAIL  field 360001: fields.first_response_due needs a date field, but field 360001 is a text field",
        "FAIL  field 360002: rule \"r\" set_fields: no ticket field 360002",
        "FAIL  organization field \"plan\":",
        "FAIL  webhook: no webhook sends to https://deskbot.example/webhooks/zendesk: run `deskbot register",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

/// The two halves must agree: the body register installs, rendered as Zendesk renders placeholders,
/// is accepted by the webhook endpoint and leads to the right decision.
#[tokio::test]
async fn the_installed_trigger_body_round_trips_to_a_decision() {
    let app = spawn_app().await;
    let o = run(
        &app.zendesk,
        &["register", "--url", URL, "--mode", "triggers"],
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let template = app.zendesk.admin(|a| {
        a.triggers[0]["actions"][0]["value"][1]
            .as_str()
            .unwrap()
            .to_string()
    });
    app.zendesk
        .put_ticket(api_ticket(301, "URGENT: cart totals wrong"));
    // Zendesk renders placeholders as plain text; updated_at_with_timestamp is minute-precision ISO.
    let rendered = template
        .replace("{{ticket.id}}", "301")
        .replace("{{ticket.updated_at_with_timestamp}}", "2026-11-23T17:00Z");
    let v: Value = serde_json::from_str(&rendered).expect("the rendered body is JSON");
    assert_eq!(v["ticket_id"], "301");
    let r = app.post_signed(rendered).await;
    assert_eq!(r.status(), 202);
    let z = app.zendesk.clone();
    eventually(10, "the PUT for ticket 301", || {
        z.applied_puts()
            .iter()
            .any(|p| p["ticket"]["priority"] == "urgent")
    })
    .await;
    let put = z
        .requests()
        .into_iter()
        .find(|r| r.method == Method::PUT && r.path == "/api/v2/tickets/301.json");
    assert!(
        put.is_some(),
        "the update goes to the ticket the trigger named"
    );
    app.stop().await;
}

#[test]
fn doctor_lists_what_it_skipped_and_says_the_network_cause_in_short() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("p.toml");
    std::fs::write(&rules, DOCTOR_POLICY).unwrap();
    let port = crate::support::free_port();
    let o = crate::support::deskbot_command()
        .args(["doctor", "--rules", rules.to_str().unwrap()])
        .args(["--db", dir.path().join("d.db").to_str().unwrap()])
        .env("ZENDESK_URL", format!("http://127.0.0.1:{port}"))
        .env("ZENDESK_EMAIL", "admin@example.com")
        .env("ZENDESK_API_TOKEN", "token")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(
        lines,
        vec![
            "FAIL  credentials: Could not reach Zendesk: Connection refused (os error 111). Check ZENDESK_SUBDOMAIN (or ZENDESK_URL) and this machine's network.",
            "skip  ticket updates: not checked: the credentials failed",
            "skip  clock: not checked: the credentials failed",
            "skip  fields: not checked: the credentials failed",
            "skip  webhook: not checked: the credentials failed",
            "7 checks, 1 failed, 4 skipped",
        ],
        "{text}"
    );
}
