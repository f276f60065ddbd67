//! A backlog of 2,000 events over 200 tickets drains at Zendesk's ticket-update limit and never
//! above it, and the events waiting for one ticket become one read and one update.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};

use crate::support::{
    api_ticket, busiest_window, comment_body, count, eventually, spawn_app_with, ticket_of,
    word_policy, Options,
};

const TICKETS: u64 = 200;
const EVENTS_PER_TICKET: u64 = 10;
/// The ticket-update limit, per (time-compressed) one-second window: Zendesk's 100/min.
const UPDATES_PER_WINDOW: u32 = 100;

/// One rule per comment word, so every event of a ticket changes it: processed one by one they
/// would be ten updates.
fn policy() -> &'static str {
    word_policy(EVENTS_PER_TICKET - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_at_the_update_limit_with_one_update_per_ticket() {
    let mut backlog = Vec::new();
    for t in 1..=TICKETS {
        backlog.push(crate::support::event_body(
            &format!("c-{t}"),
            "created",
            t,
            "URGENT: stuck",
        ));
        for w in 1..EVENTS_PER_TICKET {
            backlog.push(comment_body(&format!("m-{t}-{w}"), t, &format!("see w{w}")));
        }
    }
    assert_eq!(backlog.len(), 2000);
    let tickets = (1..=TICKETS)
        .map(|t| {
            let mut ticket = api_ticket(t, "URGENT: stuck");
            ticket["organization_id"] = Value::Null;
            ticket
        })
        .collect();
    let app = spawn_app_with(Options {
        policy: policy(),
        updates_per_second: UPDATES_PER_WINDOW,
        backlog,
        tickets,
        ..Options::default()
    })
    .await;
    let z = app.zendesk.clone();
    eventually(60, "one update per ticket", || {
        z.applied_puts().len() as u64 >= TICKETS
    })
    .await;
    let db = app.db.clone();
    eventually(30, "every queued event done", || {
        count(&db, "SELECT COUNT(*) FROM events WHERE state <> 'done'") == 0
    })
    .await;

    let requests = app.zendesk.requests();
    let puts: Vec<_> = requests
        .iter()
        .filter(|r| r.method == Method::PUT && r.status == 200)
        .collect();
    let mut per_ticket: HashMap<u64, Vec<&Value>> = HashMap::new();
    for p in &puts {
        per_ticket
            .entry(ticket_of(&p.path))
            .or_default()
            .push(p.body.as_ref().unwrap());
    }
    assert_eq!(per_ticket.len() as u64, TICKETS);
    let words: Vec<String> = (1..EVENTS_PER_TICKET).map(|w| format!("w{w}")).collect();
    for (t, bodies) in &per_ticket {
        assert_eq!(bodies.len(), 1, "ticket {t}: one update for ten events");
        let sent = &bodies[0]["ticket"];
        assert_eq!(sent["priority"], json!("urgent"), "ticket {t}");
        let mut expect = vec![json!("vip")];
        expect.extend(words.iter().map(|w| json!(w)));
        assert_eq!(sent["tags"], json!(expect), "ticket {t}");
    }
    // Before its update, each ticket was read once for its ten events.
    let first_put: HashMap<u64, _> = puts.iter().map(|p| (ticket_of(&p.path), p.at)).collect();
    for t in 1..=TICKETS {
        let reads = requests
            .iter()
            .filter(|r| r.method == Method::GET && r.status == 200)
            .filter(|r| ticket_of(&r.path) == t && r.at < first_put[&t])
            .count();
        assert_eq!(reads, 1, "ticket {t}: reads before its update");
    }
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE outcome LIKE '%\"coalesced\"%'"
        ),
        (TICKETS * (EVENTS_PER_TICKET - 1)) as i64
    );

    // Never above the limit: no window holds more than the limit. Windows of 0.9 s leave room for
    // the few milliseconds between deskbot sending a request and the fake recording it.
    let times: Vec<_> = puts.iter().map(|p| p.at).collect();
    let (in_window, i) = busiest_window(&times, Duration::from_millis(900));
    assert!(
        in_window <= UPDATES_PER_WINDOW as usize,
        "{in_window} updates within 0.9 s from update {i}"
    );
    // Close to the limit: 200 updates at 100 per window need one window after the first burst.
    let span = times[times.len() - 1].duration_since(times[0]);
    eprintln!(
        "drain: {} updates in {span:?} (ideal at the limit: 1 s)",
        times.len()
    );
    assert!(
        span >= Duration::from_millis(900) && span < Duration::from_secs(5),
        "200 updates took {span:?}; at the limit they take 1 s"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_gets_thirty_updates_per_ten_windows_and_others_are_not_held_up() {
    let window = Duration::from_millis(100);
    let app = spawn_app_with(Options {
        policy: word_policy(31),
        rate_window: window,
        tickets: vec![
            api_ticket(1, "URGENT: stuck"),
            api_ticket(2, "URGENT: stuck"),
        ],
        ..Options::default()
    })
    .await;
    let z = app.zendesk.clone();
    let puts_to = |z: &crate::support::FakeZendesk, t: u64| {
        z.requests()
            .into_iter()
            .filter(|r| r.method == Method::PUT && r.status == 200 && ticket_of(&r.path) == t)
            .map(|r| r.at)
            .collect::<Vec<_>>()
    };
    // One event at a time, each waiting for its update, so none are coalesced.
    for w in 1..=31u64 {
        let body = comment_body(&format!("busy-{w}"), 1, &format!("see w{w}"));
        assert_eq!(app.post_signed(body).await.status(), 202);
        if w < 31 {
            eventually(10, "the update of this event", || {
                puts_to(&z, 1).len() as u64 == w
            })
            .await;
        }
    }
    // The 31st waits for the first to leave the ten-window span; ticket 2 goes meanwhile.
    let body = comment_body("other-1", 2, "see w1");
    assert_eq!(app.post_signed(body).await.status(), 202);
    eventually(10, "ticket 2 updated", || puts_to(&z, 2).len() == 1).await;
    assert_eq!(puts_to(&z, 1).len(), 30, "the 31st update went at once");
    eventually(10, "the 31st update", || puts_to(&z, 1).len() == 31).await;
    let times = puts_to(&z, 1);
    let gap = times[30].duration_since(times[0]);
    assert!(
        gap >= window * 10 - Duration::from_millis(50),
        "31st update only {gap:?} after the first"
    );
    assert_eq!(
        count(
            &app.db,
            "SELECT SUM(attempts) FROM events WHERE state = 'done'"
        ),
        0,
        "waiting for the per-ticket limit charges no try"
    );
    // The 31st event waited for the per-ticket limit (an echo of update 30 queued behind it may
    // have waited with it).
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE dedup_key LIKE '%busy-31%' AND last_error LIKE '%30 in 10 minutes%'"
        ),
        1
    );
    app.stop().await;
}
