//! An in-process fake of the Zendesk Support API, stateful enough to test deskbot end to end.
//!
//! It keeps tickets, users and organizations; applies PUTs the way Zendesk does (tags replaced
//! wholesale, safe_update checked against updated_at → 409); records every request; answers
//! scripted failures; and, when told where deskbot is, fires back the signed `ticket.*_changed`
//! and `comment_added` events that deskbot's own update causes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub authorized: bool,
    pub at: Instant,
    /// Status the fake answered.
    pub status: u16,
}

/// A scripted answer for the next matching requests.
#[derive(Debug, Clone)]
struct Scripted {
    method: Method,
    status: u16,
    retry_after: Option<String>,
    remaining: usize,
    /// Apply the request first, then answer with this status (a response lost after the write).
    apply_first: bool,
    /// Hold the response this long before answering.
    hang: Option<Duration>,
}

/// Where to send the events deskbot's updates cause.
#[derive(Debug, Clone)]
struct Echo {
    url: String,
    secret: String,
}

#[derive(Default)]
struct FakeState {
    tickets: HashMap<u64, Value>,
    users: HashMap<u64, Value>,
    orgs: HashMap<u64, Value>,
    /// Comments per ticket, oldest first (API shape: author_id, public, created_at, body).
    comments: HashMap<u64, Vec<Value>>,
    /// The next Search Export request with a cursor answers 422, as an expired cursor does.
    expire_search_cursor: bool,
    /// Audits per ticket, oldest first (API shape: created_at, author_id, events).
    audits: HashMap<u64, Vec<Value>>,
    requests: Vec<Recorded>,
    script: VecDeque<Scripted>,
    echo: Option<Echo>,
    /// Before the next PUT is applied, an agent adds this tag (the stamp then no longer matches).
    agent_edit_before_put: Option<String>,
    /// Every applied PUT's answer is held this long (Zendesk has the change; deskbot waits).
    put_delay: Option<Duration>,
    event_seq: u64,
    /// Admin API state.
    admin: Admin,
}

/// What the fake holds for the admin API (webhooks, triggers, fields, the token's user).
#[derive(Default)]
pub struct Admin {
    pub webhooks: Vec<Value>,
    pub triggers: Vec<Value>,
    /// `None`: the account has no trigger categories (404).
    pub categories: Option<Vec<Value>>,
    pub ticket_fields: HashMap<u64, Value>,
    pub organization_fields: Vec<Value>,
    pub me: Value,
    next_id: u64,
}

/// Handle to a running fake.
#[derive(Clone)]
pub struct FakeZendesk {
    pub url: String,
    state: Arc<Mutex<FakeState>>,
}

