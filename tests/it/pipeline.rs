//! End to end: signed event in → exactly one PUT out, against the fake Zendesk.

use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};

use crate::support::{
    self, api_ticket, count, event_body, eventually, spawn_app, spawn_app_with, FakeZendesk,
    Options, SECRET,
};

fn seed(z: &FakeZendesk, id: u64, subject: &str) {
    z.put_ticket(api_ticket(id, subject));
    z.put_user(json!({"id": 7, "email": "ops@shop.example", "name": "Ops"}));
    z.put_org(json!({"id": 3, "name": "Shop", "organization_fields": {"plan": "flagship"}}));
}

fn expected_put(stamp: &str) -> Value {
    json!({"ticket": {
        "priority": "urgent",
        "tags": ["vip", "deskbot_escalated", "urgent_subject"],
        "comment": {"body": "[deskbot] Subject says URGENT.", "public": false},
        "safe_update": true,
        "updated_stamp": stamp
    }})
}

#[tokio::test]
async fn event_in_one_put_out_and_the_echo_sends_nothing() {
    let app = spawn_app().await;
    seed(&app.zendesk, 101, "URGENT: orders stopped syncing");
    let r = app
        .post_signed(event_body(
            "e2e-1",
            "created",
            101,
            "URGENT: orders stopped syncing",
        ))
        .await;
    assert_eq!(r.status(), 202);
    let z = app.zendesk.clone();
    eventually(10, "one PUT", || z.applied_puts().len() == 1).await;
    assert_eq!(
        app.zendesk.applied_puts()[0],
        expected_put("2026-11-23T17:00:00Z")
    );
    assert!(
        app.zendesk.requests().iter().all(|r| r.authorized),
        "every call carries credentials"
    );

    // The fake fires priority_changed, tags_changed and comment_added back; each is processed...
    eventually(10, "echoed events processed", || {
        count(&app.db, "SELECT COUNT(*) FROM events WHERE state = 'done'") == 4
    })
    .await;
    // ...and none sends anything: the diff against the updated ticket is empty.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.zendesk.all_puts().len(), 1);
    assert_eq!(app.events_in_state("pending"), 0);
    let outcomes = count(
        &app.db,
        "SELECT COUNT(*) FROM events WHERE outcome LIKE '%no_change%' OR outcome LIKE '%own_note%'",
    );
    assert_eq!(outcomes, 3);

    // Four jobs read the ticket, but the organization is cached: one read.
    let org_reads = app
        .zendesk
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/v2/organizations/"))
        .count();
    assert_eq!(org_reads, 1);
    let ticket = app.zendesk.ticket(101);
    assert_eq!(ticket["priority"], "urgent");
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("deskbot_jobs_processed_total{outcome=\"updated\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "deskbot_zendesk_requests_total{endpoint=\"update_ticket\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn trigger_body_goes_through_the_same_pipeline() {
    let app = spawn_app().await;
    seed(&app.zendesk, 102, "Urgent - store is down");
    let body = json!({"ticket_id": "102", "event": "created", "updated_at": "2026-11-23T17:00Z"})
        .to_string();
    assert_eq!(app.post_signed(body).await.status(), 202);
    let z = app.zendesk.clone();
    eventually(10, "one PUT", || z.applied_puts().len() == 1).await;
    assert_eq!(
        app.zendesk.applied_puts()[0]["ticket"]["priority"],
        "urgent"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_trigger_body_in_a_dry_run_without_credentials_says_it_was_not_read() {
    let app = spawn_app_with(Options {
        with_zendesk: false,
        dry_run: true,
        ..Options::default()
    })
    .await;
    let body = json!({"ticket_id": "104", "event": "created", "updated_at": "2026-11-23T17:00Z"})
        .to_string();
    assert_eq!(app.post_signed(body).await.status(), 202);
    eventually(10, "job done", || app.events_in_state("done") == 1).await;
    let outcome: Value = serde_json::from_str(&crate::support::text_of(
        &app.db,
        "SELECT outcome FROM events WHERE id = 1",
    ))
    .unwrap();
    assert_eq!(outcome["result"], "not_read");
    assert!(outcome["reason"].as_str().unwrap().starts_with(
        "dry run without Zendesk credentials: a trigger body carries only the ticket id"
    ));
    app.stop().await;
}

#[tokio::test]
async fn nothing_to_change_sends_nothing() {
    let app = spawn_app().await;
    seed(&app.zendesk, 103, "How do I export a report?");
    assert_eq!(
        app.post_signed(event_body(
            "calm-1",
            "created",
            103,
            "How do I export a report?"
        ))
        .await
        .status(),
        202
    );
    eventually(10, "job done", || app.events_in_state("done") == 1).await;
    assert!(app.zendesk.all_puts().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn rate_limited_waits_for_retry_after_then_succeeds() {
    let app = spawn_app().await;
    seed(&app.zendesk, 104, "URGENT");
    app.zendesk.fail_next(Method::PUT, 1, 429, Some("1"));
    assert_eq!(
        app.post_signed(event_body("rl-1", "created", 104, "URGENT"))
            .await
            .status(),
        202
    );
    let z = app.zendesk.clone();
    eventually(10, "PUT applied after the 429", || {
        z.applied_puts().len() == 1
    })
    .await;
    let puts = app.zendesk.all_puts();
    assert_eq!(
        puts.iter().map(|p| p.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let waited = puts[1].at.duration_since(puts[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?} after Retry-After: 1"
    );
    // A 429 is Zendesk's schedule, not the job's failure: it does not count toward the retry limit.
    assert_eq!(count(&app.db, "SELECT attempts FROM events"), 0);
    app.stop().await;
}

#[tokio::test]
async fn server_errors_back_off_then_succeed() {
    let app = spawn_app().await;
    seed(&app.zendesk, 105, "URGENT");
    app.zendesk.fail_next(Method::GET, 5, 500, None);
    assert_eq!(
        app.post_signed(event_body("5xx-1", "created", 105, "URGENT"))
            .await
            .status(),
        202
    );
    let z = app.zendesk.clone();
    eventually(20, "PUT after five 500s", || z.applied_puts().len() == 1).await;
    // The first six ticket reads belong to the job; later ones come from the echoed events.
    let gets: Vec<_> = app
        .zendesk
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v2/tickets/") && r.method == Method::GET)
        .take(6)
        .collect();
    assert_eq!(
        gets.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 500, 500, 500, 200]
    );
    // Delays grow: the last gap (5th try: 20 ms × 2^4 capped at 200 ms, ±20 %) exceeds the first (20 ms ±20 %).
    let first = gets[1].at.duration_since(gets[0].at);
    let last = gets[5].at.duration_since(gets[4].at);
    assert!(
        last > first,
        "backoff must grow: first {first:?}, last {last:?}"
    );
    // The delay runs from the worker's clock reading before the failed call, so the gap seen here
    // can be a few ms shorter than the 160 ms minimum; 100 ms still proves the growth.
    assert!(last >= Duration::from_millis(100), "last gap {last:?}");
    // A 500 may be this request's fault: each one counts toward DESKBOT_MAX_ATTEMPTS.
    assert_eq!(count(&app.db, "SELECT attempts FROM events"), 5);
    app.stop().await;
}

#[tokio::test]
async fn conflict_rereads_and_keeps_what_the_agent_added() {
    let app = spawn_app().await;
    seed(&app.zendesk, 106, "URGENT: refund");
    app.zendesk.agent_edits_before_next_put("agent_tag");
    assert_eq!(
        app.post_signed(event_body("409-1", "created", 106, "URGENT: refund"))
            .await
            .status(),
        202
    );
    let z = app.zendesk.clone();
    eventually(10, "PUT applied after the 409", || {
        z.applied_puts().len() == 1
    })
    .await;
    let statuses: Vec<u16> = app.zendesk.all_puts().iter().map(|p| p.status).collect();
    assert_eq!(statuses, vec![409, 200]);
    let applied = &app.zendesk.applied_puts()[0];
    assert_eq!(
        applied["ticket"]["tags"],
        json!(["vip", "agent_tag", "deskbot_escalated", "urgent_subject"])
    );
    assert_eq!(applied["ticket"]["updated_stamp"], "2026-11-23T17:00:01Z");
    app.stop().await;
}

#[tokio::test]
async fn client_errors_are_dead_letters_listed_by_the_cli() {
    let app = spawn_app().await;
    seed(&app.zendesk, 107, "URGENT");
    app.zendesk.fail_next(Method::PUT, 1, 422, None);
    assert_eq!(
        app.post_signed(event_body("dead-1", "created", 107, "URGENT"))
            .await
            .status(),
        202
    );
    eventually(10, "dead letter", || app.events_in_state("dead") == 1).await;
    assert_eq!(app.zendesk.all_puts().len(), 1, "a 422 is not retried");
    let (_, health) = app.get_json("/healthz").await;
    assert_eq!(health["queue"]["dead_letters"], 1);
    let metrics = app.get_text("/metrics").await;
    assert!(metrics.contains("deskbot_dead_letters 1"), "{metrics}");

    let out = support::deskbot_command()
        .args(["dead-letters", "--db"])
        .arg(&app.db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("107") && text.contains("Zendesk answered 422 to update_ticket"),
        "{text}"
    );

    let out = support::deskbot_command()
        .args(["dead-letters", "--requeue", "all", "--db"])
        .arg(&app.db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let z = app.zendesk.clone();
    eventually(10, "requeued job succeeds", || z.applied_puts().len() == 1).await;
    app.stop().await;
}

#[tokio::test]
async fn deleted_ticket_ends_the_job_quietly() {
    let app = spawn_app().await;
    assert_eq!(
        app.post_signed(event_body("gone-1", "created", 999, "URGENT"))
            .await
            .status(),
        202
    );
    eventually(10, "job done", || app.events_in_state("done") == 1).await;
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE outcome LIKE '%ticket_gone%'"
        ),
        1
    );
    assert!(app.zendesk.all_puts().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn dry_run_decides_but_never_writes() {
    let app = spawn_app_with(Options {
        dry_run: true,
        ..Options::default()
    })
    .await;
    seed(&app.zendesk, 108, "URGENT");
    assert_eq!(
        app.post_signed(event_body("dry-1", "created", 108, "URGENT"))
            .await
            .status(),
        202
    );
    eventually(10, "job done", || app.events_in_state("done") == 1).await;
    assert!(app.zendesk.all_puts().is_empty());
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE outcome LIKE '%\"dry_run\"%'"
        ),
        1
    );
    app.stop().await;

    // Without any Zendesk account: decides on the event's own snapshot.
    let app = spawn_app_with(Options {
        dry_run: true,
        with_zendesk: false,
        ..Options::default()
    })
    .await;
    assert_eq!(
        app.post_signed(event_body("dry-2", "created", 109, "URGENT"))
            .await
            .status(),
        202
    );
    eventually(10, "job done", || app.events_in_state("done") == 1).await;
    assert!(app.zendesk.requests().is_empty());
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE outcome LIKE '%deskbot_escalated%'"
        ),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn unstorable_event_gets_503_with_retry_after() {
    let app = spawn_app().await;
    // Another process holds the write lock longer than SQLite's busy timeout ("DB locked").
    let locker = rusqlite::Connection::open(&app.db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = app
        .post_signed(event_body("locked-1", "created", 1, "x"))
        .await;
    assert_eq!(r.status(), 503);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after < 60);
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    // Zendesk's retry then succeeds.
    assert_eq!(
        app.post_signed(event_body("locked-1", "created", 1, "x"))
            .await
            .status(),
        202
    );
    app.stop().await;
}

#[test]
fn killed_mid_job_completes_exactly_once_after_restart() {
    support::init_tracing();
    let outer = tokio::runtime::Runtime::new().unwrap();
    let zendesk = outer.block_on(FakeZendesk::start());
    seed(&zendesk, 110, "URGENT: checkout broken");
    // Zendesk applies the PUT, but the answer never reaches deskbot before it dies.
    zendesk.apply_then_hang(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default();

    let first = tokio::runtime::Runtime::new().unwrap();
    let cfg = support::config(dir.path(), &zendesk.url, &opts);
    let db = cfg.db.clone();
    let addr = first.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(deskbot::server::run(
            cfg,
            listener,
            tokio_util::sync::CancellationToken::new(),
        ));
        addr
    });
    let url = format!("http://{addr}/webhooks/zendesk");
    let body = event_body("crash-1", "created", 110, "URGENT: checkout broken");
    let ts = support::now_stamp();
    let sig = deskbot::webhook::signature::sign(SECRET, &ts, body.as_bytes());
    let status = outer.block_on(async {
        reqwest::Client::new()
            .post(&url)
            .header("x-zendesk-webhook-signature", sig)
            .header("x-zendesk-webhook-signature-timestamp", ts)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 202);
    outer.block_on(eventually(10, "PUT applied", || {
        zendesk.applied_puts().len() == 1
    }));
    // Kill: drop the runtime with the worker mid-request.
    first.shutdown_background();
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM events WHERE state = 'pending'"),
        1
    );

    let second = tokio::runtime::Runtime::new().unwrap();
    let cfg = support::config(dir.path(), &zendesk.url, &opts);
    second.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(deskbot::server::run(cfg, listener, shutdown.clone()));
        eventually(10, "job completed after restart", || {
            count(
                &db,
                "SELECT COUNT(*) FROM events WHERE id = 1 AND state = 'done'",
            ) == 1
        })
        .await;
        shutdown.cancel();
        handle.await.unwrap().unwrap();
    });
    // Exactly one applied update, and the redo found nothing left to change.
    assert_eq!(zendesk.applied_puts().len(), 1);
    assert_eq!(zendesk.all_puts().len(), 1);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE id = 1 AND outcome LIKE '%no_change%'"
        ),
        1
    );
    drop(outer);
}

#[tokio::test]
async fn healthz_reports_policy_and_queue() {
    let app = spawn_app().await;
    let (status, health) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["policy"]["loaded"], true);
    assert_eq!(health["policy"]["name"], "e2e");
    assert_eq!(
        health["queue"],
        json!({"depth": 0, "oldest_age_secs": 0, "dead_letters": 0})
    );
    app.stop().await;
}

