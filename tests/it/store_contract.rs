//! One contract for the store, run against every backend: the SQLite store always, PostgreSQL
//! when `DESKBOT_TEST_PG_URL` names a server (always in CI). Each promise gets a fresh database
//! and two handles on it (two processes on one file, or two instances on one database). The SLA
//! clocks, console queries and kept positions have their own two-backend unit tests in `src/queue/`.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use deskbot::queue::store::{Enqueued, Lease, NewEvent, Settle, Store};
use deskbot::ticket::{EventKind, Ticket};
use deskbot::webhook::payload::{Source, TicketEvent};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn event(key: &str, ticket: u64, at: i64) -> NewEvent {
    NewEvent {
        event: TicketEvent {
            dedup_key: key.into(),
            source: Source::Event,
            ticket_id: ticket,
            kind: EventKind::new("created"),
            occurred_at: None,
            snapshot: Ticket::default(),
            comment: None,
            current: None,
            timer: None,
            notice: None,
        },
        invocation_key: None,
        received_at: t(at),
        background: false,
    }
}

fn done() -> Settle {
    Settle::Done {
        outcome: r#"{"result":"no_change"}"#.into(),
    }
}

/// (ticket, key) of each claimed job, group by group.
async fn claim(q: &Store, at: i64, tickets: usize) -> Vec<Vec<(u64, String)>> {
    q.claim(t(at), Duration::from_secs(60), tickets, 8)
        .await
        .unwrap()
        .into_iter()
        .map(|g| {
            g.into_iter()
                .map(|j| (j.event.ticket_id, j.event.dedup_key))
                .collect()
        })
        .collect()
}

async fn ids(q: &Store, at: i64, tickets: usize) -> Vec<Vec<i64>> {
    q.claim(t(at), Duration::from_secs(60), tickets, 8)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.into_iter().map(|j| j.id).collect())
        .collect()
}

async fn a_duplicate_is_a_no_op(q: Store, _other: Store) {
    assert!(matches!(
        q.enqueue(event("a", 1, 0)).await.unwrap(),
        Enqueued::Queued(_)
    ));
    assert_eq!(
        q.enqueue(event("a", 1, 0)).await.unwrap(),
        Enqueued::Duplicate
    );
    assert_eq!(q.stats(t(10)).await.unwrap().depth, 1);
}

async fn a_tickets_jobs_keep_their_order(q: Store, other: Store) {
    for (key, ticket) in [("a1", 1), ("b1", 2), ("a2", 1)] {
        q.enqueue(event(key, ticket, 0)).await.unwrap();
    }
    // Ticket 1's two jobs go together, in order, and ticket 2's alone.
    let groups = claim(&q, 1, 8).await;
    assert_eq!(
        groups,
        [
            vec![(1, "a1".to_string()), (1, "a2".to_string())],
            vec![(2, "b1".to_string())]
        ]
    );
    // Leased: nothing more to claim, from either handle, until they settle or their lease runs out.
    assert!(claim(&q, 2, 8).await.is_empty());
    assert!(claim(&other, 2, 8).await.is_empty());
}

async fn a_job_waiting_to_retry_holds_back_its_ticket(q: Store, _other: Store) {
    q.enqueue(event("a1", 1, 0)).await.unwrap();
    let first = ids(&q, 1, 1).await;
    let a1 = first[0][0];
    q.settle(
        vec![(
            Lease { id: a1, token: 1 },
            Settle::Defer {
                until: t(100),
                error: "503".into(),
                counts: true,
            },
        )],
        t(1),
    )
    .await
    .unwrap();
    q.enqueue(event("a2", 1, 2)).await.unwrap();
    q.enqueue(event("b1", 2, 2)).await.unwrap();
    let b = q.claim(t(3), Duration::from_secs(60), 8, 8).await.unwrap();
    let keys: Vec<Vec<&str>> = b
        .iter()
        .map(|g| g.iter().map(|j| j.event.dedup_key.as_str()).collect())
        .collect();
    assert_eq!(keys, [vec!["b1"]], "a2 waits behind a1's retry");
    q.settle(vec![(b[0][0].lease(), done())], t(4))
        .await
        .unwrap();
    let later = claim(&q, 100, 8).await;
    assert_eq!(later, [vec![(1, "a1".to_string()), (1, "a2".to_string())]]);
}

