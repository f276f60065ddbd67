//! Zendesk down for a while (503s, timeouts, dropped connections): jobs wait, charge no try, and
//! complete when it returns.

use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use crate::support::{
    api_ticket, count, event_body, eventually, spawn_app, spawn_app_with, FakeZendesk, Fault,
    Options,
};

fn seed(z: &FakeZendesk, id: u64) {
    z.put_ticket(api_ticket(id, "URGENT: orders stuck"));
    z.put_org(json!({"id": 3, "name": "Shop"}));
}

#[tokio::test]
async fn an_outage_longer_than_the_retry_limit_loses_nothing() {
    let app = spawn_app().await;
    for t in [106, 107] {
        seed(&app.zendesk, t);
    }
    // More 503s than DESKBOT_MAX_ATTEMPTS (8 in tests): Zendesk being down charges no job.
    app.zendesk.fail_next(Method::GET, 12, 503, None);
    for (key, t) in [("down-1", 106), ("down-2", 107)] {
        let body = event_body(key, "created", t, "URGENT");
        assert_eq!(app.post_signed(body).await.status(), 202);
    }
    let z = app.zendesk.clone();
    eventually(30, "both tickets updated after the outage", || {
        z.applied_puts().len() == 2
    })
    .await;
    let statuses: Vec<u16> = z.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 12);
    assert_eq!(count(&app.db, "SELECT SUM(attempts) FROM events"), 0);
    assert_eq!(
        count(&app.db, "SELECT COUNT(*) FROM events WHERE state = 'dead'"),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn timeouts_and_dropped_connections_wait_for_zendesk_to_return() {
    let app = spawn_app_with(Options {
        fault_proxy: true,
        request_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let proxy = app.proxy.clone().unwrap();
    seed(&app.zendesk, 108);
    proxy.set(Fault::Hang);
    let body = event_body("net-1", "created", 108, "URGENT");
    assert_eq!(app.post_signed(body).await.status(), 202);
    eventually(20, "three calls timed out", || proxy.hung() >= 3).await;
    proxy.set(Fault::Drop);
    eventually(20, "three connections dropped", || proxy.dropped() >= 3).await;
    assert_eq!(app.zendesk.applied_puts().len(), 0);
    proxy.set(Fault::None);
    let z = app.zendesk.clone();
    eventually(20, "the update once Zendesk is back", || {
        z.applied_puts().len() == 1
    })
    .await;
    assert_eq!(app.zendesk.ticket(108)["priority"], json!("urgent"));
    assert_eq!(count(&app.db, "SELECT SUM(attempts) FROM events"), 0);
    let error: String = rusqlite::Connection::open(&app.db)
        .unwrap()
        .query_row("SELECT last_error FROM events WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(error.contains("could not reach Zendesk"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn an_update_applied_but_timed_out_is_not_sent_again() {
    let app = spawn_app_with(Options {
        request_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    seed(&app.zendesk, 109);
    // Zendesk applies the PUT; its answer comes after deskbot has given up waiting.
    app.zendesk.apply_then_hang(Duration::from_secs(3));
    let body = event_body("late-1", "created", 109, "URGENT");
    assert_eq!(app.post_signed(body).await.status(), 202);
    let db = app.db.clone();
    eventually(20, "the job done", || {
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE id = 1 AND state = 'done'",
        ) == 1
    })
    .await;
    // The retry re-read the ticket, found the change made, and sent nothing.
    assert_eq!(app.zendesk.all_puts().len(), 1);
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE id = 1 AND outcome LIKE '%no_change%'"
        ),
        1
    );
    app.stop().await;
}
