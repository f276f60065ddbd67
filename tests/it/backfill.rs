//! `deskbot backfill` against the fake Zendesk: the dry run writes nothing, `--apply` queues
//! exactly the tickets that need an update and the worker sends one update each, a second run
//! queues nothing new, an interrupted run resumes, and the export's 429s and outages are waited out.

use std::process::Output;
use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};

use crate::support::{
    api_ticket, count, deskbot_command, eventually, spawn_app_with, FakeZendesk, Options, Reaped,
};

const POLICY: &str = r#"
[policy]
name = "shop"
[[rule]]
name = "urgent subject"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
add_tags = ["urgent_subject"]
"#;

/// 30 tickets: every third needs an update (URGENT, not yet urgent), every third is already right,
/// every third matches nothing; every fifth is solved and not decided at all.
fn seed(z: &FakeZendesk) -> Vec<u64> {
    let mut needs = Vec::new();
    for id in 1..=30u64 {
        let mut t = api_ticket(
            id,
            if id % 3 == 2 {
                "Hello"
            } else {
                "URGENT: checkout down"
            },
        );
        t["updated_at"] = json!(format!("2026-11-{:02}T10:00:00Z", 1 + id % 28));
        if id % 3 == 1 {
            t["priority"] = json!("urgent");
            t["tags"] = json!(["vip", "urgent_subject"]);
        }
        if id % 5 == 0 {
            t["status"] = json!("solved");
        } else if id % 3 == 0 {
            needs.push(id);
        }
        z.put_ticket(t);
    }
    seed_people(z);
    needs
}

/// A directory holding the policy file and room for a queue database (kept while the first value lives).
fn workspace() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("p.toml");
    std::fs::write(&rules, POLICY).unwrap();
    let db = dir.path().join("q.db");
    (dir, rules, db)
}

/// The requester and organization every seeded ticket names.
fn seed_people(z: &FakeZendesk) {
    z.put_user(json!({"id": 7, "email": "ops@shop.example", "name": "Ops"}));
    z.put_org(json!({"id": 3, "name": "Shop", "organization_fields": {}}));
}

/// The ids of the tickets updated, in order.
fn updated_ids(z: &FakeZendesk) -> Vec<u64> {
    let mut ids: Vec<u64> = z
        .all_puts()
        .iter()
        .map(|r| crate::support::ticket_of(&r.path))
        .collect();
    ids.sort_unstable();
    ids
}

