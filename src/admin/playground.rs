//! The playground: a ticket typed in the page, decided by a policy as loaded or by an edited copy
//! of it, with the evidence, the copy's `[[test]]` blocks, and what the copy decides differently
//! from the policy in force. Nothing is saved.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;

use super::activity::{evidence, instant};
use super::auth::Session;
use super::views::{csrf, page, when};
use super::Console;
use crate::policy::{Decision, Policy};
use crate::sla::PlanSource;
use crate::ticket::{EventKind, Organization, Ticket};

/// What the form sends.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Input {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    policy: String,
    /// An edited copy of the policy file; empty: the policy as loaded.
    #[serde(default)]
    policy_text: String,
}

/// The ticket the form describes, for `policy` (which says where the plan is read from).
fn ticket(i: &Input, policy: &Policy) -> Result<Ticket, String> {
    let created = match i.created_at.trim() {
        "" => Utc::now(),
        t => instant(t).ok_or(format!(
            "created at must be a time like 2026-11-30T09:00 (UTC), not {t:?}"
        ))?,
    };
    let mut t = Ticket {
        id: 1,
        subject: i.subject.clone(),
        description: i.description.clone(),
        created_at: Some(created),
        status: Some("new".into()),
        event: Some(EventKind::new(EventKind::CREATED)),
        ..Ticket::default()
    };
    let plan = i.plan.trim();
    match (policy.plan_source(), plan.is_empty()) {
        (_, true) => {}
        (Some(PlanSource::OrganizationField(key)), false) => {
            let mut fields = serde_json::Map::new();
            fields.insert(key.clone(), plan.into());
            t.organization = Some(Organization {
                id: 1,
                name: Some("Playground".into()),
                fields,
            });
            t.organization_id = Some(1);
        }
        (Some(PlanSource::TagPrefix(prefix)), false) => t.tags.push(format!("{prefix}{plan}")),
        (None, false) => {
            return Err(format!(
                "the policy {:?} reads no plan ([policy] plan is not set): leave the plan empty",
                policy.name()
            ))
        }
    }
    Ok(t)
}

