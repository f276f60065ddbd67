//! Signatures, through the library surface (fixed vectors with an injected clock) and over HTTP.

use chrono::{DateTime, Duration, Utc};
use deskbot::config::Secret;
use deskbot::webhook::signature::{Matched, SignatureError, Verifier, ZENDESK_TEST_SECRET};
use serde_json::Value;

use crate::support::{event_body, now_stamp, spawn_app, spawn_app_with, Options, SECRET};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Computed outside Rust, with Python's hmac and with `openssl dgst -sha256 -hmac`
/// (shared/reference/zendesk-api.md §1.4): secret used as its UTF-8 bytes, message = timestamp ‖ body.
const VECTOR_TS: &str = "2024-01-01T00:00:00Z";
const VECTOR_BODY: &str = r#"{"ticket_id":"35436","priority":"high"}"#;
const VECTOR_SIG: &str = "nieW+PSYHXHTqCJ8uG6dr1MG9Kw2Buk8b/ipSH5AUXg=";

#[test]
fn fixed_vector_verifies_and_one_byte_changes_break_it() {
    let v = Verifier::new(vec![Secret::new(ZENDESK_TEST_SECRET)], false, 300);
    let now = at(VECTOR_TS);
    assert_eq!(
        v.verify(
            Some(VECTOR_SIG.as_bytes()),
            Some(VECTOR_TS.as_bytes()),
            VECTOR_BODY.as_bytes(),
            now
        ),
        Ok(Matched::Configured(0))
    );
    let mut tampered = VECTOR_BODY.as_bytes().to_vec();
    tampered[20] ^= 1;
    assert_eq!(
        v.verify(
            Some(VECTOR_SIG.as_bytes()),
            Some(VECTOR_TS.as_bytes()),
            &tampered,
            now
        ),
        Err(SignatureError::Mismatch)
    );
    // The legacy order (body ‖ timestamp) must not verify.
    assert_eq!(
        v.verify(
            Some(b"Rry/4TtIdFyawtXXp8QdI6tlAUUQ/5kL1OTp5qo/ZIk="),
            Some(VECTOR_TS.as_bytes()),
            VECTOR_BODY.as_bytes(),
            now
        ),
        Err(SignatureError::Mismatch)
    );
    let wrong = Verifier::new(vec![Secret::new("not-the-secret")], false, 300);
    assert_eq!(
        wrong.verify(
            Some(VECTOR_SIG.as_bytes()),
            Some(VECTOR_TS.as_bytes()),
            VECTOR_BODY.as_bytes(),
            now
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn test_secret_only_when_enabled() {
    let now = at(VECTOR_TS);
    let off = Verifier::new(vec![Secret::new("real")], false, 300);
    let on = Verifier::new(vec![Secret::new("real")], true, 300);
    let args = (
        Some(VECTOR_SIG.as_bytes()),
        Some(VECTOR_TS.as_bytes()),
        VECTOR_BODY.as_bytes(),
    );
    assert_eq!(
        off.verify(args.0, args.1, args.2, now),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        on.verify(args.0, args.1, args.2, now),
        Ok(Matched::TestSecret)
    );
}

#[test]
fn freshness_window_is_exact() {
    let v = Verifier::new(vec![Secret::new(ZENDESK_TEST_SECRET)], false, 300);
    let args = (
        Some(VECTOR_SIG.as_bytes()),
        Some(VECTOR_TS.as_bytes()),
        VECTOR_BODY.as_bytes(),
    );
    let base = at(VECTOR_TS);
    for (offset, ok) in [(-300, true), (300, true), (-301, false), (301, false)] {
        let r = v.verify(args.0, args.1, args.2, base + Duration::seconds(offset));
        assert_eq!(r.is_ok(), ok, "now = ts {offset:+} s gave {r:?}");
    }
}

#[tokio::test]
async fn wrong_secret_stale_future_and_tampered_get_401_and_nothing_is_stored() {
    let app = spawn_app().await;
    let body = event_body("sig-1", "created", 1, "hello");
    let fresh = now_stamp();
    let stale =
        (Utc::now() - Duration::seconds(301)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let future =
        (Utc::now() + Duration::seconds(301)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let r = app
        .post_with(body.clone(), Some("wrong-secret"), &fresh, &[])
        .await;
    assert_eq!(r.status(), 401);
    let reason: Value = r.json().await.unwrap();
    assert_eq!(
        reason["error"],
        "signature does not match any configured secret"
    );

    let r = app.post_with(body.clone(), Some(SECRET), &stale, &[]).await;
    assert_eq!(r.status(), 401);
    let reason: Value = r.json().await.unwrap();
    let text = reason["error"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("signature timestamp is 30")
            && text
                .contains(" s in the past (more than 300 s from now): check this machine's clock"),
        "{text}"
    );
    assert_eq!(
        app.post_with(body.clone(), Some(SECRET), &future, &[])
            .await
            .status(),
        401
    );

    // Signed correctly, then one byte of the body changed in transit.
    let sig = deskbot::webhook::signature::sign(SECRET, &fresh, body.as_bytes());
    let mut tampered = body.clone().into_bytes();
    let i = tampered.iter().position(|b| *b == b'h').unwrap();
    tampered[i] = b'H';
    let r = app
        .post_with(
            tampered,
            None,
            &fresh,
            &[
                ("x-zendesk-webhook-signature", &sig),
                ("x-zendesk-webhook-signature-timestamp", &fresh),
            ],
        )
        .await;
    assert_eq!(r.status(), 401);

    assert_eq!(app.stored_events(), 0);
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("deskbot_webhooks_rejected_total{reason=\"bad_signature\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("deskbot_webhooks_rejected_total{reason=\"stale_timestamp\"} 2"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn rotation_accepts_every_configured_secret_and_no_removed_one() {
    let app = spawn_app_with(Options {
        secrets: vec!["new-secret", "old-secret"],
        ..Options::default()
    })
    .await;
    let ts = now_stamp();
    for (i, (secret, status)) in [
        ("new-secret", 202),
        ("old-secret", 202),
        ("retired-secret", 401),
    ]
    .into_iter()
    .enumerate()
    {
        let body = event_body(&format!("rot-{i}"), "created", i as u64, "a");
        let r = app.post_with(body, Some(secret), &ts, &[]).await;
        assert_eq!(r.status(), status, "{secret}");
    }
    assert_eq!(app.stored_events(), 2);
    app.stop().await;
}

#[tokio::test]
async fn replayed_request_and_repeated_invocation_are_duplicates() {
    let app = spawn_app().await;
    let body = event_body("replay-1", "created", 5, "hello");
    let ts = now_stamp();
    let first = app.post_with(body.clone(), Some(SECRET), &ts, &[]).await;
    assert_eq!(first.status(), 202);
    let again = app.post_with(body.clone(), Some(SECRET), &ts, &[]).await;
    assert_eq!(again.status(), 200);
    let answer: Value = again.json().await.unwrap();
    assert_eq!(answer["status"], "duplicate");

    // Same invocation delivered twice with different event ids (Zendesk may invoke one action twice).
    let inv = [
        ("x-zendesk-webhook-invocation-id", "8350205582"),
        ("x-zendesk-webhook-id", "01F1KRFQ6BG29CNWFR60NK5FNY"),
    ];
    let r = app
        .post_with(
            event_body("inv-a", "created", 6, "x"),
            Some(SECRET),
            &ts,
            &inv,
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = app
        .post_with(
            event_body("inv-b", "created", 6, "x"),
            Some(SECRET),
            &ts,
            &inv,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.stored_events(), 2);
    app.stop().await;
}

#[tokio::test]
async fn zendesk_test_secret_is_refused_unless_opted_in() {
    let app = spawn_app().await;
    let r = app
        .post_with(
            event_body("t-1", "created", 1, "x"),
            Some(ZENDESK_TEST_SECRET),
            &now_stamp(),
            &[],
        )
        .await;
    assert_eq!(r.status(), 401);
    app.stop().await;

    let app = spawn_app_with(Options {
        accept_test_secret: true,
        ..Options::default()
    })
    .await;
    let r = app
        .post_with(
            event_body("t-2", "created", 1, "x"),
            Some(ZENDESK_TEST_SECRET),
            &now_stamp(),
            &[],
        )
        .await;
    assert_eq!(r.status(), 202);
    app.stop().await;
}
