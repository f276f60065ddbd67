//! `deskbot doctor`: checks a deployment's set-up, one line per check; any failure → exit 1.

use std::path::Path;

use chrono::Utc;
use reqwest::Method;
use serde_json::Value;

use crate::policy::{FieldKind, PolicySet};
use crate::queue::tracking::CLOCK_EVENTS;
use crate::zendesk::ZendeskClient;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Broken: deskbot will not work as configured.
    Fail,
    /// Not checked (the reason says why).
    Skip,
    /// Works, but something deskbot could do is off (the detail says how to fix it).
    Warn,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Passed, failed or skipped.
    pub status: Status,
    /// What was checked.
    pub name: String,
    /// What was found, or how to fix it.
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.status {
            Status::Ok => "ok  ",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
            Status::Warn => "warn",
        };
        write!(f, "{s}  {}: {}", self.name, self.detail)
    }
}

fn check(status: Status, name: &str, detail: impl Into<String>) -> Check {
    Check {
        status,
        name: name.to_string(),
        detail: detail.into(),
    }
}

/// The checks that need Zendesk, listed as skipped with the reason when they cannot run.
fn skipped(why: &str) -> Vec<Check> {
    ["ticket updates", "clock", "fields", "webhook"]
        .iter()
        .map(|name| check(Status::Skip, name, format!("not checked: {why}")))
        .collect()
}

/// What to check against.
pub struct Target<'a> {
    /// Policy path.
    pub rules: &'a Path,
    /// Database file.
    pub db: &'a crate::config::DatabaseArgs,
    /// deskbot's public webhook URL, when known.
    pub url: Option<&'a str>,
    /// Signature tolerance in seconds.
    pub tolerance_secs: u64,
}

/// Runs every check; `zendesk` is `None` when no credentials are configured.
pub async fn run(zendesk: Option<&ZendeskClient>, t: &Target<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    let policies = match PolicySet::load(t.rules) {
        Ok((set, warnings)) => {
            out.push(check(
                Status::Ok,
                "policy",
                format!(
                    "{} ({} rules, {} warnings)",
                    set.names().join(", "),
                    set.rule_count(),
                    warnings.len()
                ),
            ));
            Some(set)
        }
        Err(e) => {
            out.push(check(
                Status::Fail,
                "policy",
                format!(
                    "does not load; run `deskbot check {}`:\n{e}",
                    t.rules.display()
                ),
            ));
            None
        }
    };
    // A SQLite file that does not exist yet is made by `serve`; doctor checks it can be.
    out.push(match t.db.open(true).await {
        Ok(store) => match store.check_writable().await {
            Ok(()) => check(
                Status::Ok,
                "database",
                format!("{} is writable", t.db.describe()),
            ),
            Err(e) => check(
                Status::Fail,
                "database",
                format!("{} is not writable: {e}", t.db.describe()),
            ),
        },
        Err(e) => check(Status::Fail, "database", e),
    });
    let Some(z) = zendesk else {
        out.push(check(
            Status::Fail,
            "credentials",
            "none set: set ZENDESK_SUBDOMAIN with ZENDESK_EMAIL + ZENDESK_API_TOKEN (or ZENDESK_OAUTH_TOKEN)",
        ));
        out.extend(skipped("no credentials"));
        return out;
    };
    let me = match z
        .call("users_me", Method::GET, "/api/v2/users/me", None)
        .await
    {
        Ok((v, date)) => {
            let user = &v["user"];
            let role = user["role"].as_str().unwrap_or("");
            if user["id"].is_null()
                || role.is_empty()
                || role == "end-user" && user["email"].is_null()
            {
                out.push(check(Status::Fail, "credentials", "Zendesk answered as an anonymous user: check ZENDESK_EMAIL and ZENDESK_API_TOKEN"));
                out.extend(skipped("the credentials failed"));
                return out;
            }
            out.push(check(
                Status::Ok,
                "credentials",
                format!("{} ({role})", user["email"].as_str().unwrap_or("?")),
            ));
            out.push(match role {
                "admin" | "agent" => check(Status::Ok, "ticket updates", format!("an {role} can update tickets")),
                _ => check(Status::Fail, "ticket updates", format!("the user is an {role}: use an agent (or admin) account, ideally a dedicated one")),
            });
            out.push(match date {
                Some(zd) => {
                    let skew = (Utc::now() - zd).num_seconds().abs();
                    // Half the window: a signature must be checked well inside it.
                    if skew as u64 <= t.tolerance_secs / 2 {
                        check(Status::Ok, "clock", format!("{skew} s from Zendesk's clock"))
                    } else {
                        check(Status::Fail, "clock", format!("{skew} s from Zendesk's clock; signatures more than {} s old are refused: synchronise this machine's clock (NTP)", t.tolerance_secs))
                    }
                }
                None => check(Status::Skip, "clock", "Zendesk sent no Date header to compare with"),
            });
            user.clone()
        }
        Err(e) => {
            out.push(check(Status::Fail, "credentials", e.advice()));
            out.extend(skipped("the credentials failed"));
            return out;
        }
    };
    let _ = me;
    if let Some(set) = &policies {
        out.extend(field_checks(z, set).await);
    }
    let clocks = policies.as_ref().is_some_and(PolicySet::runs_clocks);
    out.extend(webhook_checks(z, t.url, clocks).await);
    out
}

