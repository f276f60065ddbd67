//! kill -9 of the real process, several times while events arrive: every acknowledged event still
//! leads to exactly one update (none lost, none doubled), after restarts on the same database.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;

use crate::support::{api_ticket, event_body, eventually, now_stamp, FakeZendesk, SECRET};

fn start(port: u16, db: &std::path::Path, rules: &std::path::Path, zendesk: &str) -> Child {
    let mut c = crate::support::deskbot_command();
    c.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DESKBOT_DB", db)
        .env("DESKBOT_RULES", rules)
        .env("DESKBOT_WEBHOOK_SECRETS", SECRET)
        .env("DESKBOT_RETRY_BASE_MS", "20")
        .env("ZENDESK_URL", zendesk)
        .env("ZENDESK_EMAIL", "bot@example.com")
        .env("ZENDESK_API_TOKEN", "token")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_traffic_loses_and_doubles_nothing() {
    let z = FakeZendesk::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("p.toml");
    std::fs::write(&rules, crate::support::POLICY).unwrap();
    let db = dir.path().join("d.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/webhooks/zendesk");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Each answer to a PUT is held 40 ms, so jobs back up and kills land between "Zendesk applied
    // it" and "deskbot recorded it" as well as anywhere else.
    z.slow_puts(Duration::from_millis(40));
    let mut acknowledged = Vec::new();
    let mut ticket = 500u64;
    for round in 0..4 {
        let mut child = start(port, &db, &rules, &z.url);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "deskbot did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..15 {
            ticket += 1;
            z.put_ticket(api_ticket(ticket, "URGENT: orders stuck"));
            let body = event_body(
                &format!("crash-{ticket}"),
                "created",
                ticket,
                "URGENT: orders stuck",
            );
            let ts = now_stamp();
            let sig = deskbot::webhook::signature::sign(SECRET, &ts, body.as_bytes());
            let r = http
                .post(&url)
                .header("x-zendesk-webhook-signature", sig)
                .header("x-zendesk-webhook-signature-timestamp", ts)
                .body(body)
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 202) {
                acknowledged.push(ticket);
            }
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
        if round < 3 {
            // Let the queue drain partly, so the kill lands while jobs are in flight.
            tokio::time::sleep(Duration::from_millis(100)).await;
            // SIGKILL: no shutdown code runs.
            child.kill().unwrap();
            child.wait().unwrap();
        } else {
            let z2 = z.clone();
            let expect = acknowledged.clone();
            eventually(30, "every acknowledged ticket updated", move || {
                let done: Vec<u64> = z2
                    .requests()
                    .iter()
                    .filter(|r| r.method == Method::PUT && r.status == 200)
                    .filter_map(|r| {
                        r.path
                            .trim_start_matches("/api/v2/tickets/")
                            .trim_end_matches(".json")
                            .parse()
                            .ok()
                    })
                    .collect();
                expect.iter().all(|t| done.contains(t))
            })
            .await;
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            child.wait().unwrap();
        }
    }
    assert_eq!(
        acknowledged.len(),
        60,
        "every event was acknowledged while deskbot ran"
    );
    // The kills interrupted work: updates Zendesk applied but deskbot never recorded as done were
    // redone after a restart, and the redo found nothing left to change.
    let redone = crate::support::count(
        &db,
        "SELECT COUNT(*) FROM events WHERE outcome LIKE '%no_change%'",
    );
    assert!(
        redone >= 1,
        "no kill landed mid-job; the test proved nothing"
    );
    for t in &acknowledged {
        let applied: Vec<_> = z
            .requests()
            .into_iter()
            .filter(|r| {
                r.method == Method::PUT
                    && r.status == 200
                    && r.path == format!("/api/v2/tickets/{t}.json")
            })
            .collect();
        assert_eq!(
            applied.len(),
            1,
            "ticket {t}: exactly one applied update, got {}",
            applied.len()
        );
        assert_eq!(z.ticket(*t)["priority"], json!("urgent"));
    }
}
