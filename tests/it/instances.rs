//! Several `deskbot serve` processes on one PostgreSQL database, behind one address, while one is
//! killed with SIGKILL mid-job and another is restarted (a rolling deploy): every acknowledged
//! event is done once, each ticket's jobs finish in order, each SLA timer fires once, and the
//! instances together stay under the Zendesk rate limit (checked against the fake's request log).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    api_ticket, busiest_window, comment_body, event_body, eventually, free_port, ticket_of,
    wait_listening, FakeZendesk, Reaped, SECRET,
};

const TICKETS: u64 = 300;
/// Customer comments per ticket after its `created` event: 300 × 17 = 5,100 events.
const COMMENTS: u64 = 16;
/// The account's limits given to every instance: each instance alone would allow this much.
const REQUESTS_PER_MINUTE: usize = 900;
const UPDATES_PER_MINUTE: usize = 450;

/// The word policy (a tag per comment word) with a first-reply target every ticket has missed
/// (created a week ago), so each ticket's breach timer fires while the instances come and go.
fn policy() -> String {
    let mut p = String::from(
        "[policy]\nname = \"ha\"\n\n[calendars.always]\ntimezone = \"UTC\"\nhours = { mon-sun = \"00:00-24:00\" }\n\n\
         [sla.urgent]\nfirst_response = \"1 business hours\"\n\n\
         [[rule]]\nname = \"urgent-subject\"\nwhen = { subject = { has_word = \"urgent\" } }\npriority = \"urgent\"\n\n\
         [[rule]]\nname = \"breached\"\non = [\"sla.breached\"]\nadd_tags = [\"sla_missed\"]\n",
    );
    for w in 1..=COMMENTS {
        p.push_str(&format!(
            "\n[[rule]]\nname = \"word-{w}\"\non = [\"comment_added\"]\n\
             when = {{ comment = {{ has_word = \"w{w}\" }} }}\nadd_tags = [\"w{w}\"]\n"
        ));
    }
    p
}

