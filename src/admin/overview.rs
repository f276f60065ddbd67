//! The overview (state of the service at a glance), the SLA clocks, and the policies as they match.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::Session;
use super::views::{page, problem, when};
use super::Console;
use crate::calendar::{describe_in_zone, Calendar};
use crate::sla::clock::{Pause, State as ClockState, Summary};

/// Clocks listed on the SLA page at most (soonest breach first).
const SLA_ROWS: usize = 500;

/// Bars of events (and updates) per hour, drawn as an SVG without script.
fn chart(hours: &[(i64, u64, u64)], now: DateTime<Utc>) -> Markup {
    let last = now.timestamp() / 3600;
    let slots: Vec<(u64, u64)> = (0..24)
        .map(|i| {
            let h = last - 23 + i;
            hours
                .iter()
                .find(|(x, _, _)| *x == h)
                .map_or((0, 0), |(_, e, u)| (*e, *u))
        })
        .collect();
    let max = slots.iter().map(|(e, _)| *e).max().unwrap_or(0).max(1);
    let bar = |n: u64| (n as f64 / max as f64 * 60.0).round();
    html! {
        svg.chart viewBox="0 0 240 64" role="img" aria-label="events and updates per hour, last 24 hours" {
            @for (i, (e, u)) in slots.iter().enumerate() {
                rect.events x=(i * 10) y=(62.0 - bar(*e)) width="8" height=(bar(*e)) { title { (e) " events" } }
                rect.updates x=(i * 10 + 2) y=(62.0 - bar(*u)) width="4" height=(bar(*u)) { title { (u) " updates" } }
            }
        }
        p.legend { "Events per hour (wide) and updates sent (narrow), the last 24 hours: "
            (slots.iter().map(|s| s.0).sum::<u64>()) " events, " (slots.iter().map(|s| s.1).sum::<u64>()) " updates." }
    }
}

/// `GET /admin`.
pub async fn overview(State(c): State<Console>, Extension(s): Extension<Session>) -> Response {
    let now = Utc::now();
    let read = async {
        Ok::<_, crate::queue::store::StoreError>((
            c.store.stats(now).await?,
            c.store.clock_counts(now).await?,
            c.store.hourly(now).await?,
            c.store.recent_actions(5).await?,
        ))
    };
    let (stats, clocks, hours, actions) = match read.await {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let set = c.policy.current();
    let body = html! {
        @if let Some(e) = c.policy.last_error() {
            section.alert {
                h2 { "The last policy reload failed" }
                p { "The previous policies stay in force until a good version loads." }
                pre { (e) }
            }
        }
        section.cards {
            div.card { h2 { "Mode" } p.big { @if c.dry_run { "Dry run" } @else { "Live" } }
                p { @if c.dry_run { "Decisions are recorded; nothing is written to Zendesk." } @else { "Updates are sent to Zendesk." } } }
            div.card { h2 { "Policies" } p.big { (set.rule_count()) " rules" } p { (set.names().join(", ")) } }
            div.card { h2 { "Queue" } p.big { (stats.depth) " waiting" }
                p { "Oldest " (stats.oldest_age_secs) " s · " a href="/admin/activity?result=dead" { (stats.dead_letters) " dead letters" } } }
            div.card { h2 { "SLA" } p.big { (clocks.breached) " breached" }
                p { a href="/admin/sla?show=at_risk" { (clocks.at_risk) " at risk" } " · " (clocks.running) " running · " (clocks.paused) " paused" } }
            @if let Some(client) = &c.client {
                @let b = client.budget();
                div.card { h2 { "Zendesk rate budget" } p.big { (b.requests) " / " (b.request_limit) }
                    p { "requests this minute · " (b.updates) " / " (b.update_limit) " ticket updates"
                        @if !b.paused.is_zero() { " · paused " (b.paused.as_secs()) " s by Zendesk" } } }
            }
        }
        section { h2 { "Last 24 hours" } (chart(&hours, now)) }
        @if !actions.is_empty() {
            section { h2 { "Latest console actions" }
                ul { @for a in &actions { li { (when(a.at)) " · " (a.action) " · " (a.detail) " · from " (a.source) } } } }
        }
    };
    page("Overview", Some(&s), body).into_response()
}

#[derive(Deserialize, Default)]
pub struct SlaQuery {
    #[serde(default)]
    show: String,
    #[serde(default)]
    policy: String,
}

/// The clock's state as the page shows it (at risk is a running clock past its warning).
fn shown_state(c: &Summary, now: DateTime<Utc>) -> &'static str {
    match c.state {
        ClockState::Active if c.due_at.is_some_and(|d| d <= now) => "breached",
        ClockState::Active if c.at_risk_at.is_some_and(|r| r <= now) => "at_risk",
        s => s.as_str(),
    }
}