fn form_markup(c: &Console, s: &Session, i: &Input) -> Markup {
    let set = c.policy.current();
    html! {
        form.playground method="post" action="/admin/playground" {
            (csrf(s))
            label for="subject" { "Subject" }
            input #subject type="text" name="subject" value=(i.subject);
            label for="description" { "Description" }
            textarea #description name="description" rows="6" { (i.description) }
            div.row {
                label { "Organization plan " input type="text" name="plan" value=(i.plan); }
                label { "Created at (UTC) " input type="datetime-local" name="created_at" value=(i.created_at); }
                label { "Policy " select name="policy" {
                    @for n in set.names() { option value=(n) selected[i.policy == n] { (n) } }
                } }
            }
            details {
                summary { "Edit a copy of the policy (nothing is saved)" }
                textarea.code name="policy_text" rows="24" spellcheck="false" { (i.policy_text) }
                p.hint {
                    "The copy decides the ticket: edit it to try a change. Its [[test]] blocks run, and the page shows what it decides differently from the policy in force. Empty: the policy as loaded. Start from: "
                    @for n in set.names() {
                        a href={ "/admin/playground?" (serde_urlencoded::to_string([("policy", &n)]).unwrap_or_default()) } { (n) } " "
                    }
                }
            }
            button type="submit" { "Decide" }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Start {
    #[serde(default)]
    policy: String,
}

/// `GET /admin/playground[?policy=NAME]`: the form, its copy of the policy taken from that
/// policy's file (the first policy when none is named).
pub async fn form(
    State(c): State<Console>,
    Extension(s): Extension<Session>,
    axum::extract::Query(q): axum::extract::Query<Start>,
) -> Response {
    let set = c.policy.current();
    let chosen = set
        .policies()
        .iter()
        .find(|p| p.name() == q.policy)
        .or_else(|| set.policies().first());
    let input = Input {
        policy: chosen.map(|p| p.name().to_string()).unwrap_or_default(),
        policy_text: chosen
            .and_then(|p| std::fs::read_to_string(p.source()).ok())
            .unwrap_or_default(),
        ..Input::default()
    };
    page("Playground", Some(&s), form_markup(&c, &s, &input)).into_response()
}

fn decision_row(name: &str, a: String, b: String) -> Markup {
    html! { tr class=(if a != b { "differs" } else { "" }) { th { (name) } td { (a) } td { (b) } } }
}

fn compare(loaded: &Decision, copy: &Decision) -> Markup {
    let tags = |v: &[String]| v.join(", ");
    let t = |d: Option<chrono::DateTime<Utc>>| d.map(when).unwrap_or_else(|| "none".into());
    let p = |d: &Decision| d.priority.map_or("none".to_string(), |p| p.to_string());
    html! {
        table.compare {
            thead { tr { th {} th { "Policy in force" } th { "Your copy" } } }
            tbody {
                (decision_row("Priority", p(loaded), p(copy)))
                (decision_row("Level", loaded.level.clone().unwrap_or_default(), copy.level.clone().unwrap_or_default()))
                (decision_row("Adds tags", tags(&loaded.add_tags), tags(&copy.add_tags)))
                (decision_row("Removes tags", tags(&loaded.remove_tags), tags(&copy.remove_tags)))
                (decision_row("First response due", t(loaded.first_response_due), t(copy.first_response_due)))
                (decision_row("Resolution due", t(loaded.resolution_due), t(copy.resolution_due)))
                (decision_row("Rules matched", tags(&loaded.matched_rules), tags(&copy.matched_rules)))
            }
        }
    }
}

/// `POST /admin/playground`: decides the typed ticket.
pub async fn run(
    State(c): State<Console>,
    Extension(s): Extension<Session>,
    Form(i): Form<Input>,
) -> Response {
    let set = c.policy.current();
    let Some(loaded) = set.policies().iter().find(|p| p.name() == i.policy) else {
        let body =
            html! { p.error { "Pick one of the loaded policies." } (form_markup(&c, &s, &i)) };
        return page("Playground", Some(&s), body).into_response();
    };
    let edited =
        (!i.policy_text.trim().is_empty()).then(|| Policy::parse(&i.policy_text, loaded.source()));
    let policy = match &edited {
        Some(Ok(l)) => &l.policy,
        Some(Err(e)) => {
            let body = html! {
                p.error { "Your copy does not load:" } pre.error { (e.to_string()) }
                (form_markup(&c, &s, &i))
            };
            return page("Playground", Some(&s), body).into_response();
        }
        None => loaded,
    };
    let t = match ticket(&i, policy) {
        Ok(t) => t,
        Err(e) => {
            let body = html! { p.error { (e) } (form_markup(&c, &s, &i)) };
            return page("Playground", Some(&s), body).into_response();
        }
    };
    let now = Utc::now();
    let x = policy.evaluate(&t, now, true);
    let tests: Vec<(String, Result<(), Vec<String>>)> = match &edited {
        Some(Ok(l)) => l
            .policy
            .tests()
            .iter()
            .map(|case| (case.name.clone(), case.run(&l.policy)))
            .collect(),
        _ => Vec::new(),
    };
    let body = html! {
        (form_markup(&c, &s, &i))
        section.result {
            h2 { "Decision" }
            p.big {
                (x.decision.priority.map_or("no priority".to_string(), |p| p.to_string()))
                @for tag in &x.decision.add_tags { " " span.tag { (tag) } }
            }
            @if let Some(d) = x.decision.first_response_due { p { "First response due " (when(d)) } }
            @if let Some(d) = x.decision.resolution_due { p { "Resolution due " (when(d)) } }
            @if let Some(n) = &x.decision.note { p { "Note: " (n) } }
            h2 { "Evidence" }
            (evidence(&t, &x))
            @if edited.is_some() {
                h2 { "Your copy against the policy in force" }
                (compare(&loaded.decide(&t, now), &x.decision))
                h2 { "Your copy's tests" }
                @if tests.is_empty() { p { "It has no [[test]] blocks." } }
                ul.tests { @for (name, r) in &tests {
                    @match r {
                        Ok(()) => li.pass { "pass · " (name) },
                        Err(diffs) => li.fail { "FAIL · " (name) ul { @for d in diffs { li { (d) } } } },
                    }
                } }
            }
        }
    };
    page("Playground", Some(&s), body).into_response()
}
