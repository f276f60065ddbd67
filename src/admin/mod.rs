//! The admin console under `/admin`: what happened to each event and why, what is at risk, the
//! policies as they match, and a playground for rules. Server-rendered pages (maud escapes every
//! value), one CSS file, no script; every page behind a login, every change a POST with a CSRF
//! token, and each change written to the console's action log.

mod activity;
pub mod auth;
mod overview;
mod playground;
mod views;

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::config::{Config, Secret};
use crate::policy::PolicyHandle;
use crate::queue::store::Store;
use crate::zendesk::ZendeskClient;

use auth::Gate;

/// Whether the console is on, and with which token.
#[derive(Debug)]
pub enum Access {
    /// On, with the configured token.
    Token(Secret),
    /// On, with a token made at start (the local dry run): its login URL is printed once.
    Generated(Secret),
    /// Off: Zendesk credentials are set and no `DESKBOT_ADMIN_TOKEN`.
    Off,
}

impl Access {
    /// What `serve` does: the configured token; else, without Zendesk credentials (a local dry
    /// run), a fresh one; else nothing, since a token must never first appear in production logs.
    pub fn of(cfg: &Config) -> Access {
        match (&cfg.admin_token, &cfg.zendesk) {
            (Some(t), _) => Access::Token(t.clone()),
            (None, None) => Access::Generated(Secret::new(auth::random_token())),
            (None, Some(_)) => Access::Off,
        }
    }
}

/// What the console's pages read and act on.
#[derive(Clone)]
pub struct Console {
    /// The queue and its records.
    pub store: Store,
    /// The policies in force.
    pub policy: PolicyHandle,
    /// Whether updates are only logged.
    pub dry_run: bool,
    /// The Zendesk client, for its rate budget.
    pub client: Option<ZendeskClient>,
    /// Login and sessions.
    pub gate: Arc<Gate>,
}

/// The CSS, compiled into the binary.
const CSS: &str = include_str!("console.css");

/// Headers every console answer carries: no script runs, nothing frames it, nothing is cached.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, to merge under the server's router.
pub fn router(console: Console) -> Router {
    let gate = console.gate.clone();
    let private = Router::new()
        .route("/admin", get(overview::overview))
        .route("/admin/activity", get(activity::list))
        .route("/admin/events/{id}", get(activity::detail))
        .route("/admin/events/{id}/requeue", post(activity::requeue))
        .route(
            "/admin/requeue",
            get(activity::bulk_preview).post(activity::bulk),
        )
        .route("/admin/sla", get(overview::sla))
        .route("/admin/policy", get(overview::policy))
        .route(
            "/admin/playground",
            get(playground::form).post(playground::run),
        )
        .route("/admin/logout", post(views::logout))
        .route_layer(axum::middleware::from_fn_with_state(
            gate,
            auth::require_session,
        ));
    let header = |name, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    Router::new()
        .route("/admin/login", get(views::login_form).post(views::login))
        .route(
            "/admin/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .merge(private)
        .layer(header(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header(header::CACHE_CONTROL, "no-store"))
        .with_state(console)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: crate::config::ServeArgs,
    }

    fn cfg(args: &[&str]) -> Config {
        let mut argv = vec!["deskbot", "--webhook-secrets", "s3cret"];
        argv.extend_from_slice(args);
        Config::from_args(Cli::parse_from(argv).serve).unwrap()
    }

    const ZENDESK: &[&str] = &[
        "--zendesk-url",
        "http://127.0.0.1:9",
        "--zendesk-email",
        "a@example.com",
        "--zendesk-api-token",
        "t",
    ];

    #[test]
    fn a_token_is_made_only_for_the_local_dry_run() {
        assert!(matches!(Access::of(&cfg(&[])), Access::Generated(t) if t.expose().len() == 64));
        assert!(matches!(Access::of(&cfg(ZENDESK)), Access::Off));
        let mut with_token = ZENDESK.to_vec();
        with_token.extend(["--admin-token", "0123456789abcdef"]);
        assert!(
            matches!(Access::of(&cfg(&with_token)), Access::Token(t) if t.expose() == "0123456789abcdef")
        );
    }
}