async fn an_expired_lease_is_taken_over_and_its_old_holder_fenced_out(q: Store, other: Store) {
    q.enqueue(event("a", 1, 0)).await.unwrap();
    let lease = Duration::from_secs(60);
    let first = q.claim(t(1), lease, 1, 1).await.unwrap()[0][0].lease();
    // Extended while it runs: still held at 80 s.
    assert!(q
        .extend(vec![first], t(20) + lease)
        .await
        .unwrap()
        .is_empty());
    assert!(other.claim(t(70), lease, 1, 1).await.unwrap().is_empty());
    // Its holder stalled: the lease runs out at 80 s and the other instance takes the job.
    let second = other.claim(t(81), lease, 1, 1).await.unwrap()[0][0].lease();
    assert_eq!((second.id, second.token), (first.id, first.token + 1));
    // The stale holder can neither extend nor settle it; the new one can.
    assert_eq!(q.extend(vec![first], t(90) + lease).await.unwrap(), [first]);
    assert_eq!(
        q.settle(vec![(first, done())], t(91)).await.unwrap(),
        [first]
    );
    assert_eq!(q.stats(t(92)).await.unwrap().depth, 1, "still waiting");
    assert!(other
        .settle(vec![(second, done())], t(93))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(q.stats(t(94)).await.unwrap().depth, 0);
    // Settled: a late extension or a second settle finds nothing to hold.
    assert_eq!(other.extend(vec![second], t(95)).await.unwrap(), [second]);
    assert_eq!(
        other.settle(vec![(second, done())], t(96)).await.unwrap(),
        [second]
    );
}

async fn settled_jobs_leave_the_queue_and_dead_ones_are_counted(q: Store, _other: Store) {
    q.enqueue(event("a", 1, 0)).await.unwrap();
    q.enqueue(event("b", 2, 0)).await.unwrap();
    let got = ids(&q, 1, 8).await;
    let (a, b) = (got[0][0], got[1][0]);
    q.settle(
        vec![
            (Lease { id: a, token: 1 }, done()),
            (
                Lease { id: b, token: 1 },
                Settle::Dead {
                    outcome: r#"{"result":"dead","error":"400"}"#.into(),
                    error: "400".into(),
                },
            ),
        ],
        t(2),
    )
    .await
    .unwrap();
    let s = q.stats(t(3)).await.unwrap();
    assert_eq!((s.depth, s.dead_letters), (0, 1));
    assert!(ids(&q, 200, 8).await.is_empty());
}

async fn background_jobs_wait_behind_live_ones(q: Store, _other: Store) {
    let bg = |key: &str, ticket| NewEvent {
        background: true,
        ..event(key, ticket, 0)
    };
    q.enqueue(bg("b1", 1)).await.unwrap();
    q.enqueue(bg("b2", 2)).await.unwrap();
    q.enqueue(event("live3", 3, 0)).await.unwrap();
    assert_eq!(claim(&q, 1, 1).await, [vec![(3, "live3".to_string())]]);
    // A live job of ticket 2 brings ticket 2's background job forward.
    q.enqueue(event("live2", 2, 0)).await.unwrap();
    assert_eq!(
        claim(&q, 1, 1).await,
        [vec![(2, "b2".to_string()), (2, "live2".to_string())]]
    );
    assert_eq!(claim(&q, 1, 1).await, [vec![(1, "b1".to_string())]]);
}

async fn two_handles_enqueuing_the_same_event_store_it_once(q: Store, other: Store) {
    let (a, b) = tokio::join!(
        q.enqueue(event("same", 1, 0)),
        other.enqueue(event("same", 1, 0))
    );
    let mut results = [a.unwrap(), b.unwrap()];
    results.sort_by_key(|r| matches!(r, Enqueued::Duplicate));
    assert!(matches!(results[0], Enqueued::Queued(_)));
    assert_eq!(results[1], Enqueued::Duplicate);
    assert_eq!(other.stats(t(1)).await.unwrap().depth, 1);
}

/// Runs every promise against fresh databases: `make` opens two handles on a new one.
async fn contract<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Store, Store)>,
{
    let (a, b) = make().await;
    a_duplicate_is_a_no_op(a, b).await;
    let (a, b) = make().await;
    a_tickets_jobs_keep_their_order(a, b).await;
    let (a, b) = make().await;
    a_job_waiting_to_retry_holds_back_its_ticket(a, b).await;
    let (a, b) = make().await;
    an_expired_lease_is_taken_over_and_its_old_holder_fenced_out(a, b).await;
    let (a, b) = make().await;
    settled_jobs_leave_the_queue_and_dead_ones_are_counted(a, b).await;
    let (a, b) = make().await;
    background_jobs_wait_behind_live_ones(a, b).await;
    let (a, b) = make().await;
    two_handles_enqueuing_the_same_event_store_it_once(a, b).await;
}

