//! The admin console over HTTP: login, throttling, CSRF, escaping, requeue, and every page.

use std::time::Duration;

use axum::http::Method;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    api_ticket, comment_body, count, eventually, spawn_app_with, Options, TestApp,
};

pub const TOKEN: &str = "console-token-0123456789";

/// A logged-in browser, cookies kept by hand.
pub struct Admin {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: String,
    pub csrf: String,
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

/// The value of the first hidden `csrf` field in a page.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// Posts the login form with `token`; the answer.
pub async fn post_login(base: &str, token: &str) -> reqwest::Response {
    let http = client();
    let form = http
        .get(format!("{base}/admin/login"))
        .send()
        .await
        .unwrap();
    let guard = set_cookie(&form, "deskbot_login").unwrap();
    let value = guard.split_once('=').unwrap().1.to_string();
    http.post(format!("{base}/admin/login"))
        .header(COOKIE, guard)
        .form(&[("token", token), ("login_csrf", value.as_str())])
        .send()
        .await
        .unwrap()
}

impl Admin {
    pub async fn login(base: &str, token: &str) -> Admin {
        let r = post_login(base, token).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[LOCATION], "/admin");
        let raw = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with("deskbot_session="))
            .unwrap();
        assert!(
            raw.contains("HttpOnly")
                && raw.contains("SameSite=Strict")
                && raw.contains("Path=/admin"),
            "{raw}"
        );
        let cookie = raw.split(';').next().unwrap().to_string();
        let mut a = Admin {
            base: base.to_string(),
            http: client(),
            cookie,
            csrf: String::new(),
        };
        let (_, page) = a.get("/admin").await;
        a.csrf = csrf_of(&page);
        a
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = vec![("csrf", self.csrf.as_str())];
        fields.extend_from_slice(form);
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(&fields)
            .send()
            .await
            .unwrap()
    }
}

async fn app() -> TestApp {
    spawn_app_with(Options {
        admin_token: Some(TOKEN),
        ..Options::default()
    })
    .await
}