/// Started → due, with the paused spans, the at-risk mark and now: how much of the span has gone.
fn timeline(c: &Summary, pauses: &[Pause], now: DateTime<Utc>) -> Markup {
    let end = c.due_at.unwrap_or(now).max(now);
    let span = (end - c.started_at).num_seconds().max(1) as f64;
    let at = |t: DateTime<Utc>| {
        ((t - c.started_at).num_seconds() as f64 / span * 200.0).clamp(0.0, 200.0)
    };
    html! {
        svg.timeline viewBox="0 0 200 12" role="img" aria-label="started, paused, due, now" {
            rect.track x="0" y="4" width="200" height="4" {}
            @for p in pauses {
                @let (a, b) = (at(p.from), at(p.to.unwrap_or(now)));
                rect.paused x=(a) y="3" width=((b - a).max(1.0)) height="6" {
                    title { "paused " (when(p.from)) @if let Some(t) = p.to { " to " (when(t)) } }
                }
            }
            @if let Some(d) = c.due_at { rect.due x=(at(d)) y="0" width="2" height="12" { title { "due " (when(d)) } } }
            @if let Some(r) = c.at_risk_at { rect.risk x=(at(r)) y="2" width="1" height="8" { title { "at risk from " (when(r)) } } }
            rect.now x=(at(now)) y="0" width="2" height="12" { title { "now" } }
        }
    }
}