impl FakeZendesk {
    /// Starts the fake on a random local port.
    pub async fn start() -> FakeZendesk {
        let state = Arc::new(Mutex::new(FakeState::default()));
        state.lock().unwrap().admin = Admin {
            categories: Some(Vec::new()),
            me: json!({"user": {"id": 99, "email": "admin@example.com", "role": "admin"}}),
            ..Admin::default()
        };
        let app = Router::new()
            .route(
                "/api/v2/tickets/{file}",
                get(show_ticket).put(update_ticket),
            )
            .route("/api/v2/tickets/{id}/comments.json", get(list_comments))
            .route("/api/v2/tickets/{id}/audits.json", get(list_audits))
            .route("/api/v2/search/export.json", get(search_export))
            .route("/api/v2/search/count.json", get(search_count))
            .route("/api/v2/users/show_many.json", get(show_many_users))
            .route("/api/v2/organizations/show_many.json", get(show_many_orgs))
            .route(
                "/api/v2/incremental/tickets/cursor.json",
                get(export_tickets),
            )
            .route("/api/v2/organizations/{file}", get(show_org))
            .route("/hooks/chat", axum::routing::post(chat))
            .route("/api/v2/users/me", get(admin_api))
            .route("/api/v2/webhooks", get(admin_api).post(admin_api))
            .route("/api/v2/webhooks/{id}", put(admin_api))
            .route("/api/v2/webhooks/{id}/signing_secret", get(admin_api))
            .route("/api/v2/triggers", get(admin_api).post(admin_api))
            .route("/api/v2/triggers/{id}", put(admin_api))
            .route("/api/v2/trigger_categories", get(admin_api).post(admin_api))
            .route("/api/v2/ticket_fields/{file}", get(admin_api))
            .route("/api/v2/organization_fields", get(admin_api))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeZendesk {
            url: format!("http://{addr}"),
            state,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// Adds a ticket (REST API shape; `id` required).
    pub fn put_ticket(&self, ticket: Value) {
        let id = ticket["id"].as_u64().unwrap();
        self.lock().tickets.insert(id, ticket);
    }

    pub fn put_user(&self, user: Value) {
        let id = user["id"].as_u64().unwrap();
        self.lock().users.insert(id, user);
    }

    /// Adds a comment to a ticket without any event reaching deskbot.
    pub fn put_comment(&self, ticket: u64, comment: Value) {
        self.lock()
            .comments
            .entry(ticket)
            .or_default()
            .push(comment);
    }

    /// The next Search Export page asked for by cursor fails as an expired cursor does (422).
    pub fn expire_next_search_cursor(&self) {
        self.lock().expire_search_cursor = true;
    }

    /// Adds an audit to a ticket's history (what `/audits.json` lists).
    pub fn put_audit(&self, ticket: u64, audit: Value) {
        self.lock().audits.entry(ticket).or_default().push(audit);
    }

    /// Removes a ticket (later reads answer 404).
    pub fn delete_ticket(&self, id: u64) {
        self.lock().tickets.remove(&id);
    }

    pub fn put_org(&self, org: Value) {
        let id = org["id"].as_u64().unwrap();
        self.lock().orgs.insert(id, org);
    }

    /// The ticket as the fake holds it now.
    pub fn ticket(&self, id: u64) -> Value {
        self.lock().tickets[&id].clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Bodies of PUTs that Zendesk applied (status 200).
    pub fn applied_puts(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == Method::PUT && r.status == 200)
            .filter_map(|r| r.body)
            .collect()
    }

    /// Bodies of every PUT received, whatever the answer.
    pub fn all_puts(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == Method::PUT)
            .collect()
    }

    /// The next `n` requests with `method` get `status` (with `Retry-After` if given).
    pub fn fail_next(&self, method: Method, n: usize, status: u16, retry_after: Option<&str>) {
        self.lock().script.push_back(Scripted {
            method,
            status,
            retry_after: retry_after.map(str::to_string),
            remaining: n,
            apply_first: false,
            hang: None,
        });
    }

    /// The next PUT is applied, then its answer is held for `hang` (deskbot never sees it).
    pub fn apply_then_hang(&self, hang: Duration) {
        self.lock().script.push_back(Scripted {
            method: Method::PUT,
            status: 200,
            retry_after: None,
            remaining: 1,
            apply_first: true,
            hang: Some(hang),
        });
    }

    /// Before the next PUT, an agent adds `tag` (so a safe update computed earlier conflicts).
    pub fn agent_edits_before_next_put(&self, tag: &str) {
        self.lock().agent_edit_before_put = Some(tag.to_string());
    }

    /// From now on, every applied update is answered only after `delay`.
    pub fn slow_puts(&self, delay: Duration) {
        self.lock().put_delay = Some(delay);
    }

    /// Changes the admin API state.
    pub fn admin<R>(&self, f: impl FnOnce(&mut Admin) -> R) -> R {
        f(&mut self.lock().admin)
    }

    /// Requests that changed something (POST/PUT), as (method, path).
    pub fn writes(&self) -> Vec<(Method, String)> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == Method::POST || r.method == Method::PUT)
            .map(|r| (r.method, r.path))
            .collect()
    }

    /// Fire the events caused by each applied update back to deskbot, signed with `secret`.
    pub fn echo_to(&self, url: &str, secret: &str) {
        self.lock().echo = Some(Echo {
            url: url.to_string(),
            secret: secret.to_string(),
        });
    }
}