async fn field_checks(z: &ZendeskClient, set: &PolicySet) -> Vec<Check> {
    let mut out = Vec::new();
    for p in set.policies() {
        for (id, kind, place) in p.field_ids() {
            let name = format!("field {id}");
            out.push(match z.call("show_ticket_field", Method::GET, &format!("/api/v2/ticket_fields/{id}.json"), None).await {
                Ok((v, _)) => {
                    let ty = v["ticket_field"]["type"].as_str().unwrap_or("");
                    let fits = match kind {
                        Some(FieldKind::Date) => ty == "date",
                        Some(FieldKind::Text) => ty == "text" || ty == "textarea",
                        None => true,
                    };
                    if fits {
                        check(Status::Ok, &name, format!("{place}: a {ty} field"))
                    } else {
                        let want = if kind == Some(FieldKind::Date) { "a date field" } else { "a text field" };
                        check(Status::Fail, &name, format!("{place} needs {want}, but field {id} is a {ty} field: create the right kind, or change type in the policy"))
                    }
                }
                Err(crate::zendesk::ZendeskError::Status { status: 404, .. }) => {
                    check(Status::Fail, &name, format!("{place}: no ticket field {id} in this account (Admin Center > Objects and rules > Ticket fields)"))
                }
                Err(e) => check(Status::Fail, &name, e.advice()),
            });
        }
        let keys = p.plan_fields();
        if keys.is_empty() {
            continue;
        }
        let list = z
            .call(
                "organization_fields",
                Method::GET,
                "/api/v2/organization_fields",
                None,
            )
            .await;
        for key in keys {
            let name = format!("organization field {key:?}");
            out.push(match &list {
                Ok((v, _)) => {
                    let found = v["organization_fields"].as_array().is_some_and(|fs| fs.iter().any(|f| f["key"] == Value::String(key.clone())));
                    if found {
                        check(Status::Ok, &name, format!("policy {:?} reads plan tiers from it", p.name()))
                    } else {
                        check(Status::Fail, &name, format!("policy {:?} reads plan tiers from it, but the account has no organization field with that key (Admin Center > People > Organization fields)", p.name()))
                    }
                }
                Err(e) => check(Status::Fail, &name, e.advice()),
            });
        }
    }
    out
}

/// The webhook that sends to `url`, and (when the policies run SLA clocks) whether it subscribes
/// to every event the clocks need.
async fn webhook_checks(z: &ZendeskClient, url: Option<&str>, clocks: bool) -> Vec<Check> {
    let Some(url) = url else {
        return vec![check(
            Status::Skip,
            "webhook",
            "pass --url https://<host>/webhooks/zendesk to check that a webhook points here",
        )];
    };
    let found = match z
        .call("list_webhooks", Method::GET, "/api/v2/webhooks", None)
        .await
    {
        Ok((v, _)) => v,
        Err(e) => return vec![check(Status::Fail, "webhook", e.advice())],
    };
    let ours: Vec<&Value> = found["webhooks"]
        .as_array()
        .map(|ws| ws.iter().filter(|w| w["endpoint"] == url).collect())
        .unwrap_or_default();
    let Some(active) = ours.iter().find(|w| w["status"] == "active") else {
        let why = if ours.is_empty() {
            format!("no webhook sends to {url}: run `deskbot register --url {url}`")
        } else {
            format!("the webhook for {url} is inactive: activate it in Admin Center > Webhooks")
        };
        return vec![check(Status::Fail, "webhook", why)];
    };
    let mut out = vec![check(
        Status::Ok,
        "webhook",
        format!("{} (id {}) sends to {url}", active["name"], active["id"]),
    )];
    if clocks {
        let subscribed: Vec<&str> = ours
            .iter()
            .filter(|w| w["status"] == "active")
            .filter_map(|w| w["subscriptions"].as_array())
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let missing: Vec<String> = CLOCK_EVENTS
            .iter()
            .map(|e| format!("zen:event-type:ticket.{e}"))
            .filter(|e| !subscribed.contains(&e.as_str()))
            .collect();
        out.push(if missing.is_empty() {
            check(Status::Ok, "SLA events", "the webhook sends every event the clocks need")
        } else {
            check(
                Status::Warn,
                "SLA events",
                format!(
                    "the webhook does not send {}: SLA clocks will miss replies, pauses or priority changes; run `deskbot register --url {url}`",
                    missing.join(", ")
                ),
            )
        });
    }
    out
}
