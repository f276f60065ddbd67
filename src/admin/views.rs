//! The page frame, the login and logout, and small pieces the pages share.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::auth::{self, Refused, Session};
use super::Console;

/// The double-submit cookie that guards the login form (there is no session yet).
const LOGIN_COOKIE: &str = "deskbot_login";

/// A whole page: the navigation, the title, the body; `session` adds the logout button.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · deskbot" }
                link rel="stylesheet" href="/admin/console.css";
            }
            body {
                header {
                    nav {
                        a.brand href="/admin" { "deskbot" }
                        @if let Some(s) = session {
                            a href="/admin" { "Overview" }
                            a href="/admin/activity" { "Activity" }
                            a href="/admin/sla" { "SLA" }
                            a href="/admin/policy" { "Policy" }
                            a href="/admin/playground" { "Playground" }
                            form.logout method="post" action="/admin/logout" {
                                (csrf(s))
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field every POST form carries.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// An instant as UTC, to the second.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration in milliseconds, short.
pub fn millis(ms: i64) -> String {
    match ms {
        m if m < 1000 => format!("{m} ms"),
        m if m < 60_000 => format!("{:.1} s", m as f64 / 1000.0),
        m => format!("{} min", m / 60_000),
    }
}

/// A page saying what went wrong, with its status.
pub fn problem(status: StatusCode, message: &str) -> Response {
    let body = page(
        "Something went wrong",
        None,
        html! { p.error { (message) } },
    );
    (status, body).into_response()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    login_csrf: String,
}

fn login_page(status: StatusCode, guard: &str, message: Option<&str>) -> Response {
    let body = page(
        "Log in",
        None,
        html! {
            @if let Some(m) = message { p.error { (m) } }
            form.login method="post" action="/admin/login" {
                input type="hidden" name="login_csrf" value=(guard);
                label for="token" { "Console token" }
                input #token type="password" name="token" autocomplete="current-password" autofocus;
                button type="submit" { "Log in" }
            }
            p.hint { "The token is DESKBOT_ADMIN_TOKEN, or the one in the login URL deskbot printed at start." }
        },
    );
    let cookie = format!("{LOGIN_COOKIE}={guard}; Path=/admin; HttpOnly; SameSite=Strict");
    (status, [(header::SET_COOKIE, cookie)], body).into_response()
}

/// A login with `token`: on success the session cookie and on to the overview, else why not.
fn attempt(
    c: &Console,
    token: &str,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Response {
    match c
        .gate
        .login(token, auth::peer_ip(peer.as_ref().map(|e| &e.0)))
    {
        Ok(id) => {
            let cookie = auth::session_cookie(&id, auth::over_https(headers));
            ([(header::SET_COOKIE, cookie)], Redirect::to("/admin")).into_response()
        }
        Err(r) => refused(r),
    }
}

fn refused(r: Refused) -> Response {
    let guard = auth::random_token();
    match r {
        Refused::Wrong => login_page(
            StatusCode::UNAUTHORIZED,
            &guard,
            Some("That token is not right."),
        ),
        Refused::Throttled(wait) => {
            let mins = wait.as_secs().div_ceil(60);
            let mut resp = login_page(
                StatusCode::TOO_MANY_REQUESTS,
                &guard,
                Some(&format!("Too many failed logins: try again in {mins} min.")),
            );
            if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

/// `GET /admin/login`: the form, or (with `?token=`, the URL printed at start) a login.
pub async fn login_form(
    State(c): State<Console>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if let Some(token) = q.token {
        return attempt(&c, &token, peer, &headers);
    }
    login_page(StatusCode::OK, &auth::random_token(), None)
}

/// `POST /admin/login`.
pub async fn login(
    State(c): State<Console>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let guard = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if guard.is_empty() || !bool::from(guard.as_bytes().ct_eq(f.login_csrf.as_bytes())) {
        return (
            StatusCode::FORBIDDEN,
            "the login form's CSRF token is missing or stale: reload /admin/login",
        )
            .into_response();
    }
    attempt(&c, &f.token, peer, &headers)
}

/// `POST /admin/logout`.
pub async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    Extension(_): Extension<Session>,
) -> Response {
    if let Some(id) = auth::cookie(&headers, auth::SESSION_COOKIE) {
        c.gate.logout(&id);
    }
    let cookie = auth::session_cookie("", auth::over_https(&headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/admin/login")).into_response()
}