#[tokio::test]
async fn sqlite_keeps_the_queue_contract() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    contract(|| {
        let path = dir.path().join(format!(
            "q{}.db",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        async move { (Store::open(&path).unwrap(), Store::open(&path).unwrap()) }
    })
    .await;
}

#[tokio::test]
async fn postgres_keeps_the_queue_contract() {
    let Some(server) = crate::postgres::server() else {
        return;
    };
    contract(|| {
        let server = server.clone();
        async move {
            let url = crate::postgres::fresh_database(&server).await;
            (
                Store::connect(&url).await.unwrap(),
                Store::connect(&url).await.unwrap(),
            )
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_claiming_together_never_share_a_job_or_break_a_tickets_order() {
    let Some(server) = crate::postgres::server() else {
        return;
    };
    let url = crate::postgres::fresh_database(&server).await;
    let first = Store::connect(&url).await.unwrap();
    for i in 0..300u64 {
        first
            .enqueue(event(&format!("e{i}"), i % 30, 0))
            .await
            .unwrap();
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut instances = Vec::new();
    for _ in 0..4 {
        let q = Store::connect(&url).await.unwrap();
        let seen = seen.clone();
        instances.push(tokio::spawn(async move {
            loop {
                let groups = q.claim(t(1), Duration::from_secs(60), 3, 2).await.unwrap();
                if groups.is_empty() {
                    break;
                }
                let mut settled = Vec::new();
                for job in groups.into_iter().flatten() {
                    seen.lock().unwrap().push((job.event.ticket_id, job.id));
                    settled.push((job.lease(), done()));
                }
                q.settle(settled, t(1)).await.unwrap();
            }
        }));
    }
    for i in instances {
        i.await.unwrap();
    }
    let done = seen.lock().unwrap().clone();
    let mut ids: Vec<i64> = done.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((done.len(), ids.len()), (300, 300), "each job claimed once");
    for ticket in 0..30u64 {
        let order: Vec<i64> = done
            .iter()
            .filter(|(t, _)| *t == ticket)
            .map(|(_, id)| *id)
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "ticket {ticket}'s jobs in order");
    }
}

/// Three instances take from one shared Zendesk budget (40 per 2 s) as fast as they can for 5 s:
/// no 2-second window holds more than 40 grants, all three get some, and a pause one of them
/// records (a 429's Retry-After) holds back the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_share_one_rate_budget() {
    let Some(server) = crate::postgres::server() else {
        return;
    };
    let url = crate::postgres::fresh_database(&server).await;
    let span = Duration::from_secs(2);
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let budget = Store::connect(&url).await.unwrap().shared_budget().unwrap();
        tasks.push(tokio::spawn(async move {
            let mut grants = Vec::new();
            while start.elapsed() < Duration::from_secs(5) {
                let wait = budget.take("zendesk_requests", 40, span).await.unwrap();
                if wait.is_zero() {
                    grants.push((i, start.elapsed()));
                } else {
                    tokio::time::sleep(wait.min(Duration::from_millis(20))).await;
                }
            }
            grants
        }));
    }
    let mut grants = Vec::new();
    for t in tasks {
        grants.extend(t.await.unwrap());
    }
    let times: Vec<Duration> = grants.iter().map(|(_, at)| *at).collect();
    let worst = times
        .iter()
        .map(|s| {
            times
                .iter()
                .filter(|g| **g >= *s && **g < *s + span)
                .count()
        })
        .max()
        .unwrap();
    assert!(worst <= 40, "a 2 s window held {worst} grants");
    // 4 burst + 5 s at one per 54 ms: about 96 in all; at least the sustained rate was reached.
    assert!(grants.len() >= 80, "only {} grants", grants.len());
    for i in 0..3 {
        assert!(grants.iter().any(|(g, _)| *g == i), "instance {i} got none");
    }
    let a = Store::connect(&url).await.unwrap().shared_budget().unwrap();
    let b = Store::connect(&url).await.unwrap().shared_budget().unwrap();
    a.pause("zendesk_requests", Duration::from_secs(30))
        .await
        .unwrap();
    let wait = b.take("zendesk_requests", 40, span).await.unwrap();
    assert!(
        wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
}

/// An idle instance hears of a job another instance queued (LISTEN/NOTIFY), well before its
/// next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_hear_of_each_others_jobs() {
    let Some(server) = crate::postgres::server() else {
        return;
    };
    let url = crate::postgres::fresh_database(&server).await;
    let (a, b) = (
        Store::connect(&url).await.unwrap(),
        Store::connect(&url).await.unwrap(),
    );
    b.listen_for_other_instances();
    // Give the listener time to connect and LISTEN; a job queued before it would not be heard.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.enqueue(event("heard", 5, 0)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), b.notified())
        .await
        .expect("woken by the other instance's job");
}