fn ticket_id(file: &str) -> Option<u64> {
    file.strip_suffix(".json").unwrap_or(file).parse().ok()
}

fn scripted(st: &mut FakeState, method: &Method) -> Option<Scripted> {
    let front = st.script.front_mut()?;
    if front.method != *method {
        return None;
    }
    front.remaining -= 1;
    let s = front.clone();
    if front.remaining == 0 {
        st.script.pop_front();
    }
    Some(s)
}

fn record(
    st: &mut FakeState,
    method: Method,
    path: String,
    headers: &HeaderMap,
    body: Option<Value>,
    status: u16,
) {
    st.requests.push(Recorded {
        method,
        path,
        body,
        authorized: headers.get("authorization").is_some(),
        at: Instant::now(),
        status,
    });
}

/// A GET's scripted failure, or a 404 when ticket `id` does not exist; each recorded.
fn refuse_get(
    st: &mut FakeState,
    path: &str,
    headers: &HeaderMap,
    id: Option<u64>,
) -> Option<Response> {
    if let Some(s) = scripted(st, &Method::GET) {
        record(st, Method::GET, path.to_string(), headers, None, s.status);
        return Some(error_response(&s));
    }
    if id.is_some_and(|id| st.tickets.contains_key(&id)) {
        return None;
    }
    record(st, Method::GET, path.to_string(), headers, None, 404);
    Some(
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "RecordNotFound"})),
        )
            .into_response(),
    )
}

fn error_response(s: &Scripted) -> Response {
    let mut r = (
        StatusCode::from_u16(s.status).unwrap(),
        axum::Json(json!({"error": "scripted", "description": "scripted failure"})),
    )
        .into_response();
    if let Some(ra) = &s.retry_after {
        r.headers_mut().insert("retry-after", ra.parse().unwrap());
    }
    r
}

async fn show_ticket(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/v2/tickets/{file}");
    let mut st = state.lock().unwrap();
    let id = ticket_id(&file);
    if let Some(refused) = refuse_get(&mut st, &path, &headers, id) {
        return refused;
    }
    let ticket = id
        .and_then(|id| st.tickets.get(&id).cloned())
        .expect("refuse_get answered for a missing ticket");
    let users: Vec<Value> = ticket["requester_id"]
        .as_u64()
        .and_then(|rid| st.users.get(&rid).cloned())
        .into_iter()
        .collect();
    record(&mut st, Method::GET, path, &headers, None, 200);
    axum::Json(json!({ "ticket": ticket, "users": users })).into_response()
}

/// A chat incoming webhook (Slack's shape): records the message.
async fn chat(
    State(state): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut st = state.lock().unwrap();
    if let Some(s) = scripted(&mut st, &Method::POST) {
        record(
            &mut st,
            Method::POST,
            "/hooks/chat".into(),
            &headers,
            parsed,
            s.status,
        );
        return error_response(&s);
    }
    record(
        &mut st,
        Method::POST,
        "/hooks/chat".into(),
        &headers,
        parsed,
        200,
    );
    "ok".into_response()
}

/// Comments newest first (deskbot asks `sort_order=desc`), with their authors side-loaded.
async fn list_comments(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(id): Path<u64>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.to_string();
    let mut st = state.lock().unwrap();
    if let Some(refused) = refuse_get(&mut st, &path, &headers, Some(id)) {
        return refused;
    }
    let mut comments = st.comments.get(&id).cloned().unwrap_or_default();
    if uri.query().is_some_and(|q| q.contains("sort_order=desc")) {
        comments.reverse();
    }
    let users: Vec<Value> = comments
        .iter()
        .filter_map(|c| c["author_id"].as_u64())
        .filter_map(|a| st.users.get(&a).cloned())
        .collect();
    record(&mut st, Method::GET, path, &headers, None, 200);
    axum::Json(json!({ "comments": comments, "users": users })).into_response()
}

