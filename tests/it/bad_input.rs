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