/// One address in front of the instances: each connection goes to the next instance that
/// accepts it, as a load balancer that skips a dead machine does.
async fn balancer(backends: Arc<Mutex<Vec<u16>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((mut client, _)) = listener.accept().await {
            let ports = backends.lock().unwrap().clone();
            next += 1;
            let start = next;
            tokio::spawn(async move {
                for i in 0..ports.len() {
                    let p = ports[(start + i) % ports.len()];
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", p)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

struct Cluster {
    url: String,
    rules: std::path::PathBuf,
    zendesk: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(&self, port: u16) -> Reaped {
        let child = crate::support::deskbot_command()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("DESKBOT_DATABASE_URL", &self.url)
            .env("DESKBOT_RULES", &self.rules)
            .env("DESKBOT_WEBHOOK_SECRETS", SECRET)
            .env("DESKBOT_RETRY_BASE_MS", "20")
            .env("ZENDESK_URL", &self.zendesk)
            .env("ZENDESK_EMAIL", "bot@example.com")
            .env("ZENDESK_API_TOKEN", "token")
            .env(
                "ZENDESK_RATE_LIMIT_PER_MINUTE",
                REQUESTS_PER_MINUTE.to_string(),
            )
            .env(
                "ZENDESK_TICKET_UPDATES_PER_MINUTE",
                UPDATES_PER_MINUTE.to_string(),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(Reaped)
            .unwrap();
        child
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_lose_nothing_when_one_is_killed_and_one_restarted() {
    let Some(server) = crate::postgres::server() else {
        return;
    };
    let url = crate::postgres::fresh_database(&server).await;
    let z = FakeZendesk::start().await;
    // Each answer to a PUT is held, so the kill lands between "Zendesk applied it" and "deskbot
    // recorded it" as well as elsewhere.
    z.slow_puts(Duration::from_millis(40));
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("p.toml");
    std::fs::write(&rules, policy()).unwrap();
    let cluster = Cluster {
        url: url.clone(),
        rules,
        zendesk: z.url.clone(),
        _dir: dir,
    };
    // Migrate once, so the instances start on a ready schema (each would also do it, under a lock).
    drop(deskbot::queue::store::Store::connect(&url).await.unwrap());
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut instances: Vec<Reaped> = ports.iter().map(|p| cluster.start(*p)).collect();
    for p in &ports {
        wait_listening(*p).await;
    }
    let live = Arc::new(Mutex::new(ports.clone()));
    let front = balancer(live.clone()).await;
    let webhook = format!("http://127.0.0.1:{front}/webhooks/zendesk");

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for s in 0..4u64 {
        let mut bodies = Vec::new();
        for t in (1..=TICKETS).filter(|t| t % 4 == s) {
            let mut ticket = api_ticket(t, "URGENT: orders stuck");
            ticket["organization_id"] = json!(null);
            z.put_ticket(ticket);
            bodies.push(event_body(
                &format!("c-{t}"),
                "created",
                t,
                "URGENT: orders stuck",
            ));
            for w in 1..=COMMENTS {
                bodies.push(comment_body(&format!("m-{t}-{w}"), t, &format!("see w{w}")));
            }
        }
        senders.push(tokio::spawn(crate::crash::deliver(
            http.clone(),
            webhook.clone(),
            bodies,
        )));
    }
    let started = Instant::now();
    // Mid-traffic, mid-job: SIGKILL the first instance (its leases must be taken over).
    tokio::time::sleep(Duration::from_secs(4)).await;
    live.lock().unwrap().retain(|p| *p != ports[0]);
    instances[0].kill().unwrap();
    instances[0].wait().unwrap();
    // A rolling deploy of the second: stopped (SIGTERM), then a new process on its port.
    tokio::time::sleep(Duration::from_secs(2)).await;
    live.lock().unwrap().retain(|p| *p != ports[1]);
    instances[1].terminate();
    instances[1] = cluster.start(ports[1]);
    wait_listening(ports[1]).await;
    live.lock().unwrap().push(ports[1]);
    for s in senders {
        s.await.unwrap();
    }
    let sent_in = started.elapsed();

    let store = deskbot::queue::store::Store::connect(&url).await.unwrap();
    let events = (TICKETS * (COMMENTS + 1)) as i64;
    let mut expect_tags: Vec<String> = vec!["sla_missed".into(), "vip".into()];
    expect_tags.extend((1..=COMMENTS).map(|w| format!("w{w}")));
    expect_tags.sort();
    eventually(
        240,
        "every ticket has every event's change and its breach",
        || {
            (1..=TICKETS).all(|t| {
                let mut tags: Vec<String> = z.ticket(t)["tags"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                tags.sort();
                tags == expect_tags
            })
        },
    )
    .await;
    eventually(60, "every job finished", || {
        futures_executor(store.stats(chrono::Utc::now())).is_ok_and(|s| s.depth == 0)
    })
    .await;
    let drained_in = started.elapsed();
    // The first was killed and reaped already.
    for mut i in instances.into_iter().skip(1) {
        i.terminate();
    }

    // Every acknowledged event was done once: no job dead, none waiting, one row per event.
    let client = deskbot::queue::postgres::connect(&url).await.unwrap();
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM events WHERE dedup_key LIKE 'event:c-%' OR dedup_key LIKE 'event:m-%'"
        )
        .await,
        events
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE state <> 'done'").await,
        0
    );
    // Each ticket's jobs finished in the order they arrived.
    let overtaken: Vec<String> = client
        .query(
            "SELECT a.ticket_id, a.id, a.dedup_key, a.finished_at, a.leases, b.id, b.dedup_key,
                    b.finished_at, b.leases
             FROM events a JOIN events b
               ON a.ticket_id = b.ticket_id AND a.id < b.id AND a.finished_at > b.finished_at
             LIMIT 5",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "ticket {}: {} {} done at {} ({} leases) after {} {} done at {} ({} leases)",
                r.get::<_, i64>(0),
                r.get::<_, i64>(1),
                r.get::<_, String>(2),
                r.get::<_, i64>(3),
                r.get::<_, i32>(4),
                r.get::<_, i64>(5),
                r.get::<_, String>(6),
                r.get::<_, i64>(7),
                r.get::<_, i32>(8)
            )
        })
        .collect();
    assert!(
        overtaken.is_empty(),
        "later jobs finished first: {overtaken:#?}"
    );
    // Each ticket's breach timer fired once.
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE kind = 'sla.breached'").await,
        TICKETS as i64
    );
    let kill_redid = count("SELECT COUNT(*) FROM events WHERE leases > 1").await;

    // Zendesk saw each change applied once: each update added something the one before lacked.
    let requests = z.requests();
    let mut puts_by_ticket = std::collections::HashMap::<u64, Vec<usize>>::new();
    for r in &requests {
        if r.method == Method::PUT && r.status == 200 {
            let tags = r
                .body
                .as_ref()
                .map_or(0, |b| b["ticket"]["tags"].as_array().map_or(0, Vec::len));
            puts_by_ticket
                .entry(ticket_of(&r.path))
                .or_default()
                .push(tags);
        }
    }
    for t in 1..=TICKETS {
        let sizes = &puts_by_ticket[&t];
        assert!(
            sizes.windows(2).all(|w| w[0] < w[1]),
            "ticket {t}: tag counts {sizes:?}"
        );
    }
    // The three instances shared one budget: no minute held more than one instance's limit.
    let times: Vec<Instant> = requests.iter().map(|r| r.at).collect();
    let put_times: Vec<Instant> = requests
        .iter()
        .filter(|r| r.method == Method::PUT)
        .map(|r| r.at)
        .collect();
    let (busiest, _) = busiest_window(&times, Duration::from_secs(60));
    let (busiest_puts, _) = busiest_window(&put_times, Duration::from_secs(60));
    eprintln!(
        "instances: {events} events sent in {sent_in:?}, drained in {drained_in:?}; {} requests \
         ({} PUTs); busiest minute {busiest} requests, {busiest_puts} PUTs; {kill_redid} jobs leased more than once",
        times.len(),
        put_times.len()
    );
    assert!(
        busiest <= REQUESTS_PER_MINUTE,
        "{busiest} requests in a minute"
    );
    assert!(
        busiest_puts <= UPDATES_PER_MINUTE,
        "{busiest_puts} updates in a minute"
    );
    assert!(
        kill_redid >= 1,
        "no job was taken over from the killed instance; the test proved nothing"
    );
}

/// Runs a store call to completion from a synchronous check.
fn futures_executor<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A stop that cuts a job short (its Zendesk call still hanging after the grace period) gives
/// the job back at once: the other instance does it within seconds, not when the 30 s lease
/// runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cut_short_by_a_stop_goes_to_another_instance_at_once() {
    use crate::support::{spawn_app_with, Options};
    let Some(server) = crate::postgres::server() else {
        return;
    };
    let url = crate::postgres::fresh_database(&server).await;
    let ticket = || api_ticket(61, "URGENT: orders stuck");
    let first = spawn_app_with(Options {
        database_url: Some(url.clone()),
        tickets: vec![ticket()],
        request_timeout: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    first.zendesk.apply_then_hang(Duration::from_secs(60));
    let r = first
        .post_signed(event_body("cut-1", "created", 61, "URGENT: orders stuck"))
        .await;
    assert_eq!(r.status(), 202);
    eventually(10, "the first instance's update in flight", || {
        first.zendesk.ticket(61)["priority"] == "urgent"
    })
    .await;
    let second = spawn_app_with(Options {
        database_url: Some(url.clone()),
        tickets: vec![ticket()],
        ..Options::default()
    })
    .await;
    first.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), first.handle)
        .await
        .expect("the first instance stops after its grace period")
        .unwrap()
        .unwrap();
    let stopped = Instant::now();
    eventually(8, "the second instance redoes the job", || {
        second.zendesk.ticket(61)["priority"] == "urgent"
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "taken over after {:?}",
        stopped.elapsed()
    );
    let store = deskbot::queue::store::Store::connect(&url).await.unwrap();
    eventually(5, "the job recorded done", || {
        futures_executor(store.stats(chrono::Utc::now())).is_ok_and(|s| s.depth == 0)
    })
    .await;
    second.stop().await;
}