/// A ticket's audits, oldest first, cursor-paginated (`page[size]` ≤ 100, `page[after]`), with
/// the authors side-loaded on `include=users`.
async fn list_audits(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(id): Path<u64>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let q = query_of(&uri);
    let path = format!("/api/v2/tickets/{id}/audits.json");
    let mut st = state.lock().unwrap();
    if let Some(refused) = refuse_get(&mut st, &path, &headers, Some(id)) {
        return refused;
    }
    let size: usize = q
        .get("page[size]")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100)
        .min(100);
    let start: usize = q
        .get("page[after]")
        .and_then(|c| c.strip_prefix("a "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let all = st.audits.get(&id).cloned().unwrap_or_default();
    let page: Vec<Value> = all.iter().skip(start).take(size).cloned().collect();
    let next = start + page.len();
    let users: Vec<Value> = if q.get("include").is_some_and(|i| i.contains("users")) {
        page.iter()
            .filter_map(|a| a["author_id"].as_u64())
            .filter_map(|a| st.users.get(&a).cloned())
            .collect()
    } else {
        Vec::new()
    };
    record(&mut st, Method::GET, path, &headers, None, 200);
    let more = next < all.len();
    axum::Json(json!({
        "audits": page, "users": users,
        "meta": {"has_more": more, "after_cursor": more.then(|| format!("a {next}"))}
    }))
    .into_response()
}

/// Whether a ticket matches a search: the few terms the tests use (`status<solved`,
/// `status:X`, `tags:X`, `created>T`, `created<T`, and words of the subject), all required.
fn matches_search(t: &Value, query: &str) -> bool {
    let created = t["created_at"]
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok());
    let at = |s: &str| s.parse::<DateTime<Utc>>().ok();
    query.split_whitespace().all(|term| {
        if term == "status<solved" {
            return matches!(
                t["status"].as_str(),
                Some("new" | "open" | "pending" | "hold")
            );
        }
        if let Some(v) = term.strip_prefix("status:") {
            return t["status"] == v;
        }
        if let Some(v) = term.strip_prefix("tags:") {
            return t["tags"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == v));
        }
        if let Some(v) = term.strip_prefix("created>") {
            return created.zip(at(v)).is_some_and(|(c, b)| c > b);
        }
        if let Some(v) = term.strip_prefix("created<") {
            return created.zip(at(v)).is_some_and(|(c, b)| c < b);
        }
        if let Some(v) = term.strip_prefix("updated>") {
            let updated = t["updated_at"]
                .as_str()
                .and_then(|s| s.parse::<DateTime<Utc>>().ok());
            return updated.zip(at(v)).is_some_and(|(u, b)| u > b);
        }
        if term == "type:ticket" {
            return true;
        }
        t["subject"]
            .as_str()
            .is_some_and(|s| s.to_lowercase().contains(&term.to_lowercase()))
    })
}

