//! The activity list (filters, keyset pages), one event whole with its evidence, and requeues.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::{self, Session};
use super::views::{csrf, millis, page, problem, when};
use super::Console;
use crate::policy::eval::Explanation;
use crate::queue::console::{ActivityFilter, ActivityRow, AdminAction, EventDetail, MAX_BULK};
use crate::webhook::payload::TicketEvent;

/// The results a job can end with, for the filter.
const RESULTS: &[&str] = &[
    "queued",
    "updated",
    "no_change",
    "dry_run",
    "coalesced",
    "dead",
    "ticket_gone",
    "own_note",
    "clock_only",
    "timer_moot",
    "notified",
    "notify_logged",
    "not_read",
];

/// The activity filter as the query string carries it (every field text, checked here).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FilterQuery {
    #[serde(default)]
    result: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    before: String,
}

/// `2026-11-30T10:00` (a browser's datetime-local, read as UTC) or RFC 3339.
pub fn instant(s: &str) -> Option<DateTime<Utc>> {
    crate::ticket::parse_time(s).or_else(|| {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
            .ok()
            .map(|n| n.and_utc())
    })
}

impl FilterQuery {
    /// The store's filter, or what is wrong with the input.
    fn parse(&self) -> Result<ActivityFilter, String> {
        let text = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_string);
        let result = text(&self.result);
        if let Some(r) = &result {
            if !RESULTS.contains(&r.as_str()) {
                return Err(format!("result {r:?} is not one of {}", RESULTS.join(", ")));
            }
        }
        let number = |name: &str, s: &str| -> Result<Option<i64>, String> {
            text(s)
                .map(|v| {
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or(format!("{name} must be a whole number, not {v:?}"))
                })
                .transpose()
        };
        let time = |name: &str, s: &str| -> Result<Option<DateTime<Utc>>, String> {
            text(s)
                .map(|v| {
                    instant(&v).ok_or(format!(
                        "{name} must be a time like 2026-11-30T10:00 (UTC), not {v:?}"
                    ))
                })
                .transpose()
        };
        Ok(ActivityFilter {
            result,
            ticket: number("ticket", &self.ticket)?.map(|t| t as u64),
            kind: text(&self.kind),
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
            before: number("before", &self.before)?,
        })
    }

    /// The query string of this filter with `before` replaced.
    fn with_before(&self, before: Option<i64>) -> String {
        let mut pairs = vec![
            ("result", self.result.clone()),
            ("ticket", self.ticket.clone()),
            ("kind", self.kind.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
        ];
        if let Some(b) = before {
            pairs.push(("before", b.to_string()));
        }
        pairs.retain(|(_, v)| !v.is_empty());
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="result" value=(self.result);
            input type="hidden" name="ticket" value=(self.ticket);
            input type="hidden" name="kind" value=(self.kind);
            input type="hidden" name="from" value=(self.from);
            input type="hidden" name="to" value=(self.to);
        }
    }
}

fn rows(list: &[ActivityRow]) -> Markup {
    html! {
        table.activity {
            thead { tr {
                th { "Job" } th { "Received" } th { "Ticket" } th { "Event" } th { "Result" }
                th { "Priority" } th { "Tags" } th { "Latency" } th { "Tries" }
            } }
            tbody {
                @for r in list {
                    tr {
                        td { a href={ "/admin/events/" (r.id) } { (r.id) } }
                        td { (when(r.received_at)) }
                        td { a href={ "/admin/activity?ticket=" (r.ticket_id) } { (r.ticket_id) } }
                        td { (r.kind) }
                        td { span class={ "result " (r.result) } { (r.result.replace('_', " ")) } }
                        td { (r.priority.as_deref().unwrap_or("")) }
                        td { @for t in &r.tags { span.tag { (t) } " " } }
                        td { (r.latency_ms.map(millis).unwrap_or_default()) }
                        td { (r.attempts) }
                    }
                }
            }
        }
    }
}

