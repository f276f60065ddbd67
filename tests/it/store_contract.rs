//! One contract for the queue, run against every backend: the SQLite store always, PostgreSQL
//! when `DESKBOT_TEST_PG_URL` names a server (always in CI). Each promise gets a fresh store.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use deskbot::queue::backend::QueueBackend;
use deskbot::queue::postgres::PgQueue;
use deskbot::queue::store::{Enqueued, NewEvent, Settle, Store};
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
async fn claim<Q: QueueBackend>(q: &Q, at: i64, tickets: usize) -> Vec<Vec<(u64, String)>> {
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

async fn ids<Q: QueueBackend>(q: &Q, at: i64, tickets: usize) -> Vec<Vec<i64>> {
    q.claim(t(at), Duration::from_secs(60), tickets, 8)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.into_iter().map(|j| j.id).collect())
        .collect()
}

async fn a_duplicate_is_a_no_op<Q: QueueBackend>(q: Q) {
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

async fn a_tickets_jobs_keep_their_order<Q: QueueBackend>(q: Q) {
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
    // Leased: nothing more to claim until they settle or their lease runs out.
    assert!(claim(&q, 2, 8).await.is_empty());
}

async fn a_job_waiting_to_retry_holds_back_its_ticket<Q: QueueBackend>(q: Q) {
    q.enqueue(event("a1", 1, 0)).await.unwrap();
    let first = ids(&q, 1, 1).await;
    let a1 = first[0][0];
    q.settle(
        vec![(
            a1,
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
    q.settle(vec![(b[0][0].id, done())], t(4)).await.unwrap();
    let later = claim(&q, 100, 8).await;
    assert_eq!(later, [vec![(1, "a1".to_string()), (1, "a2".to_string())]]);
}

async fn an_expired_lease_is_taken_over<Q: QueueBackend>(q: Q) {
    q.enqueue(event("a", 1, 0)).await.unwrap();
    let held = ids(&q, 1, 1).await;
    assert_eq!(held.len(), 1);
    // Its holder died: the 60 s lease runs out and another claim takes the job.
    assert!(ids(&q, 30, 1).await.is_empty());
    assert_eq!(ids(&q, 62, 1).await, held);
}

async fn settled_jobs_leave_the_queue_and_dead_ones_are_counted<Q: QueueBackend>(q: Q) {
    q.enqueue(event("a", 1, 0)).await.unwrap();
    q.enqueue(event("b", 2, 0)).await.unwrap();
    let got = ids(&q, 1, 8).await;
    let (a, b) = (got[0][0], got[1][0]);
    q.settle(
        vec![
            (a, done()),
            (
                b,
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

async fn background_jobs_wait_behind_live_ones<Q: QueueBackend>(q: Q) {
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

/// Runs every promise against fresh stores that `make` opens.
async fn contract<Q, F, Fut>(make: F)
where
    Q: QueueBackend,
    F: Fn() -> Fut,
    Fut: Future<Output = Q>,
{
    a_duplicate_is_a_no_op(make().await).await;
    a_tickets_jobs_keep_their_order(make().await).await;
    a_job_waiting_to_retry_holds_back_its_ticket(make().await).await;
    an_expired_lease_is_taken_over(make().await).await;
    settled_jobs_leave_the_queue_and_dead_ones_are_counted(make().await).await;
    background_jobs_wait_behind_live_ones(make().await).await;
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
        async move { Store::open(&path).unwrap() }
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
            PgQueue::open(&url).await.unwrap()
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
    let first = PgQueue::open(&url).await.unwrap();
    for i in 0..300u64 {
        first
            .enqueue(event(&format!("e{i}"), i % 30, 0))
            .await
            .unwrap();
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut instances = Vec::new();
    for _ in 0..4 {
        let q = PgQueue::open(&url).await.unwrap();
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
                    settled.push((job.id, done()));
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
