//! `serve`: the HTTP server and the worker, started together, stopped together.
//!
//! [`run`] takes its listener and shutdown token as arguments so tests bind port 0 and stop it by
//! cancelling; `main` passes a token cancelled by SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::{error, info, warn};

use crate::config::{Config, Reapply, Verification};
use crate::metrics::Metrics;
use crate::policy::{PolicyHandle, PolicySet};
use crate::queue::store::Store;
use crate::queue::worker::Worker;
use crate::webhook::routes::{self, WebhookState};
use crate::webhook::signature::Verifier;
use crate::zendesk::ZendeskClient;

/// Upper bound on one HTTP request, so shutdown never waits on a stuck client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(9);

/// Why `serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The policy did not load.
    #[error("policy did not load:\n{0}")]
    Policy(crate::policy::PolicyError),
    /// The database did not open.
    #[error(transparent)]
    Store(#[from] crate::queue::store::StoreError),
    /// PostgreSQL could not be used.
    #[error(transparent)]
    Postgres(#[from] crate::queue::postgres::PgError),
    /// The HTTP client could not be built.
    #[error("cannot build the Zendesk client: {0}")]
    Client(#[from] reqwest::Error),
    /// The notification client could not be built.
    #[error("cannot build the notification client: {0}")]
    Notify(String),
    /// The server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

// Not `#[from]`: that would make the policy error also the source, and print it twice.
impl From<crate::policy::PolicyError> for ServeError {
    fn from(e: crate::policy::PolicyError) -> Self {
        ServeError::Policy(e)
    }
}

#[derive(Clone)]
struct OpsState {
    store: Store,
    policy: PolicyHandle,
    metrics: Metrics,
    dry_run: bool,
}

/// Runs the server on `listener` and the worker until `shutdown` is cancelled.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (set, warnings) = PolicySet::load(&cfg.rules)?;
    for w in &warnings {
        warn!("{w}");
    }
    info!(policies = ?set.names(), rules = set.rule_count(), path = %cfg.rules.display(), "policies loaded");
    let policy = PolicyHandle::new(set);
    let store = match &cfg.database_url {
        Some(url) => {
            let store = Store::connect(url.expose()).await?;
            store.listen_for_other_instances();
            info!("queue in PostgreSQL (schema up to date); other instances may share it");
            store
        }
        None => {
            let store = Store::open(&cfg.db)?;
            info!(path = %cfg.db.display(), "queue in SQLite");
            store
        }
    };
    let metrics = Metrics::new();
    let client = match &cfg.zendesk {
        Some(z) => ZendeskClient::new(z, metrics.clone())?,
        None => None,
    };
    if let (Some(c), Some(budget)) = (&client, store.shared_budget()) {
        c.share_budget(budget);
        info!("Zendesk rate budget shared with the other instances through PostgreSQL");
    }
    let verifier = match &cfg.verification {
        Verification::Skip => {
            warn!("DESKBOT_INSECURE_SKIP_VERIFY is set: webhook signatures are NOT checked");
            Verifier::insecure_skip()
        }
        Verification::Secrets {
            secrets,
            accept_test_secret,
        } => {
            if *accept_test_secret {
                warn!(
                    "accepting Zendesk's public TEST signing secret: anyone can sign requests with it; use only while setting up"
                );
            }
            Verifier::new(
                secrets.clone(),
                *accept_test_secret,
                cfg.signature_tolerance_secs,
            )
        }
    };
    if cfg.dry_run {
        warn!(
            reads_zendesk = client.is_some(),
            "dry run: decisions are logged and stored, nothing is written to Zendesk"
        );
    }
    let policy_for_reload = policy.clone();
    let notifier = cfg
        .notify_url
        .clone()
        .map(crate::notify::Notifier::new)
        .transpose()
        .map_err(|e| ServeError::Notify(e.to_string()))?;
    // Webhooks Zendesk could not deliver while deskbot was down or unreachable are not retried:
    // at start, and after every quiet spell, read the tickets changed since deskbot last heard.
    if let (Some(c), false) = (client.clone(), cfg.dry_run) {
        tokio::spawn(crate::backfill::keep_up(
            store.clone(),
            c,
            cfg.catch_up_idle,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    let reapply = match (cfg.reapply, client.clone()) {
        (Reapply::Off, _) => None,
        (Reapply::Open, None) => {
            warn!("DESKBOT_REAPPLY=open needs Zendesk credentials to read the open tickets; it is off");
            None
        }
        (Reapply::Open, Some(c)) => {
            let (tx, rx) = tokio::sync::watch::channel(None);
            tokio::spawn(crate::backfill::reapply_on_change(
                store.clone(),
                c,
                policy.clone(),
                rx,
                metrics.clone(),
                shutdown.clone(),
            ));
            Some(tx)
        }
    };
    let console_client = client.clone();
    let worker = Worker::new(
        store.clone(),
        policy.clone(),
        client,
        cfg.dry_run,
        cfg.retry,
        metrics.clone(),
    )
    .with_notifier(notifier);
    let addr = listener.local_addr()?;
    let token = match crate::admin::Access::of(&cfg) {
        crate::admin::Access::Off => {
            info!("the admin console is off: set DESKBOT_ADMIN_TOKEN (16 characters or more, e.g. `openssl rand -hex 32`) to turn it on at /admin");
            None
        }
        crate::admin::Access::Generated(token) => {
            let host = if addr.ip().is_unspecified() {
                std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
            } else {
                addr
            };
            info!(
                "admin console, with a token made for this run: http://{host}/admin/login?token={}",
                token.expose()
            );
            Some(token)
        }
        crate::admin::Access::Token(token) => {
            info!("admin console at /admin: log in with DESKBOT_ADMIN_TOKEN");
            Some(token)
        }
    };
    let console = token.map(|token| crate::admin::Console {
        store: store.clone(),
        policy: policy.clone(),
        dry_run: cfg.dry_run,
        client: console_client,
        gate: Arc::new(crate::admin::auth::Gate::new(token)),
    });
    let app = router(
        WebhookState {
            verifier: Arc::new(verifier),
            store: store.clone(),
            metrics: metrics.clone(),
        },
        OpsState {
            store,
            policy,
            metrics,
            dry_run: cfg.dry_run,
        },
        console,
    );
    info!(%addr, "listening");
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    tokio::spawn(crate::reload::watch(
        cfg.rules.clone(),
        policy_for_reload,
        shutdown.clone(),
        reapply,
    ));
    crate::http::serve(listener, app, shutdown.clone(), Default::default()).await;
    // Intake has stopped: let the worker finish its in-flight job, then return.
    shutdown.cancel();
    if let Err(e) = worker_task.await {
        error!(error = %e, "worker task ended abnormally");
    }
    info!("stopped");
    Ok(())
}

fn router(webhook: WebhookState, ops: OpsState, console: Option<crate::admin::Console>) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(ops)
        .merge(routes::router(webhook));
    if let Some(c) = console {
        app = app.merge(crate::admin::router(c));
    }
    app.layer(TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        REQUEST_TIMEOUT,
    ))
    .layer(TraceLayer::new_for_http())
}

async fn healthz(State(st): State<OpsState>) -> Response {
    let set = st.policy.current();
    // A failed reload keeps the old policies serving, so the service stays healthy; the error shows here.
    let policy = json!({
        "loaded": true,
        "name": set.names().join(", "),
        "policies": set.names(),
        "rules": set.rule_count(),
        "error": st.policy.last_error(),
    });
    let now = Utc::now();
    let counted = match st.store.stats(now).await {
        Ok(stats) => st.store.clock_counts(now).await.map(|c| (stats, c)),
        Err(e) => Err(e),
    };
    match counted {
        Ok((stats, clocks)) => Json(json!({
            "status": "ok",
            "dry_run": st.dry_run,
            "database": {"backend": st.store.kind(), "ok": true},
            "policy": policy,
            "queue": stats,
            "sla": clocks,
        }))
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "dry_run": st.dry_run,
                "database": {"backend": st.store.kind(), "ok": false, "error": e.to_string()},
                "policy": policy,
                "queue": null,
                "error": e.to_string(),
            })),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<OpsState>) -> Response {
    if let Ok(s) = st.store.stats(Utc::now()).await {
        st.metrics
            .set_queue(s.depth, s.oldest_age_secs, s.dead_letters);
    }
    if let Ok(c) = st.store.clock_counts(Utc::now()).await {
        let by_state = [
            ("running", c.running),
            ("paused", c.paused),
            ("at_risk", c.at_risk),
            ("breached", c.breached),
        ];
        st.metrics.set_clocks(&by_state, c.timers_due);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// A token cancelled by SIGTERM or SIGINT (Fly.io sends SIGINT by default, most others SIGTERM).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => info!("SIGINT: shutting down"),
                        _ = term.recv() => info!("SIGTERM: shutting down"),
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops deskbot");
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        t.cancel();
    });
    token
}
