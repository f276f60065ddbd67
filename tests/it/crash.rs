//! kill -9 of the real process, several times while events arrive: every acknowledged event still
//! leads to exactly one update (none lost, none doubled), after restarts on the same database.

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;

use crate::support::{
    api_ticket, event_body, eventually, free_port, post_signed_to, ticket_of, wait_listening,
    FakeZendesk, Reaped, SECRET,
};

/// A fake Zendesk, a policy and a database that successive `deskbot serve` processes share.
struct Rig {
    z: FakeZendesk,
    /// Kept so the files live as long as the rig.
    _dir: tempfile::TempDir,
    rules: std::path::PathBuf,
    db: std::path::PathBuf,
    port: u16,
    url: String,
    http: reqwest::Client,
}

impl Rig {
    async fn new(policy: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("p.toml");
        std::fs::write(&rules, policy).unwrap();
        let port = free_port();
        Rig {
            z: FakeZendesk::start().await,
            db: dir.path().join("d.db"),
            _dir: dir,
            rules,
            port,
            url: format!("http://127.0.0.1:{port}/webhooks/zendesk"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        }
    }

    /// Starts the real binary on the rig's port and database, and waits until it listens.
    async fn start(&self) -> Reaped {
        let mut c = crate::support::deskbot_command();
        let child = c
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("DESKBOT_DB", &self.db)
            .env("DESKBOT_RULES", &self.rules)
            .env("DESKBOT_WEBHOOK_SECRETS", SECRET)
            .env("DESKBOT_RETRY_BASE_MS", "20")
            .env("ZENDESK_URL", &self.z.url)
            .env("ZENDESK_EMAIL", "bot@example.com")
            .env("ZENDESK_API_TOKEN", "token")
            // Zendesk's limits would make the drain take minutes; these tests are about crashes.
            .env("ZENDESK_RATE_LIMIT_PER_MINUTE", "1000000")
            .env("ZENDESK_TICKET_UPDATES_PER_MINUTE", "1000000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(Reaped)
            .unwrap();
        wait_listening(self.port).await;
        child
    }

    /// Bodies of the updates the fake applied, by ticket.
    fn applied_by_ticket(&self) -> std::collections::HashMap<u64, Vec<serde_json::Value>> {
        let mut by_ticket = std::collections::HashMap::<u64, Vec<_>>::new();
        for r in self.z.requests() {
            if r.method == Method::PUT && r.status == 200 {
                by_ticket
                    .entry(ticket_of(&r.path))
                    .or_default()
                    .push(r.body.unwrap_or_default());
            }
        }
        by_ticket
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_traffic_loses_and_doubles_nothing() {
    let rig = Rig::new(crate::support::POLICY).await;
    let z = &rig.z;
    // Each answer to a PUT is held 150 ms (longer than the worker takes to reach the next tickets),
    // so kills land between "Zendesk applied it" and "deskbot recorded it" as well as elsewhere.
    z.slow_puts(Duration::from_millis(150));
    let mut acknowledged = Vec::new();
    let mut ticket = 500u64;
    for round in 0..4 {
        let mut child = rig.start().await;
        for _ in 0..15 {
            ticket += 1;
            z.put_ticket(api_ticket(ticket, "URGENT: orders stuck"));
            let body = event_body(
                &format!("crash-{ticket}"),
                "created",
                ticket,
                "URGENT: orders stuck",
            );
            let r = post_signed_to(&rig.http, &rig.url, body).await;
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
            eventually(30, "every acknowledged ticket updated", || {
                let done = rig.applied_by_ticket();
                acknowledged.iter().all(|t| done.contains_key(t))
            })
            .await;
            child.terminate();
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
        &rig.db,
        "SELECT COUNT(*) FROM events WHERE outcome LIKE '%no_change%'",
    );
    assert!(
        redone >= 1,
        "no kill landed mid-job; the test proved nothing"
    );
    let applied_by_ticket = rig.applied_by_ticket();
    for t in &acknowledged {
        let applied = &applied_by_ticket[t];
        assert_eq!(
            applied.len(),
            1,
            "ticket {t}: exactly one applied update, got {}",
            applied.len()
        );
        assert_eq!(z.ticket(*t)["priority"], json!("urgent"));
    }
}

/// Sends every event of `tickets` in order, each until deskbot acknowledges it (202, or 200 for a
/// duplicate), as Zendesk retries a delivery: through kills and restarts.
pub async fn deliver(http: reqwest::Client, url: String, bodies: Vec<String>) -> usize {
    let mut tries = 0;
    for body in bodies {
        loop {
            tries += 1;
            let r = post_signed_to(&http, &url, body.clone()).await;
            if r.is_ok_and(|r| r.status() == 202 || r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    tries
}

/// `scripts/crash.sh` runs this: `CRASH_KILLS` kills (default 5) at random moments while four
/// senders keep posting events (a `created` and five comments per ticket, each changing it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "sustained load for many seconds: run by scripts/crash.sh"]
async fn kill_9_at_random_points_under_sustained_load() {
    const WORDS: u64 = 5;
    const SENDERS: u64 = 4;
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rig = Rig::new(crate::support::word_policy(WORDS)).await;
    let z = &rig.z;
    z.slow_puts(Duration::from_millis(2));
    // Enough tickets that the senders are still busy when the last kill lands.
    let tickets = 150 * (kills as u64 + 1);
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let mut bodies = Vec::new();
        for t in (1..=tickets).filter(|t| t % SENDERS == s) {
            let mut ticket = api_ticket(t, "URGENT: orders stuck");
            ticket["organization_id"] = json!(null);
            z.put_ticket(ticket);
            bodies.push(event_body(
                &format!("c-{t}"),
                "created",
                t,
                "URGENT: orders stuck",
            ));
            for w in 1..=WORDS {
                bodies.push(crate::support::comment_body(
                    &format!("m-{t}-{w}"),
                    t,
                    &format!("see w{w}"),
                ));
            }
        }
        senders.push(tokio::spawn(deliver(
            rig.http.clone(),
            rig.url.clone(),
            bodies,
        )));
    }
    let started = Instant::now();
    let mut child = rig.start().await;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1500))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        child = rig.start().await;
    }
    let mut tries = 0;
    for s in senders {
        tries += s.await.unwrap();
    }
    let sent_at = started.elapsed();
    let mut expect_tags = vec![json!("vip")];
    expect_tags.extend((1..=WORDS).map(|w| json!(format!("w{w}"))));
    let expect_tags = json!(expect_tags);
    eventually(120, "every ticket has every event's change", || {
        (1..=tickets).all(|t| z.ticket(t)["tags"] == expect_tags)
    })
    .await;
    child.terminate();

    let events = (tickets * (WORDS + 1)) as i64;
    assert_eq!(
        crate::support::count(&rig.db, "SELECT COUNT(*) FROM events WHERE state = 'done'"),
        events
    );
    let puts_per_ticket = rig.applied_by_ticket();
    let mut total_puts = 0;
    for t in 1..=tickets {
        let puts = &puts_per_ticket[&t];
        total_puts += puts.len();
        assert_eq!(z.ticket(t)["priority"], json!("urgent"), "ticket {t}");
        // Each applied update added something the one before had not: none was applied twice.
        let sizes: Vec<usize> = puts
            .iter()
            .map(|p| p["ticket"]["tags"].as_array().map_or(0, Vec::len))
            .collect();
        assert!(
            sizes.windows(2).all(|w| w[0] < w[1]),
            "ticket {t}: updates {puts:?}"
        );
        assert!(
            puts.len() as u64 <= WORDS + 1,
            "ticket {t}: {} updates",
            puts.len()
        );
    }
    let redone = crate::support::count(
        &rig.db,
        "SELECT COUNT(*) FROM events WHERE outcome LIKE '%no_change%'",
    );
    eprintln!(
        "crash: {kills} kills; {events} events acknowledged ({tries} deliveries, {} retried) in {sent_at:.1?}; \
         {total_puts} updates for {tickets} tickets; {redone} jobs found their update already applied",
        tries - events as usize
    );
}