/// Search Export for tickets: oldest created first, cursor-paginated (`page[size]` ≤ 1000), no
/// side-loads (the reading of Zendesk's docs that costs deskbot the most).
async fn search_export(
    State(state): State<Arc<Mutex<FakeState>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let q = query_of(&uri);
    let path = uri.to_string();
    let mut st = state.lock().unwrap();
    if let Some(s) = scripted(&mut st, &Method::GET) {
        record(&mut st, Method::GET, path, &headers, None, s.status);
        return error_response(&s);
    }
    let query = q.get("query").cloned().unwrap_or_default();
    if q.get("filter[type]").map(String::as_str) != Some("ticket") || query.contains("type:") {
        record(&mut st, Method::GET, path, &headers, None, 400);
        return (
            StatusCode::BAD_REQUEST,
            "filter[type] required; no type: in the query",
        )
            .into_response();
    }
    let size: usize = q
        .get("page[size]")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100)
        .min(1000);
    if st.expire_search_cursor && q.contains_key("page[after]") {
        st.expire_search_cursor = false;
        record(&mut st, Method::GET, path, &headers, None, 422);
        return (StatusCode::UNPROCESSABLE_ENTITY, "cursor expired").into_response();
    }
    let start: usize = match q.get("page[after]") {
        None => 0,
        Some(c) => match c.strip_prefix("q ").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => {
                record(&mut st, Method::GET, path, &headers, None, 422);
                return (StatusCode::UNPROCESSABLE_ENTITY, "invalid cursor").into_response();
            }
        },
    };
    let mut all: Vec<Value> = st
        .tickets
        .values()
        .filter(|t| matches_search(t, &query))
        .cloned()
        .collect();
    all.sort_by_key(|t| {
        (
            t["created_at"].as_str().unwrap_or("").to_string(),
            t["id"].as_u64().unwrap_or(0),
        )
    });
    let page: Vec<Value> = all.iter().skip(start).take(size).cloned().collect();
    let next = start + page.len();
    let more = next < all.len();
    record(&mut st, Method::GET, path, &headers, None, 200);
    axum::Json(json!({
        "results": page, "facets": null,
        "links": {"prev": null, "next": null},
        "meta": {"has_more": more, "after_cursor": more.then(|| format!("q {next}")), "before_cursor": null}
    }))
    .into_response()
}

/// How many tickets a search finds.
async fn search_count(
    State(state): State<Arc<Mutex<FakeState>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let query = query_of(&uri).get("query").cloned().unwrap_or_default();
    let mut st = state.lock().unwrap();
    let n = st
        .tickets
        .values()
        .filter(|t| matches_search(t, &query))
        .count();
    record(&mut st, Method::GET, uri.to_string(), &headers, None, 200);
    axum::Json(json!({ "count": n })).into_response()
}

fn ids_of(uri: &Uri) -> Vec<u64> {
    query_of(uri)
        .get("ids")
        .map(|ids| ids.split(',').filter_map(|i| i.parse().ok()).collect())
        .unwrap_or_default()
}

async fn show_many_users(
    State(state): State<Arc<Mutex<FakeState>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    let users: Vec<Value> = ids_of(&uri)
        .iter()
        .filter_map(|id| st.users.get(id).cloned())
        .collect();
    record(
        &mut st,
        Method::GET,
        "/api/v2/users/show_many.json".into(),
        &headers,
        None,
        200,
    );
    axum::Json(json!({ "users": users })).into_response()
}

async fn show_many_orgs(
    State(state): State<Arc<Mutex<FakeState>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    let orgs: Vec<Value> = ids_of(&uri)
        .iter()
        .filter_map(|id| st.orgs.get(id).cloned())
        .collect();
    record(
        &mut st,
        Method::GET,
        "/api/v2/organizations/show_many.json".into(),
        &headers,
        None,
        200,
    );
    axum::Json(json!({ "organizations": orgs })).into_response()
}