/// `GET /admin/sla`: open clocks, soonest breach first.
pub async fn sla(
    State(c): State<Console>,
    Extension(s): Extension<Session>,
    Query(q): Query<SlaQuery>,
) -> Response {
    let now = Utc::now();
    let clocks = match c.store.list_clocks(None, now).await {
        Ok(v) => v,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let set = c.policy.current();
    let zone_of_policy = |name: &str| {
        set.policies()
            .iter()
            .find(|p| p.name() == name)
            .and_then(|p| p.calendar())
            .map(|cal| cal.timezone().name().to_string())
    };
    let wanted_zone = (!q.policy.is_empty())
        .then(|| zone_of_policy(&q.policy))
        .flatten();
    let matching: Vec<&Summary> = clocks
        .iter()
        .filter(|k| q.show.is_empty() || shown_state(k, now) == q.show)
        .filter(|k| wanted_zone.as_deref().is_none_or(|z| z == k.zone))
        .collect();
    let shown = &matching[..matching.len().min(SLA_ROWS)];
    // Each shown ticket's pauses, from its clocks as kept (one read per ticket).
    let mut pauses: HashMap<(u64, &'static str, u32), Vec<Pause>> = HashMap::new();
    let mut read = std::collections::HashSet::new();
    for k in shown {
        if !read.insert(k.ticket_id) {
            continue;
        }
        if let Ok(Some(tc)) = c.store.clocks(k.ticket_id).await {
            for clock in &tc.clocks {
                pauses.insert(
                    (k.ticket_id, clock.metric.as_str(), clock.instance),
                    clock.pauses.clone(),
                );
            }
        }
    }
    let body = html! {
        form.filters method="get" action="/admin/sla" {
            label { "Show " select name="show" {
                option value="" { "all open" }
                @for v in ["at_risk", "breached", "active", "paused"] { option value=(v) selected[q.show == v] { (v.replace('_', " ")) } }
            } }
            label { "Policy " select name="policy" {
                option value="" { "any" }
                @for n in set.names() { option value=(n) selected[q.policy == n] { (n) } }
            } }
            button type="submit" { "Filter" }
        }
        @if matching.len() > shown.len() { p.hint { "The " (SLA_ROWS) " soonest of " (matching.len()) " shown." } }
        @if shown.is_empty() { p { "No open clocks match." } } @else {
            table.sla {
                thead { tr { th { "Ticket" } th { "Metric" } th { "State" } th { "Target" } th { "Used" } th { "Due" } th { "Timeline" } } }
                tbody { @for k in shown {
                    tr {
                        td { a href={ "/admin/activity?ticket=" (k.ticket_id) } { (k.ticket_id) } }
                        td { (k.metric.as_str()) @if k.instance > 1 { " #" (k.instance) } }
                        td { span class={ "result " (shown_state(k, now)) } { (shown_state(k, now).replace('_', " ")) } }
                        td { (k.target.as_deref().unwrap_or("none")) }
                        td { (k.consumed_secs / 3600) " h " (k.consumed_secs % 3600 / 60) " min" }
                        td { @match k.due_at { Some(d) => (describe_in_zone(&k.zone, d)), None => "paused" } }
                        td { (timeline(k, pauses.get(&(k.ticket_id, k.metric.as_str(), k.instance)).map(Vec::as_slice).unwrap_or_default(), now)) }
                    }
                } }
            }
        }
    };
    page("SLA clocks", Some(&s), body).into_response()
}

/// A week's open hours as a grid: a row per weekday, a cell per hour.
fn week_grid(cal: &Calendar) -> Markup {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let open = |day: usize, hour: u32| {
        cal.week()[day]
            .iter()
            .any(|(a, b)| *a < (hour + 1) * 60 && *b > hour * 60)
    };
    html! {
        table.week {
            thead { tr { th {} @for h in 0..24u32 { th { (h) } } } }
            tbody { @for (d, name) in DAYS.iter().enumerate() {
                tr { th { (name) } @for h in 0..24u32 { td class=(if open(d, h) { "open" } else { "closed" }) {} } }
            } }
        }
    }
}

/// `GET /admin/policy`: each policy's rules with their matches, and its calendar.
pub async fn policy(State(c): State<Console>, Extension(s): Extension<Session>) -> Response {
    let now = Utc::now();
    let counts = match c.store.rule_counts(now).await {
        Ok(v) => v,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let set = c.policy.current();
    let body = html! {
        @for p in set.policies() {
            section {
                h2 { (p.name()) } p.hint { (p.source().display()) }
                table.rules {
                    thead { tr { th { "Rule" } th { "Last 24 h" } th { "Last 7 days" } } }
                    tbody { @for r in p.rule_names() {
                        @let (day, week) = counts.get(r).copied().unwrap_or((0, 0));
                        tr class=(if week == 0 { "never" } else { "" }) {
                            td { (r) @if week == 0 { " · never matched" } }
                            td { (day) } td { (week) }
                        }
                    } }
                }
                @if let Some(cal) = p.calendar() {
                    h3 { "Business hours (" (cal.timezone().name()) ")" }
                    (week_grid(cal))
                    @let today = now.with_timezone(&cal.timezone()).date_naive();
                    @let next = cal.next_holidays(today, 5);
                    h3 { "Next holidays" }
                    @if next.is_empty() { p { "None in the next year." } }
                    ul { @for d in next { li { (d.format("%a %e %b %Y")) } } }
                }
            }
        }
    };
    page("Policy", Some(&s), body).into_response()
}
