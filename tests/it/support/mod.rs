//! Test helpers: spawn the real app on a random port against the fake Zendesk.

pub mod fake_zendesk;
pub mod fault_proxy;
pub mod oas;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use deskbot::config::{Auth, Config, LogFormat, RetryConfig, Secret, Verification, ZendeskConfig};
use deskbot::webhook::signature::sign;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use fake_zendesk::FakeZendesk;
pub use fault_proxy::{Fault, FaultProxy};

/// The secret test apps are configured with.
pub const SECRET: &str = "test-signing-secret";

/// The policy the end-to-end tests run.
pub const POLICY: &str = r#"
[policy]
name = "e2e"

[[rule]]
name = "urgent-subject"
when = { subject = { has_word = "urgent" } }
priority = "urgent"
add_tags = ["deskbot_escalated"]
note = "Subject says URGENT."

# Reacts to every event, so the echo of deskbot's own update reaches a matching rule: the diff,
# not the event filter, must be what stops a second update.
[[rule]]
name = "flag-urgent-subject"
on = ["*"]
when = { subject = { has_word = "urgent" } }
add_tags = ["urgent_subject"]
"#;

pub fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        deskbot::telemetry::init(LogFormat::Pretty);
    }
}

/// A running deskbot.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: PathBuf,
    /// Kept so the temporary directory lives as long as the app.
    pub _dir: tempfile::TempDir,
    pub zendesk: FakeZendesk,
    /// Between deskbot and the fake, when [`Options::fault_proxy`] is set.
    pub proxy: Option<FaultProxy>,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), deskbot::server::ServeError>>,
}

/// Settings a test may change before the app starts.
pub struct Options {
    pub secrets: Vec<&'static str>,
    pub accept_test_secret: bool,
    pub dry_run: bool,
    pub with_zendesk: bool,
    /// Policy text (default: [`POLICY`]).
    pub policy: &'static str,
    /// Zendesk requests (and updates) deskbot may send per second.
    pub requests_per_second: u32,
    /// Ticket updates deskbot may send per second.
    pub updates_per_second: u32,
    /// The window of both limits ("second" above; Zendesk's is a minute, the per-ticket one ten).
    pub rate_window: Duration,
    /// How long one Zendesk call may take.
    pub request_timeout: Duration,
    /// Webhook bodies stored in the queue before the app starts (a backlog).
    pub backlog: Vec<String>,
    /// Tickets (REST API shape) the fake Zendesk holds before the app starts.
    pub tickets: Vec<Value>,
    /// Reach the fake through a [`FaultProxy`] (in [`TestApp::proxy`]).
    pub fault_proxy: bool,
    /// `DESKBOT_REAPPLY=open`.
    pub reapply: bool,
    /// `DESKBOT_CATCH_UP_IDLE_MINS`, as a duration.
    pub catch_up_idle: Duration,
    /// `DESKBOT_ADMIN_TOKEN`.
    pub admin_token: Option<&'static str>,
    /// `DESKBOT_DATABASE_URL`: the queue in PostgreSQL instead of the SQLite file.
    pub database_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            secrets: vec![SECRET],
            accept_test_secret: false,
            dry_run: false,
            with_zendesk: true,
            policy: POLICY,
            requests_per_second: 1000,
            updates_per_second: 1000,
            rate_window: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            backlog: Vec::new(),
            tickets: Vec::new(),
            fault_proxy: false,
            reapply: false,
            catch_up_idle: Duration::from_secs(15 * 60),
            admin_token: None,
            database_url: None,
        }
    }
}