/// The query string's pairs, percent-decoded (`+` is a space, as forms encode it).
fn query_of(uri: &axum::http::Uri) -> HashMap<String, String> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Incremental Ticket Export, cursor-based: tickets whose `updated_at` is at or after
/// `start_time`, oldest change first, `per_page` at a time, users and organizations side-loaded.
/// The cursor is opaque to the client (here: the position, base64-looking on purpose).
async fn export_tickets(
    State(state): State<Arc<Mutex<FakeState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let q = query_of(&uri);
    let path = "/api/v2/incremental/tickets/cursor.json".to_string();
    let mut st = state.lock().unwrap();
    if let Some(s) = scripted(&mut st, &Method::GET) {
        record(&mut st, Method::GET, path, &headers, None, s.status);
        return error_response(&s);
    }
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1000);
    let start: usize = match (q.get("cursor"), q.get("start_time")) {
        (Some(c), _) => match c.strip_prefix("pos ").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => {
                record(&mut st, Method::GET, path, &headers, None, 422);
                return (StatusCode::UNPROCESSABLE_ENTITY, "bad cursor").into_response();
            }
        },
        (None, Some(_)) => 0,
        (None, None) => {
            record(&mut st, Method::GET, path, &headers, None, 400);
            return (StatusCode::BAD_REQUEST, "start_time or cursor required").into_response();
        }
    };
    let since = q
        .get("start_time")
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(0);
    let stamp = |t: &Value| {
        t["updated_at"]
            .as_str()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok())
            .map_or(0, |d| d.timestamp())
    };
    // The cursor carries the start time in real Zendesk; here the whole list is re-sorted.
    let mut all: Vec<Value> = st.tickets.values().cloned().collect();
    all.sort_by_key(|t| (stamp(t), t["id"].as_u64().unwrap_or(0)));
    let all: Vec<Value> = if q.contains_key("cursor") {
        all
    } else {
        all.into_iter().filter(|t| stamp(t) >= since).collect()
    };
    let page: Vec<Value> = all.iter().skip(start).take(per_page).cloned().collect();
    let next = start + page.len();
    let users: Vec<Value> = page
        .iter()
        .filter_map(|t| t["requester_id"].as_u64())
        .filter_map(|id| st.users.get(&id).cloned())
        .collect();
    let orgs: Vec<Value> = page
        .iter()
        .filter_map(|t| t["organization_id"].as_u64())
        .filter_map(|id| st.orgs.get(&id).cloned())
        .collect();
    record(&mut st, Method::GET, path, &headers, None, 200);
    axum::Json(json!({
        "tickets": page, "users": users, "organizations": orgs,
        "after_cursor": format!("pos {next}"), "end_of_stream": next >= all.len()
    }))
    .into_response()
}

