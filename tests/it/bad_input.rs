//! Bad requests get their status and a one-line reason, never reach the queue, never stall the server.

use serde_json::Value;

use crate::support::{now_stamp, spawn_app, SECRET};

#[tokio::test]
async fn each_bad_input_gets_its_status_and_nothing_is_queued() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty body", Vec::new(), 400),
        ("not JSON", b"hello, world".to_vec(), 400),
        ("truncated JSON", br#"{"type": "zen:event-type:ticket.created", "id": "#.to_vec(), 400),
        ("JSON array", b"[1, 2, 3]".to_vec(), 400),
        ("JSON of the wrong shape", br#"{"hello": "world"}"#.to_vec(), 400),
        ("event without id", br#"{"type": "zen:event-type:ticket.created", "subject": "zen:ticket:1", "detail": {}}"#.to_vec(), 400),
        ("ticket event without ticket", br#"{"type": "zen:event-type:ticket.created", "id": "x", "detail": {}}"#.to_vec(), 400),
        ("trigger with empty placeholder", br#"{"ticket_id": "", "event": "created"}"#.to_vec(), 400),
        ("trigger with a non-numeric id", br#"{"ticket_id": "abc"}"#.to_vec(), 400),
        ("2 MiB body", vec![b' '; 2 * 1024 * 1024], 413),
    ];
    for (name, body, status) in cases {
        let r = app.post_with(body, Some(SECRET), &now_stamp(), &[]).await;
        assert_eq!(r.status().as_u16(), status, "{name}");
        let text = r.text().await.unwrap();
        let reason: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{name}: answer is not JSON: {text}"));
        let msg = reason["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error field in {text}"));
        assert!(
            !msg.is_empty() && !msg.contains('\n'),
            "{name}: reason must be one line: {msg:?}"
        );
        assert!(
            !text.trim_end().contains('\n'),
            "{name}: body must be one line"
        );
    }

    // Missing headers: 401 whatever the body.
    let body = br#"{"ticket_id": "1"}"#.to_vec();
    let r = app.post_with(body.clone(), None, "", &[]).await;
    assert_eq!(r.status(), 401);
    let r = app
        .post_with(
            body.clone(),
            None,
            "",
            &[("x-zendesk-webhook-signature", "abc=")],
        )
        .await;
    assert_eq!(r.status(), 401);
    let reason: Value = r.json().await.unwrap();
    assert_eq!(
        reason["error"],
        "missing X-Zendesk-Webhook-Signature-Timestamp header"
    );
    let r = app
        .post_with(
            body,
            None,
            "",
            &[("x-zendesk-webhook-signature-timestamp", &now_stamp())],
        )
        .await;
    assert_eq!(r.status(), 401);

    assert_eq!(app.stored_events(), 0, "no bad request may reach the queue");
    let (status, health) = app.get_json("/healthz").await;
    assert_eq!(status, 200, "server still healthy after bad input");
    assert_eq!(health["queue"]["depth"], 0);
    app.stop().await;
}

#[tokio::test]
async fn ignored_event_types_get_200_and_are_not_queued() {
    let app = spawn_app().await;
    for (ty, subject) in [
        ("zen:event-type:user.created", "zen:user:1"),
        ("zen:event-type:ticket.permanently_deleted", "zen:ticket:1"),
    ] {
        let body = serde_json::json!({"type": ty, "id": format!("ign-{ty}"), "subject": subject, "detail": {}, "event": {}}).to_string();
        let r = app.post_with(body, Some(SECRET), &now_stamp(), &[]).await;
        assert_eq!(r.status(), 200, "{ty}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["status"], "ignored");
    }
    assert_eq!(app.stored_events(), 0);
    app.stop().await;
}

/// Many clients posting large bodies at once: past the route's budget of body bytes in flight
/// (16 MiB), requests get 503 + Retry-After before their body is read; when the readers finish,
/// requests are taken again.
#[tokio::test]
async fn large_bodies_past_the_budget_get_503_before_being_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let head = |len: usize| {
        format!(
            "POST /webhooks/zendesk HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    // 16 clients each announce ~1 MiB and send only the start of it: their reservations fill the budget.
    let mut readers = Vec::new();
    for _ in 0..16 {
        let mut c = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        c.write_all(head(1_040_000).as_bytes()).await.unwrap();
        c.write_all(b"{\"a\":\"").await.unwrap();
        readers.push(c);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let answer = |len: usize| {
        let addr = app.addr;
        let head = head(len);
        async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(head.as_bytes()).await.unwrap();
            c.write_all(&vec![b' '; len]).await.ok();
            let mut got = Vec::new();
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut got))
                    .await;
            String::from_utf8_lossy(&got).into_owned()
        }
    };
    let busy = answer(1_000_000).await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(
        busy.to_ascii_lowercase().contains("retry-after: 10"),
        "{busy}"
    );
    assert!(
        busy.contains("too many requests are being read at once"),
        "{busy}"
    );
    drop(readers);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let taken = answer(100).await;
    assert!(
        taken.starts_with("HTTP/1.1 401"),
        "unsigned, but read: {taken}"
    );
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("deskbot_webhooks_rejected_total{reason=\"busy\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}