fn base(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

#[tokio::test]
async fn every_page_needs_a_login() {
    let app = app().await;
    let http = client();
    for path in [
        "/admin",
        "/admin/activity",
        "/admin/events/1",
        "/admin/sla",
        "/admin/policy",
        "/admin/playground",
    ] {
        let r = http
            .get(format!("{}{path}", base(&app)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()[LOCATION], "/admin/login", "{path}");
    }
    let r = http
        .post(format!("{}/admin/events/1/requeue", base(&app)))
        .form(&[("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A made-up session is no session.
    let r = http
        .get(format!("{}/admin", base(&app)))
        .header(COOKIE, "deskbot_session=0000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = http
        .get(format!("{}/admin/login", base(&app)))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    app.stop().await;
}

#[tokio::test]
async fn wrong_tokens_are_refused_then_throttled() {
    let app = app().await;
    for _ in 0..5 {
        let r = post_login(&base(&app), "not-the-token").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(set_cookie(&r, "deskbot_session").is_none());
    }
    let r = post_login(&base(&app), TOKEN).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "locked out, even with the token"
    );
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 800, "{wait}");
    assert!(r.text().await.unwrap().contains("Too many failed logins"));
    app.stop().await;
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused() {
    let app = app().await;
    let admin = Admin::login(&base(&app), TOKEN).await;
    let r = admin
        .http
        .post(format!("{}/admin/logout", admin.base))
        .header(COOKIE, &admin.cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = admin
        .http
        .post(format!("{}/admin/playground", admin.base))
        .header(COOKIE, &admin.cookie)
        .form(&[("subject", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The login form has its own guard.
    let r = client()
        .post(format!("{}/admin/login", admin.base))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // With the token, logout works and ends the session.
    let r = admin.post("/admin/logout", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(admin.get("/admin").await.0, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test]
async fn customer_text_is_shown_as_text() {
    let app = app().await;
    let subject = "URGENT <script>alert(1)</script>";
    let mut t = api_ticket(31, subject);
    t["tags"] = json!(["\"><img src=x onerror=alert(2)>"]);
    app.zendesk.put_ticket(t);
    for body in [
        crate::support::event_body("ev-xss-1", "created", 31, subject),
        comment_body("ev-xss-2", 31, "<b onmouseover=alert(3)>help</b> urgent"),
    ] {
        assert_eq!(app.post_signed(body).await.status(), 202);
    }
    let db = app.db.clone();
    eventually(10, "the events processed", || {
        count(&db, "SELECT COUNT(*) FROM events WHERE state = 'done'") >= 2
    })
    .await;
    let admin = Admin::login(&base(&app), TOKEN).await;
    let (status, list) = admin.get("/admin/activity").await;
    assert_eq!(status, StatusCode::OK);
    let created = count(&app.db, "SELECT MIN(id) FROM events WHERE kind = 'created'");
    let (_, first) = admin.get(&format!("/admin/events/{created}")).await;
    let id = count(
        &app.db,
        "SELECT MIN(id) FROM events WHERE kind = 'comment_added'",
    );
    let (_, detail) = admin.get(&format!("/admin/events/{id}")).await;
    for page in [&list, &first, &detail] {
        assert!(!page.contains("<script>alert"), "a script tag got through");
        assert!(
            !page.contains("<img src=x"),
            "an attribute escaped its quotes"
        );
        assert!(
            !page.contains("<b onmouseover"),
            "markup in a comment got through"
        );
    }
    assert!(
        first.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{first}"
    );
    assert!(
        detail.contains("&lt;b onmouseover=alert(3)&gt;"),
        "{detail}"
    );
    // The matched word is marked and linked to its rule.
    assert!(
        detail.contains("<a class=\"evidence\" href=\"#rule-0\"><mark>URGENT</mark></a>: stuck"),
        "{detail}"
    );
    assert!(detail.contains("<li id=\"rule-0\"><strong>flag-urgent-subject</strong>"));
    app.stop().await;
}

#[tokio::test]
async fn a_dead_letter_is_requeued_from_its_page_after_a_confirmation() {
    let app = app().await;
    app.zendesk.put_ticket(api_ticket(41, "URGENT: down"));
    app.zendesk.fail_next(Method::PUT, 1, 400, None);
    let r = app
        .post_signed(crate::support::event_body(
            "ev-dead",
            "created",
            41,
            "URGENT: down",
        ))
        .await;
    assert_eq!(r.status(), 202);
    let db = app.db.clone();
    eventually(10, "a dead letter", || {
        count(&db, "SELECT COUNT(*) FROM events WHERE state = 'dead'") == 1
    })
    .await;
    let id = count(&app.db, "SELECT id FROM events WHERE state = 'dead'");
    let admin = Admin::login(&base(&app), TOKEN).await;
    let (_, detail) = admin.get(&format!("/admin/events/{id}")).await;
    assert!(detail.contains("Failed tries"));
    assert!(detail.contains("400"), "the error of the try: {detail}");
    // First the question, then the requeue.
    let r = admin
        .post(&format!("/admin/events/{id}/requeue"), &[])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("tried again from its first attempt"));
    assert_eq!(
        count(&app.db, "SELECT COUNT(*) FROM events WHERE state = 'dead'"),
        1
    );
    let r = admin
        .post(
            &format!("/admin/events/{id}/requeue"),
            &[("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    eventually(10, "the requeued job updated the ticket", || {
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE state = 'done' AND result = 'updated'",
        ) == 1
    })
    .await;
    assert_eq!(app.zendesk.ticket(41)["priority"], "urgent");
    assert_eq!(
        crate::support::text_of(
            &app.db,
            "SELECT action || ' · ' || detail || ' · ' || source FROM admin_actions"
        ),
        format!("requeue · event {id} of ticket 41 (1 queued) · 127.0.0.1")
    );
    let (_, overview) = admin.get("/admin").await;
    assert!(overview.contains("Latest console actions"));
    app.stop().await;
}

#[tokio::test]
async fn a_bulk_requeue_shows_its_count_first() {
    let app = app().await;
    for id in 51..=53u64 {
        app.zendesk.put_ticket(api_ticket(id, "Hello"));
        let r = app
            .post_signed(crate::support::event_body(
                &format!("ev-{id}"),
                "created",
                id,
                "Hello",
            ))
            .await;
        assert_eq!(r.status(), 202);
    }
    let db = app.db.clone();
    eventually(10, "three events done", || {
        count(&db, "SELECT COUNT(*) FROM events WHERE state = 'done'") == 3
    })
    .await;
    let admin = Admin::login(&base(&app), TOKEN).await;
    let (_, preview) = admin.get("/admin/requeue?result=no_change&ticket=52").await;
    assert!(preview.contains("1 events match this filter."), "{preview}");
    let (_, preview) = admin.get("/admin/requeue?result=no_change").await;
    assert!(preview.contains("3 events match this filter."), "{preview}");
    let r = admin
        .post(
            "/admin/requeue",
            &[("result", "no_change"), ("ticket", "52")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    eventually(10, "the copy processed", || {
        count(&db, "SELECT COUNT(*) FROM events WHERE state = 'done'") == 4
    })
    .await;
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM events WHERE dedup_key LIKE 'requeue:%' AND ticket_id = 52"
        ),
        1
    );
    // Bad filters are told, not crashed on.
    let (status, page) = admin.get("/admin/activity?ticket=abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains("ticket must be a whole number, not &quot;abc&quot;"),
        "{page}"
    );
    let (status, _) = admin.get("/admin/activity?result=exploded").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn activity_pages_by_key_and_filters() {
    let app = app().await;
    for i in 0..60u64 {
        app.zendesk.put_ticket(api_ticket(100 + i, "Hello"));
        let r = app
            .post_signed(crate::support::event_body(
                &format!("ev-p{i}"),
                "created",
                100 + i,
                "Hello",
            ))
            .await;
        assert_eq!(r.status(), 202);
    }
    let db = app.db.clone();
    eventually(20, "sixty done", || {
        count(&db, "SELECT COUNT(*) FROM events WHERE state = 'done'") == 60
    })
    .await;
    let admin = Admin::login(&base(&app), TOKEN).await;
    let (_, first) = admin.get("/admin/activity").await;
    assert_eq!(
        first.matches("<tr><td><a href=\"/admin/events/").count(),
        50
    );
    assert!(first.contains("/admin/events/60\""), "newest first");
    assert!(
        first.contains("href=\"/admin/activity?before=11\""),
        "{first}"
    );
    let (_, second) = admin.get("/admin/activity?before=11").await;
    assert_eq!(
        second.matches("<tr><td><a href=\"/admin/events/").count(),
        10
    );
    let (_, one) = admin.get("/admin/activity?ticket=105").await;
    assert_eq!(one.matches("<tr><td><a href=\"/admin/events/").count(), 1);
    let (_, none) = admin.get("/admin/activity?kind=comment_added").await;
    assert!(none.contains("No events match."));
    let (_, future) = admin.get("/admin/activity?from=2999-01-01T00:00").await;
    assert!(future.contains("No events match."));
    app.stop().await;
}

#[tokio::test]
async fn overview_sla_and_policy_pages_show_the_service() {
    let app = app().await;
    let admin = Admin::login(&base(&app), TOKEN).await;
    let (_, overview) = admin.get("/admin").await;
    assert!(
        overview.contains("Live") && overview.contains("2 rules"),
        "{overview}"
    );
    assert!(overview.contains("Zendesk rate budget"));
    let (_, policy) = admin.get("/admin/policy").await;
    assert!(
        policy.contains("urgent-subject · never matched"),
        "{policy}"
    );
    let (_, sla) = admin.get("/admin/sla").await;
    assert!(sla.contains("No open clocks match."));
    // A broken reload shows on the overview.
    let rules = app.db.parent().unwrap().join("policy.toml");
    std::fs::write(&rules, "[policy\nname = ").unwrap();
    let mut shown = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if admin
            .get("/admin")
            .await
            .1
            .contains("The last policy reload failed")
        {
            shown = true;
            break;
        }
    }
    assert!(shown, "the reload error is shown");
    app.stop().await;
}

#[tokio::test]
async fn the_playground_decides_a_typed_ticket_and_tries_an_edited_copy() {
    let app = app().await;
    let admin = Admin::login(&base(&app), TOKEN).await;
    let (_, form) = admin.get("/admin/playground").await;
    assert!(form.contains("<option value=\"e2e\" selected>"), "{form}");
    // The copy starts as the policy's file.
    assert!(
        form.contains("name = &quot;urgent-subject&quot;"),
        "the policy text in the form: {form}"
    );
    assert!(form.contains("href=\"/admin/playground?policy=e2e\""));
    let r = admin
        .post(
            "/admin/playground",
            &[
                ("subject", "URGENT: orders stopped"),
                ("description", "since 8am"),
                ("policy", "e2e"),
            ],
        )
        .await;
    let page = r.text().await.unwrap();
    assert!(page.contains("urgent"), "{page}");
    assert!(page.contains("<mark>URGENT</mark>"), "{page}");
    // An edited copy: its tests run, and what it decides differently is marked.
    let copy = r#"
[policy]
name = "e2e"
[[rule]]
name = "orders"
when = { subject = { has_word = "orders" } }
priority = "high"
[[test]]
name = "orders are high"
ticket = { subject = "orders" }
expect = { priority = "high" }
[[test]]
name = "wrongly expects low"
ticket = { subject = "orders" }
expect = { priority = "low" }
"#;
    let r = admin
        .post(
            "/admin/playground",
            &[
                ("subject", "URGENT: orders stopped"),
                ("policy", "e2e"),
                ("policy_text", copy),
            ],
        )
        .await;
    let page = r.text().await.unwrap();
    assert!(page.contains("pass · orders are high"), "{page}");
    assert!(page.contains("FAIL · wrongly expects low"), "{page}");
    assert!(
        page.contains("<tr class=\"differs\"><th>Priority</th><td>urgent</td><td>high</td></tr>"),
        "{page}"
    );
    let r = admin
        .post(
            "/admin/playground",
            &[
                ("subject", "x"),
                ("policy", "e2e"),
                ("policy_text", "[policy\n"),
            ],
        )
        .await;
    let page = r.text().await.unwrap();
    assert!(page.contains("Your copy does not load:"), "{page}");
    assert!(page.contains(":1:"), "a position: {page}");
    // Nothing was written to the policy file.
    let rules = app.db.parent().unwrap().join("policy.toml");
    assert_eq!(
        std::fs::read_to_string(rules).unwrap(),
        crate::support::POLICY
    );
    app.stop().await;
}

#[tokio::test]
async fn the_printed_login_url_logs_in() {
    let app = app().await;
    let r = client()
        .get(format!("{}/admin/login?token={TOKEN}", base(&app)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/admin");
    let session = set_cookie(&r, "deskbot_session").unwrap();
    let r = client()
        .get(format!("{}/admin", base(&app)))
        .header(COOKIE, session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Behind a proxy that says HTTPS, the cookie is Secure.
    let r = client()
        .get(format!("{}/admin/login?token={TOKEN}", base(&app)))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let raw = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(raw.ends_with("; Secure"), "{raw}");
    let r = client()
        .get(format!("{}/admin/login?token=wrong", base(&app)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

const SLA_POLICY: &str = r#"
[policy]
name = "timed"
[calendars.always]
timezone = "UTC"
hours = { mon-sun = "00:00-24:00" }
[sla.urgent]
first_response = "2 business days"
resolution = "5 business days"
[[rule]]
name = "urgent"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
"#;

fn event_at(id: &str, kind: &str, ticket: u64, time: &str, event: serde_json::Value) -> String {
    json!({
        "type": format!("zen:event-type:ticket.{kind}"), "account_id": 1, "id": id, "time": time,
        "zendesk_event_version": "2022-11-06", "subject": format!("zen:ticket:{ticket}"),
        "detail": {"id": ticket.to_string(), "subject": "URGENT: down", "priority": "URGENT",
                   "status": "OPEN", "created_at": time, "updated_at": time},
        "event": event
    })
    .to_string()
}

#[tokio::test]
async fn the_sla_page_draws_each_clock_with_its_pauses() {
    let app = spawn_app_with(Options {
        admin_token: Some(TOKEN),
        policy: SLA_POLICY,
        ..Options::default()
    })
    .await;
    let now = chrono::Utc::now();
    let stamp = |m: i64| {
        (now - chrono::Duration::minutes(m)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let mut t = api_ticket(81, "URGENT: down");
    t["created_at"] = json!(stamp(60));
    t["status"] = json!("open");
    app.zendesk.put_ticket(t);
    for body in [
        event_at("s1", "created", 81, &stamp(60), json!({})),
        event_at(
            "s2",
            "status_changed",
            81,
            &stamp(40),
            json!({"current": "PENDING", "previous": "OPEN"}),
        ),
        event_at(
            "s3",
            "status_changed",
            81,
            &stamp(20),
            json!({"current": "OPEN", "previous": "PENDING"}),
        ),
    ] {
        assert_eq!(app.post_signed(body).await.status(), 202);
        let db = app.db.clone();
        let before = count(&db, "SELECT COUNT(*) FROM events WHERE state = 'done'");
        eventually(10, "processed", || {
            count(&db, "SELECT COUNT(*) FROM events WHERE state = 'done'") > before
        })
        .await;
    }
    let admin = Admin::login(&base(&app), TOKEN).await;
    let (_, page) = admin.get("/admin/sla").await;
    assert!(
        page.contains("<a href=\"/admin/activity?ticket=81\">81</a>"),
        "{page}"
    );
    assert!(
        page.contains("first_response") && page.contains("resolution"),
        "{page}"
    );
    // Resolution paused for 20 minutes: one paused span on its bar.
    assert_eq!(page.matches("<rect class=\"paused\"").count(), 1, "{page}");
    let (_, filtered) = admin.get("/admin/sla?show=breached").await;
    assert!(filtered.contains("No open clocks match."), "{filtered}");
    app.stop().await;
}

/// Two instances on one PostgreSQL database behind one address: a login on one is good on the
/// other (the session is signed with the shared token, not kept in one process), the other
/// lists the event the first stored, and a requeue posted there (with the first's CSRF token)
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_works_on_every_instance() {
    let Some(server) = crate::postgres::server() else {
        return;
    };
    let url = crate::postgres::fresh_database(&server).await;
    let options = || Options {
        admin_token: Some(TOKEN),
        database_url: Some(url.clone()),
        ..Options::default()
    };
    let first = spawn_app_with(options()).await;
    let second = spawn_app_with(options()).await;
    let r = first
        .post_signed(crate::support::event_body("both-1", "created", 41, "hello"))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut admin = Admin::login(&base(&first), TOKEN).await;
    admin.base = base(&second);
    let (status, page) = admin.get("/admin/activity?ticket=41").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<a href=\"/admin/activity?ticket=41\">41</a>"),
        "{page}"
    );
    let r = admin.post("/admin/logout", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (status, _) = admin.get("/admin").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "logged out on this instance");
    first.stop().await;
    second.stop().await;
}