async fn show_org(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/v2/organizations/{file}");
    let mut st = state.lock().unwrap();
    match ticket_id(&file).and_then(|id| st.orgs.get(&id).cloned()) {
        Some(org) => {
            record(&mut st, Method::GET, path, &headers, None, 200);
            axum::Json(json!({ "organization": org })).into_response()
        }
        None => {
            record(&mut st, Method::GET, path, &headers, None, 404);
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

fn bump(stamp: &str) -> String {
    let t: DateTime<Utc> = stamp.parse().unwrap_or_else(|_| Utc::now());
    (t + chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn update_ticket(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(file): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/v2/tickets/{file}");
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let (response, events, echo, hang) = {
        let mut st = state.lock().unwrap();
        let script = scripted(&mut st, &Method::PUT);
        if let Some(s) = script.as_ref().filter(|s| !s.apply_first) {
            record(&mut st, Method::PUT, path, &headers, parsed, s.status);
            return error_response(s);
        }
        let Some(id) = ticket_id(&file).filter(|id| st.tickets.contains_key(id)) else {
            record(&mut st, Method::PUT, path, &headers, parsed, 404);
            return StatusCode::NOT_FOUND.into_response();
        };
        let Some(update) = parsed.as_ref().and_then(|b| b.get("ticket")).cloned() else {
            record(&mut st, Method::PUT, path, &headers, parsed, 400);
            return StatusCode::BAD_REQUEST.into_response();
        };
        if let Some(tag) = st.agent_edit_before_put.take() {
            let t = st.tickets.get_mut(&id).unwrap();
            t["tags"].as_array_mut().unwrap().push(json!(tag));
            let stamp = bump(t["updated_at"].as_str().unwrap_or(""));
            t["updated_at"] = json!(stamp);
        }
        let current = st.tickets[&id].clone();
        if update.get("safe_update") == Some(&json!(true))
            && update.get("updated_stamp") != current.get("updated_at")
        {
            record(&mut st, Method::PUT, path, &headers, parsed, 409);
            return (
                StatusCode::CONFLICT,
                axum::Json(json!({"error": "UpdateConflict", "description": "Safe Update prevented the update due to outdated ticket data."})),
            )
                .into_response();
        }
        let mut t = current.clone();
        let mut events = Vec::new();
        if let Some(p) = update
            .get("priority")
            .filter(|p| *p != &current["priority"])
        {
            events.push(("priority_changed", json!({"current": p.as_str().unwrap_or("").to_uppercase(), "previous": current["priority"].as_str().unwrap_or("").to_uppercase()})));
            t["priority"] = p.clone();
        }
        if let Some(tags) = update.get("tags").filter(|tags| *tags != &current["tags"]) {
            events.push((
                "tags_changed",
                json!({"current": tags, "previous": current["tags"]}),
            ));
            t["tags"] = tags.clone();
        }
        if let Some(fields) = update.get("custom_fields").and_then(Value::as_array) {
            let mut merged: Vec<Value> = t["custom_fields"].as_array().cloned().unwrap_or_default();
            for f in fields {
                merged.retain(|m| m["id"] != f["id"]);
                merged.push(f.clone());
                events.push((
                    "custom_field_changed",
                    json!({"current": f["value"], "field": {"id": f["id"].to_string()}}),
                ));
            }
            t["custom_fields"] = json!(merged);
        }
        if let Some(g) = update.get("group_id") {
            t["group_id"] = g.clone();
        }
        if let Some(c) = update.get("comment") {
            events.push(("comment_added", json!({"comment": {"id": "1", "body": c["body"], "is_public": c["public"], "author": {"id": "99", "is_staff": true, "name": "deskbot"}}})));
        }
        t["updated_at"] = json!(bump(current["updated_at"].as_str().unwrap_or("")));
        st.tickets.insert(id, t.clone());
        record(&mut st, Method::PUT, path, &headers, parsed, 200);
        st.event_seq += 1;
        let seq = st.event_seq;
        let events: Vec<String> = events
            .into_iter()
            .enumerate()
            .map(|(i, (kind, event))| {
                json!({
                    "type": format!("zen:event-type:ticket.{kind}"),
                    "id": format!("echo-{id}-{seq}-{i}"),
                    "subject": format!("zen:ticket:{id}"),
                    "time": Utc::now().to_rfc3339(),
                    "account_id": 1,
                    "zendesk_event_version": "2022-11-06",
                    "detail": {"id": id.to_string(), "subject": t["subject"], "tags": t["tags"],
                               "priority": t["priority"].as_str().map(str::to_uppercase), "updated_at": t["updated_at"]},
                    "event": event,
                })
                .to_string()
            })
            .collect();
        let hang = script.and_then(|s| s.hang).or(st.put_delay);
        (
            axum::Json(json!({ "ticket": t, "audit": {} })).into_response(),
            events,
            st.echo.clone(),
            hang,
        )
    };
    if let Some(echo) = echo {
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for body in events {
                let ts = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let sig = deskbot::webhook::signature::sign(&echo.secret, &ts, body.as_bytes());
                let _ = client
                    .post(&echo.url)
                    .header("x-zendesk-webhook-signature", sig)
                    .header("x-zendesk-webhook-signature-timestamp", ts)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
            }
        });
    }
    if let Some(h) = hang {
        tokio::time::sleep(h).await;
    }
    response
}

/// The admin endpoints register and doctor use, with Zendesk's shapes and its HTTPS rule.
async fn admin_api(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut st = state.lock().unwrap();
    if let Some(s) = scripted(&mut st, &method) {
        record(&mut st, method, path, &headers, parsed, s.status);
        return error_response(&s);
    }
    let a = &mut st.admin;
    let segments: Vec<&str> = path.trim_start_matches("/api/v2/").split('/').collect();
    let body = parsed.clone().unwrap_or_default();
    let (status, answer) = match (method.clone(), segments.as_slice()) {
        (Method::GET, ["users", "me"]) => (200, a.me.clone()),
        (Method::GET, ["webhooks"]) => {
            let filter = uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("filter[name_contains]="))
                    .map(|f| f.replace("%3A", ":").replace("%20", " "))
            });
            let list: Vec<Value> = a
                .webhooks
                .iter()
                .filter(|w| {
                    filter
                        .as_ref()
                        .is_none_or(|f| w["name"].as_str().unwrap_or("").contains(f.as_str()))
                })
                .cloned()
                .collect();
            (200, json!({ "webhooks": list }))
        }
        (Method::POST, ["webhooks"]) => {
            let mut w = body["webhook"].clone();
            if !w["endpoint"].as_str().unwrap_or("").starts_with("https://") {
                (
                    422,
                    json!({"errors": [{"code": "InvalidValue", "title": "Endpoint must use HTTPS"}]}),
                )
            } else {
                a.next_id += 1;
                w["id"] = json!(format!("01WEBHOOK{:05}", a.next_id));
                a.webhooks.push(w.clone());
                (201, json!({ "webhook": w }))
            }
        }
        (Method::PUT, ["webhooks", id]) => match a.webhooks.iter_mut().find(|w| w["id"] == *id) {
            Some(w) => {
                for (k, v) in body["webhook"].as_object().cloned().unwrap_or_default() {
                    w[k] = v;
                }
                (204, Value::Null)
            }
            None => (404, json!({"error": "RecordNotFound"})),
        },
        (Method::GET, ["webhooks", id, "signing_secret"]) => {
            if a.webhooks.iter().any(|w| w["id"] == *id) {
                (
                    200,
                    json!({"signing_secret": {"algorithm": "SHA256", "secret": format!("secret-of-{id}")}}),
                )
            } else {
                (404, json!({"error": "RecordNotFound"}))
            }
        }
        (Method::GET, ["triggers"]) => (200, json!({ "triggers": a.triggers })),
        (Method::POST, ["triggers"]) => {
            let mut t = body["trigger"].clone();
            // Accounts with trigger categories require one on every trigger.
            if a.categories.is_some() && t["category_id"].is_null() {
                (
                    422,
                    json!({"error": "RecordInvalid", "description": "category_id is required"}),
                )
            } else {
                a.next_id += 1;
                t["id"] = json!(a.next_id);
                a.triggers.push(t.clone());
                (201, json!({ "trigger": t }))
            }
        }
        (Method::PUT, ["triggers", id]) => {
            match a
                .triggers
                .iter_mut()
                .find(|t| id.parse::<u64>().is_ok_and(|n| t["id"] == n))
            {
                Some(t) => {
                    for (k, v) in body["trigger"].as_object().cloned().unwrap_or_default() {
                        t[k] = v;
                    }
                    (200, json!({ "trigger": t.clone() }))
                }
                None => (404, json!({"error": "RecordNotFound"})),
            }
        }
        (Method::GET, ["trigger_categories"]) => match &a.categories {
            Some(c) => (200, json!({ "trigger_categories": c })),
            None => (404, json!({"error": "NotFound"})),
        },
        (Method::POST, ["trigger_categories"]) => {
            a.next_id += 1;
            let mut c = body["trigger_category"].clone();
            c["id"] = json!(a.next_id.to_string());
            a.categories.get_or_insert_with(Vec::new).push(c.clone());
            (200, json!({ "trigger_category": c }))
        }
        (Method::GET, ["ticket_fields", file]) => {
            match ticket_id(file).and_then(|id| a.ticket_fields.get(&id)) {
                Some(f) => (200, json!({ "ticket_field": f })),
                None => (404, json!({"error": "RecordNotFound"})),
            }
        }
        (Method::GET, ["organization_fields"]) => {
            (200, json!({ "organization_fields": a.organization_fields }))
        }
        _ => (404, json!({"error": "NotFound"})),
    };
    record(&mut st, method, path, &headers, parsed, status);
    let code = StatusCode::from_u16(status).unwrap();
    let mut r = if answer.is_null() {
        code.into_response()
    } else {
        (code, axum::Json(answer)).into_response()
    };
    let now = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    r.headers_mut().insert("date", now.parse().unwrap());
    r
}