/// Builds the config of an app over `dir`, talking to `zendesk`.
pub fn config(dir: &std::path::Path, zendesk_url: &str, opts: &Options) -> Config {
    let rules = dir.join("policy.toml");
    if !rules.exists() {
        std::fs::write(&rules, opts.policy).unwrap();
    }
    Config {
        rules,
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.join("deskbot.db"),
        database_url: opts.database_url.clone().map(Secret::new),
        verification: Verification::Secrets {
            secrets: opts.secrets.iter().map(|s| Secret::new(*s)).collect(),
            accept_test_secret: opts.accept_test_secret,
        },
        signature_tolerance_secs: 300,
        zendesk: opts.with_zendesk.then(|| ZendeskConfig {
            base_url: zendesk_url.to_string(),
            auth: Some(Auth::ApiToken {
                email: "bot@example.com".into(),
                token: Secret::new("token"),
            }),
            requests_per_window: opts.requests_per_second,
            updates_per_window: opts.updates_per_second,
            rate_window: opts.rate_window,
            request_timeout: opts.request_timeout,
        }),
        dry_run: opts.dry_run,
        log_format: LogFormat::Pretty,
        retry: RetryConfig {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: 8,
        },
        notify_url: None,
        reapply: if opts.reapply {
            deskbot::config::Reapply::Open
        } else {
            deskbot::config::Reapply::Off
        },
        catch_up_idle: opts.catch_up_idle,
        admin_token: opts.admin_token.map(Secret::new),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    init_tracing();
    let zendesk = FakeZendesk::start().await;
    for t in &opts.tickets {
        zendesk.put_ticket(t.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy = if opts.fault_proxy {
        Some(FaultProxy::start(&zendesk.url).await)
    } else {
        None
    };
    let url = proxy.as_ref().map_or(&zendesk.url, |p| &p.url);
    let cfg = config(dir.path(), url, &opts);
    let db = cfg.db.clone();
    if !opts.backlog.is_empty() {
        store_backlog(&db, &opts.backlog).await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(deskbot::server::run(cfg, listener, shutdown.clone()));
    let app = TestApp {
        addr,
        db,
        _dir: dir,
        zendesk,
        proxy,
        http: reqwest::Client::new(),
        shutdown,
        handle,
    };
    app.zendesk.echo_to(&app.webhook_url(), SECRET);
    app.wait_ready().await;
    app
}

/// Queues `bodies` in the database at `db` through the library's store, as a stopped deskbot
/// would have acknowledged them.
async fn store_backlog(db: &std::path::Path, bodies: &[String]) {
    use deskbot::queue::store::{Enqueued, NewEvent, Store};
    use deskbot::webhook::payload::{parse, Parsed};
    let store = Store::open(db).unwrap();
    for body in bodies {
        let Ok(Parsed::Ticket(event)) = parse(body.as_bytes()) else {
            panic!("backlog body is not a ticket event: {body}");
        };
        let queued = store
            .enqueue(NewEvent {
                event: *event,
                invocation_key: None,
                received_at: Utc::now(),
                background: false,
            })
            .await
            .unwrap();
        assert!(
            matches!(queued, Enqueued::Queued(_)),
            "duplicate in backlog"
        );
    }
}

/// A fresh timestamp as Zendesk formats it.
pub fn now_stamp() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A `ticket.<kind>` event webhook body.
pub fn event_body(event_id: &str, kind: &str, ticket: u64, subject: &str) -> String {
    json!({
        "type": format!("zen:event-type:ticket.{kind}"),
        "account_id": 1,
        "id": event_id,
        "time": "2026-11-23T17:00:00Z",
        "zendesk_event_version": "2022-11-06",
        "subject": format!("zen:ticket:{ticket}"),
        "detail": {
            "id": ticket.to_string(), "subject": subject, "description": "see subject",
            "priority": "NORMAL", "status": "NEW", "type": "QUESTION", "tags": ["vip"],
            "created_at": "2026-11-23T17:00:00Z", "updated_at": "2026-11-23T17:00:00Z",
            "via": {"channel": "web"}
        },
        "event": {}
    })
    .to_string()
}

/// A policy that makes subjects with "urgent" urgent, and adds tag `wN` for a comment with
/// word `wN` (N in 1..=words): events that each change the ticket.
pub fn word_policy(words: u64) -> &'static str {
    let mut p = String::from(
        "[policy]\nname = \"drain\"\n\n[[rule]]\nname = \"urgent-subject\"\n\
         when = { subject = { has_word = \"urgent\" } }\npriority = \"urgent\"\n",
    );
    for w in 1..=words {
        p.push_str(&format!(
            "\n[[rule]]\nname = \"word-{w}\"\non = [\"comment_added\"]\n\
             when = {{ comment = {{ has_word = \"w{w}\" }} }}\nadd_tags = [\"w{w}\"]\n"
        ));
    }
    Box::leak(p.into_boxed_str())
}

/// A `ticket.comment_added` event body with a customer's comment `text`.
pub fn comment_body(event_id: &str, ticket: u64, text: &str) -> String {
    json!({
        "type": "zen:event-type:ticket.comment_added",
        "account_id": 1,
        "id": event_id,
        "time": "2026-11-23T17:00:00Z",
        "zendesk_event_version": "2022-11-06",
        "subject": format!("zen:ticket:{ticket}"),
        "detail": {"id": ticket.to_string(), "subject": "URGENT: stuck", "priority": "NORMAL",
                   "status": "OPEN", "tags": ["vip"]},
        "event": {"comment": {"id": "1", "body": text, "is_public": true,
                              "author": {"id": "7", "is_staff": false, "name": "Customer"}}}
    })
    .to_string()
}

/// A ticket in the REST API's shape.
pub fn api_ticket(id: u64, subject: &str) -> Value {
    json!({
        "id": id, "subject": subject, "description": "Orders have not synced since this morning.",
        "priority": "normal", "status": "new", "type": "question", "tags": ["vip"],
        "via": {"channel": "email"}, "recipient": "support@example.com",
        "requester_id": 7, "organization_id": 3, "group_id": null, "brand_id": 1,
        "custom_fields": [], "created_at": "2026-11-23T17:00:00Z", "updated_at": "2026-11-23T17:00:00Z"
    })
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhooks/zendesk", self.addr)
    }

    /// Posts `body` signed with `secret` and `timestamp`, plus extra headers.
    pub async fn post_with(
        &self,
        body: impl Into<Vec<u8>>,
        secret: Option<&str>,
        timestamp: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let body = body.into();
        let mut req = self
            .http
            .post(self.webhook_url())
            .header("content-type", "application/json");
        if let Some(secret) = secret {
            req = req
                .header(
                    "x-zendesk-webhook-signature",
                    sign(secret, timestamp, &body),
                )
                .header("x-zendesk-webhook-signature-timestamp", timestamp);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.body(body).send().await.unwrap()
    }

    /// Posts `body` signed with the app's secret, now.
    pub async fn post_signed(&self, body: impl Into<Vec<u8>>) -> reqwest::Response {
        self.post_with(body, Some(SECRET), &now_stamp(), &[]).await
    }

    /// Rows in the queue table.
    pub fn stored_events(&self) -> i64 {
        count(&self.db, "SELECT COUNT(*) FROM events")
    }

    /// Rows in a given state.
    pub fn events_in_state(&self, state: &str) -> i64 {
        count(
            &self.db,
            &format!("SELECT COUNT(*) FROM events WHERE state = '{state}'"),
        )
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until /healthz answers, so tests never race the app's start-up.
    pub async fn wait_ready(&self) {
        for _ in 0..500 {
            let ok = self
                .http
                .get(format!("http://{}/healthz", self.addr))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("app did not become ready within 5 s");
    }

    /// Stops the app and waits for it to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("app stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

/// The `deskbot` binary, run from the crate root with none of the developer's DESKBOT_*, ZENDESK_*
/// or RUST_LOG variables, so a test sees exactly the settings it gives.
pub fn deskbot_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_deskbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DESKBOT_") || k.starts_with("ZENDESK_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// A child process that is killed when dropped, so a failing test leaves no server running.
pub struct Reaped(pub std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Reaped {
    /// Sends SIGTERM, as an operator or Fly.io stopping the machine would, and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        self.0.wait().unwrap()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A local port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until a server accepts connections on `port` (at most 10 s).
pub async fn wait_listening(port: u16) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "deskbot did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Posts `body` to `url` signed with [`SECRET`] now, as Zendesk delivers a webhook.
pub async fn post_signed_to(
    http: &reqwest::Client,
    url: &str,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    let ts = now_stamp();
    http.post(url)
        .header(
            "x-zendesk-webhook-signature",
            sign(SECRET, &ts, body.as_bytes()),
        )
        .header("x-zendesk-webhook-signature-timestamp", ts)
        .body(body)
        .send()
        .await
}

/// The most of `times` (in order) that fall within `window` of one of them, and which one starts
/// that window.
pub fn busiest_window(times: &[std::time::Instant], window: Duration) -> (usize, usize) {
    (0..times.len())
        .map(|i| {
            let n = times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < window)
                .count();
            (n, i)
        })
        .max()
        .unwrap_or((0, 0))
}

/// The ticket id in an API path such as `/api/v2/tickets/12.json?include=users` (0 if none).
pub fn ticket_of(path: &str) -> u64 {
    path.trim_start_matches("/api/v2/tickets/")
        .split(['.', '?'])
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or(0)
}

pub fn count(db: &std::path::Path, sql: &str) -> i64 {
    one(db, sql)
}

/// The first column of the first row `sql` returns, as text.
pub fn text_of(db: &std::path::Path, sql: &str) -> String {
    one(db, sql)
}

fn one<T: rusqlite::types::FromSql>(db: &std::path::Path, sql: &str) -> T {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Polls `check` until it returns true, or fails after `secs` seconds.
pub async fn eventually<F: FnMut() -> bool>(secs: u64, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {secs} s waiting for: {what}");
}