/// Runs a backfill to its end, off the runtime's threads (the fake answers on them).
async fn backfill(
    z: &FakeZendesk,
    rules: &std::path::Path,
    db: &std::path::Path,
    extra: &[&str],
) -> Output {
    let mut c = command(z, rules, db, extra);
    c.args(["--per-page", "4", "--export-per-minute", "6000"]);
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

fn command(
    z: &FakeZendesk,
    rules: &std::path::Path,
    db: &std::path::Path,
    extra: &[&str],
) -> std::process::Command {
    let mut c = deskbot_command();
    c.arg("backfill")
        .args(["--rules", &rules.display().to_string()])
        .args(["--db", &db.display().to_string()])
        .args(extra)
        .env("ZENDESK_URL", &z.url)
        .env("ZENDESK_EMAIL", "bot@example.com")
        .env("ZENDESK_API_TOKEN", "token");
    c
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn exports(z: &FakeZendesk) -> usize {
    z.requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/v2/incremental/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_what_would_change_and_writes_nothing() {
    let z = FakeZendesk::start().await;
    let needs = seed(&z);
    let (_dir, rules, db) = workspace();
    let out = backfill(&z, &rules, &db, &["--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backfill"]["read"], 30);
    assert_eq!(v["backfill"]["decided"], 24);
    // Off a terminal, a line per page with the estimated total and the time left at the
    // export's rate (8 pages of 4 at 6,000 a minute: under a minute).
    let err = text(&out.stderr);
    assert!(
        err.contains("deskbot: backfill read 4 of about 30 tickets (")
            && err.contains("; under a minute left at 6000 requests a minute"),
        "{err}"
    );
    let changed: Vec<u64> = v["backfill"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ticket"].as_u64().unwrap())
        .collect();
    let mut changed_sorted = changed.clone();
    changed_sorted.sort_unstable();
    assert_eq!(changed_sorted, needs);
    assert_eq!(
        v["backfill"]["changes"][0]["what"],
        json!(["priority normal → urgent", "+urgent_subject"])
    );
    // The replay report: levels of the decided tickets.
    let levels = &v["report"]["policies"][0]["levels"];
    assert_eq!(
        levels[0],
        json!({"level": "urgent", "decided": 16, "expected": 0, "agreed": 0, "precision": null, "recall": null})
    );
    assert_eq!(
        levels[1]["level"], "unclassified",
        "no rule gave them a level"
    );
    assert_eq!(levels[1]["decided"], 8);
    // 30 tickets, 4 a page: 8 export pages; nothing written, no database made.
    assert_eq!(exports(&z), 8);
    assert!(z.writes().is_empty(), "{:?}", z.writes());
    assert!(!db.exists());
    let out = backfill(&z, &rules, &db, &[]).await;
    let t = text(&out.stdout);
    assert!(
        t.contains(
            "backfill: 30 tickets read from Zendesk, 24 in status new/open/pending/hold decided"
        ),
        "{t}"
    );
    assert!(
        t.contains(&format!("{} tickets would change:", needs.len())),
        "{t}"
    );
    assert!(
        t.contains("#3 \"URGENT: checkout down\": priority normal → urgent, +urgent_subject"),
        "{t}"
    );
    assert!(
        t.contains("dry run: nothing was written; add --apply"),
        "{t}"
    );
    // Not on a terminal: a plain line per page on stderr (8 pages of 4).
    let e = text(&out.stderr);
    assert_eq!(e.matches("deskbot: backfill read").count(), 8, "{e}");
    assert!(
        e.contains("deskbot: backfill read 30 of about 30 tickets (24 decided, 8 to change)"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_queues_each_needed_update_once_and_the_worker_sends_it() {
    let app = spawn_app_with(Options {
        policy: POLICY,
        ..Options::default()
    })
    .await;
    let needs = seed(&app.zendesk);
    let rules = app.db.parent().unwrap().join("policy.toml");
    let out = backfill(&app.zendesk, &rules, &app.db, &["--apply"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!(
            "queued {} for the worker (0 already queued",
            needs.len()
        )),
        "{}",
        text(&out.stdout)
    );
    let z = app.zendesk.clone();
    eventually(15, "one update per ticket that needs one", || {
        z.applied_puts().len() == needs.len()
    })
    .await;
    let put_ids = updated_ids(&app.zendesk);
    assert_eq!(
        put_ids, needs,
        "no update for tickets already right, solved, or unmatched"
    );
    for id in &needs {
        assert_eq!(app.zendesk.ticket(*id)["priority"], "urgent");
    }
    // A second run reads everything again and queues nothing new.
    let out = backfill(&app.zendesk, &rules, &app.db, &["--apply", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backfill"]["queued"], 0);
    assert_eq!(
        v["backfill"]["changes"],
        json!([]),
        "the tickets are right now"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.zendesk.all_puts().len(), needs.len());
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE dedup_key LIKE 'backfill:%'"
        ),
        needs.len() as i64
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_apply_resumes_where_it_stopped() {
    let z = FakeZendesk::start().await;
    let needs = seed(&z);
    let (_dir, rules, db) = workspace();
    // One page a second.
    let mut child = Reaped(
        command(
            &z,
            &rules,
            &db,
            &["--apply", "--per-page", "4", "--export-per-minute", "60"],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    // Stopped at a random moment after the first page (printed, to replay a failure).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let stop_after = 1200 + u64::from(nanos % 2500);
    eprintln!("stopping the backfill after {stop_after} ms");
    tokio::time::sleep(Duration::from_millis(stop_after)).await;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let first = exports(&z);
    assert!(
        (1..8).contains(&first),
        "{first} pages before the stop: {:?}",
        z.requests()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
    let kept = crate::support::text_of(&db, "SELECT position FROM cursors");
    assert!(!kept.is_empty());
    let out = backfill(&z, &rules, &db, &["--apply", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("resuming the backfill where the last run stopped"));
    // The rest of the export only, from the kept cursor: 8 pages in all, 9 when the stop came
    // while a page was being queued (that page is read again; its tickets are not queued twice).
    let total = exports(&z);
    assert!(
        (8..=9).contains(&total),
        "{first} pages, then {} more",
        total - first
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE dedup_key LIKE 'backfill:%'"
        ),
        needs.len() as i64
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM cursors"),
        0,
        "read to the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_outages_of_the_export_are_waited_out() {
    let z = FakeZendesk::start().await;
    let needs = seed(&z);
    let (_dir, rules, db) = workspace();
    z.fail_next(Method::GET, 1, 429, Some("1"));
    let out = backfill(&z, &rules, &db, &["--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["backfill"]["changes"].as_array().unwrap().len(),
        needs.len()
    );
    // Zendesk down longer than the command waits: it stops, says so, and exits 1.
    z.fail_next(Method::GET, 6, 503, Some("0"));
    let out = backfill(&z, &rules, &db, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Zendesk did not answer the export after 6 tries"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_refuses_to_start_without_credentials_or_with_a_broken_policy() {
    let (_dir, rules, db) = workspace();
    let out = deskbot_command()
        .args(["backfill", "--rules", &rules.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("backfill reads tickets from Zendesk: set ZENDESK_SUBDOMAIN")
    );
    std::fs::write(&rules, "[policy]\nname = 1\n").unwrap();
    let z = FakeZendesk::start().await;
    let out = backfill(&z, &rules, &db, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("the policy does not load, so backfill does not start"),
        "{e}"
    );
    assert!(e.contains("p.toml:2:1"), "{e}");
    assert_eq!(exports(&z), 0);
    let out = backfill(&z, &rules, &db, &["--status", "opne"]).await;
    assert!(
        text(&out.stderr).contains("unknown status `opne` (did you mean `open`?)"),
        "{}",
        text(&out.stderr)
    );
}

const CLOCKED: &str = r#"
[policy]
name = "shop"
[calendars.always]
timezone = "UTC"
hours = { mon-sun = "00:00-24:00" }
[sla.urgent]
first_response = "1 business hour"
[sla.normal]
first_response = "8 business hours"
[[rule]]
name = "urgent subject"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
add_tags = ["urgent_subject"]
"#;

/// API calls of an applied backfill of 2,000 tickets, a third of which need an update.
struct Cost {
    updates: usize,
    exports: usize,
    ticket_reads: usize,
    audit_reads: usize,
    org_reads: usize,
    puts: usize,
}

async fn backfill_2000(policy: &'static str) -> Cost {
    let app = spawn_app_with(Options {
        policy,
        ..Options::default()
    })
    .await;
    let z = app.zendesk.clone();
    // Echoed events would read tickets again on their own account: not the backfill's cost.
    z.echo_to("http://127.0.0.1:9/", "unused");
    // Created a minute ago: no SLA timer falls due (and reads) while the test runs.
    let created = (chrono::Utc::now() - chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut needs = Vec::new();
    for id in 1..=2000u64 {
        let mut t = api_ticket(id, if id % 3 == 0 { "URGENT: down" } else { "Hello" });
        t["updated_at"] = json!(format!("2026-11-{:02}T10:00:00Z", 1 + id % 28));
        t["created_at"] = json!(created);
        if id % 3 == 0 {
            needs.push(id);
        }
        z.put_ticket(t);
        z.put_audit(
            id,
            json!({"created_at": created, "author_id": 7, "events": [
                {"type": "Comment", "author_id": 7, "public": true},
                {"type": "Create", "field_name": "status", "value": "new"}]}),
        );
    }
    seed_people(&z);
    let rules = app.db.parent().unwrap().join("policy.toml");
    let mut c = command(&z, &rules, &app.db, &["--apply"]);
    c.args(["--per-page", "1000", "--export-per-minute", "6000"]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let timed = policy.contains("[sla.");
    let jobs = if timed { 2000 } else { needs.len() } as i64;
    let db = app.db.clone();
    eventually(90, "every queued job done", || {
        count(&db, "SELECT COUNT(*) FROM events WHERE state = 'done'") >= jobs
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = z.requests();
    let counted = |f: &dyn Fn(&crate::support::fake_zendesk::Recorded) -> bool| {
        requests.iter().filter(|r| f(r)).count()
    };
    let cost = Cost {
        updates: needs.len(),
        exports: counted(&|r| {
            r.path.starts_with("/api/v2/incremental/") || r.path.starts_with("/api/v2/search/count")
        }),
        ticket_reads: counted(&|r| {
            r.method == Method::GET
                && r.path.starts_with("/api/v2/tickets/")
                && !r.path.contains("/audits")
                && !r.path.contains("/comments")
        }),
        audit_reads: counted(&|r| r.path.contains("/audits.json")),
        org_reads: counted(&|r| r.path.starts_with("/api/v2/organizations/")),
        puts: z.all_puts().len(),
    };
    let mut put_ids = updated_ids(&z);
    put_ids.dedup();
    assert_eq!(put_ids, needs, "one update per ticket that needs one");
    app.stop().await;
    cost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_2000_tickets_costs_one_write_per_update_and_no_read_per_ticket() {
    let c = backfill_2000(POLICY).await;
    assert_eq!(
        c.puts, c.updates,
        "one write per ticket that needs one, none for the others"
    );
    assert_eq!(
        c.ticket_reads, 0,
        "the export's copy is sent with safe_update: no read before the update"
    );
    assert_eq!(c.audit_reads, 0, "the policy runs no clocks");
    assert_eq!(
        c.exports, 3,
        "2,000 tickets, 1,000 a page, and a count for the ETA"
    );
    let per_update = (c.exports + c.ticket_reads + c.org_reads) as f64 / c.updates as f64;
    eprintln!(
        "backfill API cost: {} updates, {} export pages and count, {} ticket reads, {} organization reads: {per_update:.4} reads + 1 write per update",
        c.updates, c.exports, c.ticket_reads, c.org_reads
    );
    assert!(per_update <= 1.1, "{per_update} reads per update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_with_sla_clocks_reads_each_open_tickets_history_once() {
    let c = backfill_2000(CLOCKED).await;
    assert_eq!(c.puts, c.updates);
    assert_eq!(c.ticket_reads, 0);
    assert_eq!(c.audit_reads, 2000, "one page of audits per ticket");
    let per_ticket = (c.exports + c.ticket_reads + c.audit_reads + c.org_reads) as f64 / 2000.0;
    eprintln!(
        "backfill API cost with clocks: 2000 tickets, {} updates, {} export pages and count, {} audit reads, {} organization reads: {per_ticket:.4} reads per ticket + 1 write per update",
        c.updates, c.exports, c.audit_reads, c.org_reads
    );
    assert!(per_ticket <= 1.1, "{per_ticket} reads per ticket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_catches_up_on_the_changes_made_while_it_was_down() {
    // The database of a deskbot that stored one webhook, then stopped. While it was down, 50
    // tickets changed in Zendesk and their webhooks were lost; one ticket changed long before.
    let now = chrono::Utc::now();
    let stamp =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut tickets = Vec::new();
    let mut needs = Vec::new();
    for id in 500..550u64 {
        let mut t = api_ticket(id, if id % 2 == 0 { "URGENT: down" } else { "Hello" });
        t["updated_at"] = json!(stamp(now - chrono::Duration::minutes(1)));
        if id % 2 == 0 {
            needs.push(id);
        }
        tickets.push(t);
    }
    let mut old = api_ticket(600, "URGENT: long ago");
    old["updated_at"] = json!(stamp(now - chrono::Duration::hours(3)));
    tickets.push(old);
    // Ticket 1 changed in the gap too, but its webhook was stored: that change is not queued again.
    let mut heard = api_ticket(1, "Hello");
    heard["updated_at"] = json!(stamp(now - chrono::Duration::minutes(1)));
    tickets.push(heard);
    let app = spawn_app_with(Options {
        policy: POLICY,
        backlog: vec![crate::support::event_body(
            "before-the-stop",
            "created",
            1,
            "Hello",
        )],
        tickets,
        ..Options::default()
    })
    .await;
    seed_people(&app.zendesk);
    let z = app.zendesk.clone();
    eventually(20, "the lost changes decided", || {
        z.applied_puts().len() == needs.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let put_ids = updated_ids(&app.zendesk);
    assert_eq!(
        put_ids, needs,
        "each lost change once; the old ticket is not read again"
    );
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE dedup_key LIKE 'backfill:%'"
        ),
        50
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reads_the_search_export_and_an_expired_cursor_restarts_from_the_last_ticket_seen()
{
    let z = FakeZendesk::start().await;
    let needs = seed(&z);
    // Created one a day, in id order: the Search Export's order.
    for id in 1..=30u64 {
        let mut t = z.ticket(id);
        t["created_at"] = json!(format!("2026-10-{id:02}T10:00:00Z"));
        z.put_ticket(t);
    }
    z.expire_next_search_cursor();
    let (_dir, rules, db) = workspace();
    let out = backfill(&z, &rules, &db, &["--query", "URGENT", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changed: Vec<u64> = v["backfill"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ticket"].as_u64().unwrap())
        .collect();
    assert_eq!(changed, needs, "each once, none skipped");
    // The 20 URGENT tickets, 16 of them open.
    assert_eq!(v["backfill"]["decided"], 16);
    let searches: Vec<String> = z
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/v2/search/export"))
        .map(|r| format!("{} {}", r.status, r.path))
        .collect();
    // Page one ends on ticket 6 (created 6 October); its cursor then expires.
    assert!(searches[1].starts_with("422 "), "{searches:#?}");
    assert!(
        searches[2].contains("query=URGENT+created%3E2026-10-06T09%3A59%3A59Z"),
        "{searches:#?}"
    );
    assert!(searches
        .iter()
        .all(|s| s.contains("filter%5Btype%5D=ticket")));
    // The requester and the organization are read once for the run, not once a page.
    let people = z
        .requests()
        .iter()
        .filter(|r| r.path.contains("/show_many.json"))
        .count();
    assert_eq!(people, 2);
    assert!(z.writes().is_empty(), "a dry run writes nothing");
}

#[test]
fn a_query_naming_a_type_or_nothing_is_refused() {
    for (q, says) in [
        ("type:ticket tags:vip", "leave out type:"),
        ("  ", "the query is empty"),
    ] {
        let out = deskbot_command()
            .args(["backfill", "--query", q])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
}

/// The value of a metric line in /metrics text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_policy_is_reapplied_to_the_open_tickets_once() {
    let mut tickets = Vec::new();
    for id in 1..=10u64 {
        let mut t = api_ticket(id, if id <= 5 { "Refund please" } else { "Hello" });
        t["tags"] = json!([]);
        tickets.push(t);
    }
    let mut solved = api_ticket(11, "Refund please");
    solved["status"] = json!("solved");
    tickets.push(solved);
    let app = spawn_app_with(Options {
        policy: POLICY,
        tickets,
        reapply: true,
        ..Options::default()
    })
    .await;
    seed_people(&app.zendesk);
    let rules = app.db.parent().unwrap().join("policy.toml");
    let changed = format!(
        "{POLICY}\n[[rule]]\nname = \"refunds\"\nwhen = {{ subject = {{ has_word = \"refund\" }} }}\npriority = \"high\"\nadd_tags = [\"refund\"]\n"
    );
    std::fs::write(&rules, &changed).unwrap();
    let z = app.zendesk.clone();
    eventually(20, "the five open refund tickets updated", || {
        z.applied_puts().len() == 5
    })
    .await;
    let mut ids = updated_ids(&app.zendesk);
    ids.dedup();
    assert_eq!(ids, [1, 2, 3, 4, 5], "not the solved one, not the others");
    assert_eq!(app.zendesk.ticket(3)["priority"], "high");
    let m = app.get_text("/metrics").await;
    assert_eq!(
        metric(&m, "deskbot_reapply_tickets_total{outcome=\"changed\"}"),
        5.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "deskbot_reapply_tickets_total{outcome=\"unchanged\"}"),
        5.0
    );
    assert_eq!(
        metric(&m, "deskbot_reapply_runs_total{outcome=\"done\"}"),
        1.0
    );
    let reads = |z: &FakeZendesk| {
        z.requests()
            .iter()
            .filter(|r| r.path.starts_with("/api/v2/search/export"))
            .count()
    };
    assert_eq!(reads(&app.zendesk), 1, "one page of open tickets");
    // The same text saved again is the same version: nothing is read or queued again.
    std::fs::write(&rules, &changed).unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(reads(&app.zendesk), 1);
    assert_eq!(app.zendesk.all_puts().len(), 5);
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE dedup_key LIKE 'reapply:%'"
        ),
        5
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_catches_up_after_a_quiet_spell_and_queues_each_change_once() {
    let app = spawn_app_with(Options {
        policy: POLICY,
        catch_up_idle: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    seed_people(&app.zendesk);
    // While deskbot runs, 20 tickets change and none of their webhooks arrives.
    let changed = (chrono::Utc::now() - chrono::Duration::seconds(20))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut needs = Vec::new();
    for id in 700..720u64 {
        let mut t = api_ticket(id, if id % 2 == 0 { "URGENT: down" } else { "Hello" });
        t["updated_at"] = json!(changed);
        if id % 2 == 0 {
            needs.push(id);
        }
        app.zendesk.put_ticket(t);
    }
    let z = app.zendesk.clone();
    eventually(20, "the unheard changes decided", || {
        z.applied_puts().len() == needs.len()
    })
    .await;
    // Several more quiet spells: each asks Zendesk again, and queues nothing it has heard.
    let exports_then = exports(&app.zendesk);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(exports(&app.zendesk) > exports_then, "asked again");
    assert_eq!(updated_ids(&app.zendesk), needs);
    let m = app.get_text("/metrics").await;
    assert_eq!(metric(&m, "deskbot_catch_up_tickets_total"), 20.0, "{m}");
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE dedup_key LIKE 'backfill:%'"
        ),
        20
    );
    app.stop().await;
}
