//! `POST /webhooks/zendesk`: verify, parse, store, answer. No network I/O happens here.
//!
//! | answer | when |
//! |---|---|
//! | 202 | stored durably as a new job |
//! | 200 | a duplicate delivery, or an event type deskbot ignores |
//! | 400 | not a ticket event (one-line JSON reason) |
//! | 401 | missing, wrong or stale signature |
//! | 413 | body over 1 MiB |
//! | 503 + Retry-After | could not store it, or too many bodies are being read at once: the only answer Zendesk retries |

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::queue::store::{Enqueued, NewEvent, Store};

use super::payload::{self, Parsed, Source};
use super::signature::{Matched, Verifier, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Largest body accepted; Zendesk ticket events are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;
/// Body bytes the route reads at once, in KiB: each request reserves its `Content-Length` (1 MiB
/// when it sends none) before its body is read, so many clients posting large bodies get 503
/// instead of growing memory without bound. Thousands of real (few-KiB) events fit at once.
const BODY_BUDGET_KIB: u32 = 16 * 1024;
/// Longest wait for the database before answering 503 (well inside Zendesk's ~10 s timeout).
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// `Retry-After` on 503: Zendesk retries only when it is under 60 s.
const RETRY_AFTER_SECS: &str = "10";
const INVOCATION_HEADER: &str = "x-zendesk-webhook-invocation-id";
const WEBHOOK_ID_HEADER: &str = "x-zendesk-webhook-id";

/// What the webhook handler needs.
#[derive(Clone)]
pub struct WebhookState {
    /// Signature checker.
    pub verifier: Arc<Verifier>,
    /// Queue.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
}

/// The webhook route, with its body limit and its budget of body bytes in flight.
pub fn router(state: WebhookState) -> Router {
    let budget = (
        Arc::new(Semaphore::new(BODY_BUDGET_KIB as usize)),
        state.metrics.clone(),
    );
    Router::new()
        .route("/webhooks/zendesk", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(budget, admit))
        .with_state(state)
}

/// Reserves the request's body size from the budget before the body is read; 503 when full.
async fn admit(
    State((budget, metrics)): State<(Arc<Semaphore>, Metrics)>,
    request: Request,
    next: Next,
) -> Response {
    let bytes = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(MAX_BODY, |n| n.min(MAX_BODY));
    let kib = u32::try_from(bytes / 1024 + 1).unwrap_or(BODY_BUDGET_KIB);
    let Ok(reserved) = budget.try_acquire_many_owned(kib) else {
        metrics.rejected("busy");
        warn!(
            body_bytes = bytes,
            "webhook rejected: too many bodies being read at once; answering 503 so the sender retries"
        );
        return retry_later("too many requests are being read at once; retry later");
    };
    let response = next.run(request).await;
    drop(reserved);
    response
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

fn reject(metrics: &Metrics, status: StatusCode, reason: &str, message: String) -> Response {
    metrics.rejected(reason);
    // Bad client input is not deskbot's error: info, not error level.
    info!(status = status.as_u16(), reason, error = %message, "webhook rejected");
    answer(status, json!({ "error": message }))
}

async fn receive(
    State(st): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = handle(&st, &headers, body).await;
    st.metrics.webhook_latency(started.elapsed().as_secs_f64());
    response
}

async fn handle(
    st: &WebhookState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let m = &st.metrics;
    let body = match body {
        Ok(b) => b,
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return reject(
                m,
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body is larger than {MAX_BODY} bytes"),
            )
        }
        Err(rej) => {
            return reject(
                m,
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                rej.body_text(),
            )
        }
    };
    let now = Utc::now();
    let header = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
    let test_secret = match st.verifier.verify(
        header(SIGNATURE_HEADER),
        header(TIMESTAMP_HEADER),
        &body,
        now,
    ) {
        Ok(matched) => matched == Matched::TestSecret,
        Err(e) => return reject(m, StatusCode::UNAUTHORIZED, e.reason(), e.to_string()),
    };
    let event = match payload::parse(&body) {
        Ok(Parsed::Ticket(ev)) => *ev,
        Ok(Parsed::Ignored { event_type }) => {
            m.rejected("ignored_event_type");
            accepted(
                test_secret,
                "ignored",
                format!("{event_type}: deskbot does not act on this event type"),
            );
            return answer(
                StatusCode::OK,
                json!({ "status": "ignored", "event_type": event_type }),
            );
        }
        Err(e) => return reject(m, StatusCode::BAD_REQUEST, "bad_payload", e.to_string()),
    };
    let invocation_key = headers
        .get(INVOCATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|inv| {
            let webhook = headers
                .get(WEBHOOK_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("{webhook}:{inv}")
        });
    let source = match event.source {
        Source::Event => "event",
        Source::Trigger => "trigger",
        Source::Internal => "internal",
        Source::Backfill => "backfill",
    };
    let ticket_id = event.ticket_id;
    let kind = event.kind.clone();
    let stored = tokio::time::timeout(
        STORE_TIMEOUT,
        st.store.enqueue(NewEvent {
            event,
            invocation_key,
            received_at: now,
            background: false,
        }),
    )
    .await;
    match stored {
        Ok(Ok(Enqueued::Queued(id))) => {
            m.received(source);
            accepted(
                test_secret,
                "queued",
                format!("job {id}, ticket {ticket_id}, {kind}"),
            );
            answer(
                StatusCode::ACCEPTED,
                json!({ "status": "queued", "job": id }),
            )
        }
        Ok(Ok(Enqueued::Duplicate)) => {
            m.rejected("duplicate");
            accepted(
                test_secret,
                "duplicate",
                format!("ticket {ticket_id}, {kind}: this delivery was stored before, nothing new queued"),
            );
            answer(StatusCode::OK, json!({ "status": "duplicate" }))
        }
        Ok(Err(e)) => unavailable(m, e.to_string()),
        Err(_) => unavailable(m, "timed out waiting for the database".into()),
    }
}

/// The one log line of a webhook that passed verification; a warning when Zendesk's public test
/// secret signed it (logged only for requests that secret actually got accepted).
fn accepted(test_secret: bool, outcome: &str, detail: String) {
    if test_secret {
        warn!(
            outcome,
            %detail,
            "webhook {outcome}, signed with Zendesk's public TEST secret: set DESKBOT_WEBHOOK_SECRETS to the webhook's real secret before going live"
        );
    } else {
        info!(outcome, %detail, "webhook {outcome}");
    }
}

fn unavailable(m: &Metrics, cause: String) -> Response {
    m.rejected("store_unavailable");
    error!(error = %cause, "could not store a webhook event; answering 503 so Zendesk retries");
    retry_later("could not store the event; retry later")
}

/// 503 with `Retry-After`: the one answer Zendesk retries.
fn retry_later(message: &str) -> Response {
    let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": message }));
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    r
}