fn filter_form(q: &FilterQuery) -> Markup {
    html! {
        form.filters method="get" action="/admin/activity" {
            label { "Result " select name="result" {
                option value="" { "any" }
                @for r in RESULTS {
                    option value=(r) selected[q.result == *r] { (r.replace('_', " ")) }
                }
            } }
            label { "Ticket " input type="text" name="ticket" inputmode="numeric" size="8" value=(q.ticket); }
            label { "Event " input type="text" name="kind" size="14" placeholder="created" value=(q.kind); }
            label { "From " input type="datetime-local" name="from" value=(q.from); }
            label { "To " input type="datetime-local" name="to" value=(q.to); }
            button type="submit" { "Filter" }
            a href={ "/admin/requeue?" (q.with_before(None)) } { "Requeue these…" }
        }
    }
}

/// `GET /admin/activity`.
pub async fn list(
    State(c): State<Console>,
    Extension(s): Extension<Session>,
    Query(q): Query<FilterQuery>,
) -> Response {
    let filter = match q.parse() {
        Ok(f) => f,
        Err(e) => {
            let body = html! { (filter_form(&q)) p.error { (e) } };
            return (StatusCode::BAD_REQUEST, page("Activity", Some(&s), body)).into_response();
        }
    };
    let list = match c.store.activity(filter).await {
        Ok(l) => l,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let next = (list.len() == crate::queue::console::PAGE)
        .then(|| list.last().map(|r| r.id))
        .flatten();
    let body = html! {
        (filter_form(&q))
        @if list.is_empty() { p { "No events match." } } @else { (rows(&list)) }
        nav.pager {
            @if !q.before.is_empty() { a href={ "/admin/activity?" (q.with_before(None)) } { "Newest" } }
            @if let Some(n) = next { a href={ "/admin/activity?" (q.with_before(Some(n))) } { "Older →" } }
        }
    };
    page("Activity", Some(&s), body).into_response()
}

/// The ticket as the rules read this event (its snapshot, the comment it carries).
fn ticket_of(ev: &TicketEvent) -> crate::ticket::Ticket {
    let mut t = ev.snapshot.clone();
    t.event = Some(ev.kind.clone());
    t.latest_comment = ev.comment.as_ref().map(|c| c.body.clone());
    t.comment_by_staff = ev.comment.as_ref().and_then(|c| c.by_staff);
    t
}

/// `text` with the spans the rules matched marked, each linked to its rule.
pub fn highlighted(text: &str, spans: &[(usize, usize, usize)]) -> Markup {
    let mut spans: Vec<_> = spans
        .iter()
        .filter(|(a, b, _)| {
            a < b && *b <= text.len() && text.is_char_boundary(*a) && text.is_char_boundary(*b)
        })
        .copied()
        .collect();
    spans.sort();
    let mut out = Vec::new();
    let mut at = 0;
    for (a, b, rule) in spans {
        if a < at {
            continue;
        }
        out.push((&text[at..a], None));
        out.push((&text[a..b], Some(rule)));
        at = b;
    }
    out.push((&text[at..], None));
    html! {
        @for (piece, rule) in out {
            @if let Some(r) = rule {
                a.evidence href={ "#rule-" (r) } { mark { (piece) } }
            } @else { (piece) }
        }
    }
}

/// The evidence: each text part with its matched spans, then each matched rule.
pub fn evidence(t: &crate::ticket::Ticket, x: &Explanation) -> Markup {
    let mut by_part: HashMap<&str, Vec<(usize, usize, usize)>> = HashMap::new();
    for (i, m) in x.matched.iter().enumerate() {
        for e in &m.evidence {
            for q in &e.matched {
                if let (Some(part), Some([a, b])) = (q.part, q.span) {
                    by_part.entry(part).or_default().push((a, b, i));
                }
            }
        }
    }
    let parts = [
        ("subject", Some(t.subject.as_str())),
        ("description", Some(t.description.as_str())),
        ("comment", t.latest_comment.as_deref()),
    ];
    html! {
        p { "Policy " strong { (x.policy) } }
        dl.texts {
            @for (name, text) in parts {
                @if let Some(text) = text.filter(|t| !t.is_empty()) {
                    dt { (name) }
                    dd { (highlighted(text, by_part.get(name).map(Vec::as_slice).unwrap_or_default())) }
                }
            }
        }
        @if x.matched.is_empty() { p { "No rule matched." } }
        ol.rules {
            @for (i, m) in x.matched.iter().enumerate() {
                li id={ "rule-" (i) } {
                    strong { (m.rule) }
                    ul { @for e in &m.evidence {
                        li { (e.condition) @for q in &e.matched { " · " q { (q.text) } @if let Some(v) = &q.vocabulary { " (@" (v) ")" } } }
                    } }
                }
            }
        }
        @if !x.near_misses.is_empty() {
            h3 { "Near misses" }
            ul { @for n in &x.near_misses { li { strong { (n.rule) } ": " (n.reason) } } }
        }
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn detail_page(c: &Console, s: &Session, d: &EventDetail) -> Markup {
    let ev: Option<TicketEvent> = serde_json::from_value(d.payload.clone()).ok();
    let explained = ev.as_ref().and_then(|ev| {
        let t = ticket_of(ev);
        let set = c.policy.current();
        set.select(&t)
            .map(|p| (p.evaluate(&t, Utc::now(), true), t))
    });
    let outcome = d.outcome.as_ref();
    html! {
        dl.facts {
            dt { "Ticket" } dd { a href={ "/admin/activity?ticket=" (d.row.ticket_id) } { (d.row.ticket_id) } }
            dt { "Event" } dd { (d.row.kind) " · key " code { (d.dedup_key) } }
            dt { "Received" } dd { (when(d.row.received_at)) }
            dt { "Result" } dd { span class={ "result " (d.row.result) } { (d.row.result.replace('_', " ")) }
                @if let Some(l) = d.row.latency_ms { " after " (millis(l)) } }
            dt { "Tries failed" } dd { (d.row.attempts) @if d.background { " · background lane" } }
        }
        form method="post" action={ "/admin/events/" (d.row.id) "/requeue" } {
            (csrf(s))
            button type="submit" { "Requeue…" }
        }
        h2 { "Decision and evidence" }
        p.hint { "The event's text as the current policy reads it." }
        @match &explained {
            Some((x, t)) => (evidence(t, x)),
            None => p { "No policy's scope covers this ticket, or the event carries no ticket." },
        }
        @if let Some(o) = outcome {
            h2 { "What was decided and sent" }
            @if let Some(u) = o.get("update") {
                p { @if d.row.result == "updated" { "Sent to Zendesk, which accepted it." } @else { "Would have been sent (dry run)." } }
                pre { (pretty(u)) }
            }
            @if let Some(dec) = o.get("decision") { details { summary { "Decision" } pre { (pretty(dec)) } } }
            details { summary { "Outcome record" } pre { (pretty(o)) } }
        }
        h2 { "Failed tries" }
        @if d.failures.is_empty() { p { "None." } }
        ol { @for (at, e) in &d.failures { li { (when(*at)) ": " (e) } } }
        h2 { "Payload" }
        pre { (pretty(&d.payload)) }
    }
}

/// `GET /admin/events/{id}`.
pub async fn detail(
    State(c): State<Console>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return problem(StatusCode::BAD_REQUEST, "an event id is a whole number");
    };
    match c.store.event_detail(id).await {
        Ok(Some(d)) => {
            page(&format!("Event {id}"), Some(&s), detail_page(&c, &s, &d)).into_response()
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, &format!("no event {id}")),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[derive(Deserialize)]
pub struct Confirm {
    #[serde(default)]
    confirm: String,
}

/// `POST /admin/events/{id}/requeue`: first a confirmation page, then (with `confirm=yes`) the requeue.
pub async fn requeue(
    State(c): State<Console>,
    Extension(s): Extension<Session>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Confirm>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return problem(StatusCode::BAD_REQUEST, "an event id is a whole number");
    };
    let d = match c.store.event_detail(id).await {
        Ok(Some(d)) => d,
        Ok(None) => return problem(StatusCode::NOT_FOUND, &format!("no event {id}")),
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    if f.confirm != "yes" {
        let what = if d.row.result == "dead" {
            "It is tried again from its first attempt."
        } else if d.row.result == "queued" {
            "It is still waiting in the queue: requeueing changes nothing."
        } else {
            "The same event is queued again as a new job; this one's record stays."
        };
        let body = html! {
            p { "Requeue event " (id) " of ticket " (d.row.ticket_id) " (" (d.row.kind) ")? " (what) }
            form method="post" action={ "/admin/events/" (id) "/requeue" } {
                (csrf(&s))
                input type="hidden" name="confirm" value="yes";
                button type="submit" { "Yes, requeue" }
                " " a href={ "/admin/events/" (id) } { "Cancel" }
            }
        };
        return page("Requeue?", Some(&s), body).into_response();
    }
    let now = Utc::now();
    let n = match c.store.requeue_jobs(vec![id], now).await {
        Ok(n) => n,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let action = AdminAction {
        at: now,
        source: auth::source(peer.map(|p| (p.0).0), &headers),
        action: "requeue".into(),
        detail: format!("event {id} of ticket {} ({} queued)", d.row.ticket_id, n),
    };
    if let Err(e) = c.store.record_action(action).await {
        return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    tracing::info!(event = id, queued = n, "console: requeued");
    Redirect::to(&format!("/admin/activity?ticket={}", d.row.ticket_id)).into_response()
}

/// `GET /admin/requeue?…filters`: how many jobs a bulk requeue would touch, and its button.
pub async fn bulk_preview(
    State(c): State<Console>,
    Extension(s): Extension<Session>,
    Query(q): Query<FilterQuery>,
) -> Response {
    let filter = match q.parse() {
        Ok(f) => f,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e),
    };
    let n = match c.store.count_matching(filter).await {
        Ok(n) => n,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let body = html! {
        p.count { (n) " events match this filter." }
        @if n > MAX_BULK { p.error { "Only the newest " (MAX_BULK) " are requeued in one go." } }
        p { "Dead letters are tried again; finished events are queued again as new jobs; waiting ones stay as they are." }
        @if n > 0 {
            form method="post" action="/admin/requeue" {
                (csrf(&s))
                (q.hidden())
                button type="submit" { "Requeue " (n.min(MAX_BULK)) " events" }
            }
        }
        p { a href={ "/admin/activity?" (q.with_before(None)) } { "Back to the list" } }
    };
    page("Bulk requeue", Some(&s), body).into_response()
}

/// `POST /admin/requeue`: requeues the jobs the filter matches.
pub async fn bulk(
    State(c): State<Console>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(q): Form<FilterQuery>,
) -> Response {
    let filter = match q.parse() {
        Ok(f) => f,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e),
    };
    let now = Utc::now();
    let done = async {
        let ids = c.store.matching_ids(filter).await?;
        let n = c.store.requeue_jobs(ids.clone(), now).await?;
        c.store
            .record_action(AdminAction {
                at: now,
                source: auth::source(peer.map(|p| (p.0).0), &headers),
                action: "bulk requeue".into(),
                detail: format!(
                    "filter {:?}: {} matched, {n} queued",
                    q.with_before(None),
                    ids.len()
                ),
            })
            .await?;
        Ok::<_, crate::queue::store::StoreError>(n)
    };
    match done.await {
        Ok(n) => {
            tracing::info!(queued = n, "console: bulk requeue");
            Redirect::to(&format!("/admin/activity?{}", q.with_before(None))).into_response()
        }
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