const SLA_POLICY: &str = r#"
[policy]
name = "sla"

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
first_response_due = { id = 360001, type = "date" }
resolution_due = { id = 360002, type = "text" }

[[rule]]
name = "urgent"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
"#;

#[tokio::test]
async fn sla_due_dates_are_written_once_from_created_at() {
    let app = spawn_app_with(Options {
        policy: SLA_POLICY,
        ..Options::default()
    })
    .await;
    let mut t = api_ticket(120, "URGENT: store down");
    // Friday 17:00 PST: first response due Monday 10:00 (1 h + 2 h); resolution 24 business hours
    // = Fri 1 h + Mon 10 h + Tue 10 h + Wed 3 h → Wednesday 11:00.
    t["created_at"] = json!("2026-11-21T01:00:00Z");
    app.zendesk.put_ticket(t);
    assert_eq!(
        app.post_signed(event_body("sla-1", "created", 120, "URGENT: store down"))
            .await
            .status(),
        202
    );
    let z = app.zendesk.clone();
    eventually(10, "one PUT", || z.applied_puts().len() == 1).await;
    let put = &app.zendesk.applied_puts()[0]["ticket"];
    assert_eq!(
        put["custom_fields"],
        json!([{"id": 360001, "value": "2026-11-23"}, {"id": 360002, "value": "2026-11-25T19:00:00Z"}])
    );
    assert_eq!(
        put["comment"]["body"],
        "[deskbot] First response due Mon 23 Nov, 10:00 PST; resolution due Wed 25 Nov, 11:00 PST."
    );
    // The echo (priority, custom fields, comment) is processed and sends nothing more.
    eventually(10, "echo processed", || {
        app.events_in_state("done") >= 4 && app.events_in_state("pending") == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.zendesk.all_puts().len(), 1);
    // Both clocks ran out days ago: they show as breached (the policy escalates nothing).
    let (_, health) = app.get_json("/healthz").await;
    assert_eq!(
        health["sla"],
        json!({"running": 0, "paused": 0, "at_risk": 0, "breached": 2, "timers_due": 0})
    );
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("deskbot_sla_clocks{state=\"breached\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("deskbot_sla_timers_due 0"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn calls_to_zendesk_never_exceed_the_rate_limit() {
    // 8 requests per second (the window is shortened from a minute to a second for the test).
    let app = spawn_app_with(Options {
        requests_per_second: 8,
        ..Options::default()
    })
    .await;
    for id in 400..412u64 {
        seed(&app.zendesk, id, "URGENT: sync down");
        let r = app
            .post_signed(event_body(
                &format!("rl-{id}"),
                "created",
                id,
                "URGENT: sync down",
            ))
            .await;
        assert_eq!(r.status(), 202);
    }
    let z = app.zendesk.clone();
    eventually(30, "every ticket updated", || z.applied_puts().len() == 12).await;
    let times: Vec<_> = app.zendesk.requests().iter().map(|r| r.at).collect();
    assert!(
        times.len() >= 25,
        "a read and an update per ticket, one organization read"
    );
    // Receipt times can trail send times (more so on a loaded machine), hence the shorter window;
    // unpaced, all of these requests would arrive within a few hundred ms.
    let (in_window, i) = support::busiest_window(&times, Duration::from_millis(800));
    assert!(
        in_window <= 8,
        "{in_window} requests within one second starting at request {i}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_ticket_no_rule_classifies_gets_the_fallback_and_is_counted() {
    const FALLBACK: &str = r#"
[policy]
name = "fallback"
[words]
outage = ["down", "not syncing"]
[[rule]]
name = "outage"
when = { text = { has_any_word = "@outage" } }
priority = "urgent"
[unclassified]
add_tags = ["deskbot_unclassified"]
note = "No rule matched: please triage."
"#;
    let app = spawn_app_with(Options {
        policy: FALLBACK,
        ..Options::default()
    })
    .await;
    let mut t = api_ticket(131, "Hello");
    t["description"] = json!("Just saying thanks for last week.");
    app.zendesk.put_ticket(t);
    app.zendesk
        .put_user(json!({"id": 7, "email": "ops@shop.example", "name": "Ops"}));
    app.zendesk
        .put_org(json!({"id": 3, "name": "Shop", "organization_fields": {}}));
    let r = app
        .post_signed(event_body("fallback-1", "created", 131, "Hello"))
        .await;
    assert_eq!(r.status(), 202);
    let z = app.zendesk.clone();
    eventually(10, "one PUT", || z.applied_puts().len() == 1).await;
    let put = &app.zendesk.applied_puts()[0]["ticket"];
    assert_eq!(put["tags"], json!(["vip", "deskbot_unclassified"]));
    assert_eq!(
        put["comment"]["body"],
        "[deskbot] No rule matched: please triage."
    );
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("deskbot_tickets_unclassified_total{policy=\"fallback\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}
