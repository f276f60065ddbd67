//! `deskbot register`: creates (or updates) the Zendesk webhook, and the trigger when asked, that
//! send tickets to deskbot, then fetches the signing secret and prints the next step.
//!
//! Idempotent: everything is found by name first and only created or updated when it differs, so a
//! second run changes nothing. One webhook cannot both receive ticket events and be a trigger's
//! target (zendesk-api.md §7.1), so `--mode both` creates two. The secret goes to stdout or to
//! `--secret-file`, never to a log.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{json, Value};

use crate::zendesk::{ZendeskClient, ZendeskError};

/// What to subscribe the webhook to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A webhook subscribed to ticket events (created, comment added): recommended.
    Events,
    /// A webhook for triggers, and a trigger that notifies it when a ticket is created.
    Triggers,
    /// Both webhooks.
    Both,
}

/// What `register` should set up.
#[derive(Debug, Clone)]
pub struct Plan {
    /// deskbot's public webhook URL.
    pub url: String,
    /// Webhook kinds.
    pub mode: Mode,
    /// Name prefix of everything created.
    pub name: String,
    /// Ticket events to subscribe to (short names).
    pub events: Vec<String>,
}

/// One request `register` sends.
struct Step {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Plan {
    fn events_webhook(&self) -> Value {
        let subs: Vec<String> = self
            .events
            .iter()
            .map(|e| format!("zen:event-type:ticket.{e}"))
            .collect();
        json!({"webhook": {
            "name": format!("{}: ticket events", self.name), "status": "active", "endpoint": self.url,
            "http_method": "POST", "request_format": "json", "subscriptions": subs,
            "description": "Managed by deskbot register"}})
    }

    fn trigger_webhook(&self) -> Value {
        json!({"webhook": {
            "name": format!("{}: triggers", self.name), "status": "active", "endpoint": self.url,
            "http_method": "POST", "request_format": "json", "subscriptions": ["conditional_ticket_events"],
            "description": "Managed by deskbot register"}})
    }

    fn trigger(&self, webhook_id: &str, category: Option<&str>) -> Value {
        let mut t = json!({
            "title": format!("{}: notify on ticket created", self.name),
            "active": true,
            "description": "Managed by deskbot register",
            "conditions": {"all": [{"field": "update_type", "operator": "is", "value": "Create"}], "any": []},
            "actions": [{"field": "notification_webhook", "value": [webhook_id, crate::webhook::payload::TRIGGER_BODY]}],
        });
        if let Some(c) = category {
            t["category_id"] = json!(c);
        }
        json!({ "trigger": t })
    }
}

/// Checks the URL before anything is sent: Zendesk only calls HTTPS endpoints.
pub fn validate_url(url: &str) -> Result<(), String> {
    if !url.starts_with("https://") {
        return Err(format!(
            "--url {url:?}: Zendesk only calls HTTPS endpoints; give deskbot's public address, e.g. https://<app>.fly.dev/webhooks/zendesk"
        ));
    }
    if !url.ends_with("/webhooks/zendesk") {
        return Err(format!(
            "--url {url:?} should end with /webhooks/zendesk, the path deskbot listens on"
        ));
    }
    Ok(())
}

/// The requests a dry run would send, as text.
pub fn dry_run(plan: &Plan) -> String {
    let mut steps = Vec::new();
    if matches!(plan.mode, Mode::Events | Mode::Both) {
        steps.push(Step {
            method: Method::POST,
            path: "/api/v2/webhooks".into(),
            body: Some(plan.events_webhook()),
        });
    }
    if matches!(plan.mode, Mode::Triggers | Mode::Both) {
        steps.push(Step {
            method: Method::POST,
            path: "/api/v2/webhooks".into(),
            body: Some(plan.trigger_webhook()),
        });
        steps.push(Step {
            method: Method::POST,
            path: "/api/v2/triggers".into(),
            body: Some(plan.trigger(
                "<id of the webhook created above>",
                Some("<id of the \"deskbot\" trigger category, where the account has categories>"),
            )),
        });
    }
    let mut out = String::from("dry run: nothing is sent. Against an account that has none of these yet, register would send:\n");
    for s in steps {
        out.push_str(&format!("\n{} {}\n", s.method, s.path));
        if let Some(b) = s.body {
            out.push_str(&serde_json::to_string_pretty(&b).unwrap_or_default());
            out.push('\n');
        }
    }
    out.push_str("\nthen GET /api/v2/webhooks/{id}/signing_secret for each webhook.\n");
    out
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created with this id.
    Created(String),
    /// Existed and was brought up to date.
    Updated(String),
    /// Existed as wanted.
    Unchanged(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Created(id) => write!(f, "created (id {id})"),
            Change::Updated(id) => write!(f, "updated (id {id})"),
            Change::Unchanged(id) => write!(f, "unchanged (id {id})"),
        }
    }
}

impl Change {
    fn id(&self) -> &str {
        match self {
            Change::Created(i) | Change::Updated(i) | Change::Unchanged(i) => i,
        }
    }
}

/// The outcome of a registration.
#[derive(Debug, Clone)]
pub struct Registered {
    /// One line per object: what it is, what happened.
    pub lines: Vec<String>,
    /// Signing secrets of the webhooks.
    pub secrets: Vec<String>,
}

fn id_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A kind of Zendesk object `register` manages: where it is listed, created and updated, and
/// which of its fields decide whether an existing one is already as wanted.
struct Resource {
    /// JSON key of one object (`webhook`, `trigger`) and of the list (`webhooks`, `triggers`).
    one: &'static str,
    many: &'static str,
    /// The field objects are found by (`name`, `title`).
    key: &'static str,
    /// Collection path, and the query that lists candidates.
    path: &'static str,
    list_query: String,
    /// Fields compared with the wanted object.
    compared: &'static [&'static str],
    /// Endpoint names for metrics and messages.
    endpoints: [&'static str; 3],
}

/// Finds the object by its key; creates it, updates it, or leaves it. `guard` may refuse an
/// existing object that cannot be updated into the wanted one.
async fn ensure(
    z: &ZendeskClient,
    r: &Resource,
    wanted: &Value,
    guard: impl Fn(&Value) -> Result<(), String>,
) -> Result<Change, String> {
    let w = &wanted[r.one];
    let [list_ep, create_ep, update_ep] = r.endpoints;
    let (list, _) = z
        .call(
            list_ep,
            Method::GET,
            &format!("{}{}", r.path, r.list_query),
            None,
        )
        .await
        .map_err(|e| e.advice())?;
    let existing = list[r.many]
        .as_array()
        .and_then(|items| items.iter().find(|x| x[r.key] == w[r.key]))
        .cloned();
    let Some(have) = existing else {
        let (created, _) = z
            .call(create_ep, Method::POST, r.path, Some(wanted))
            .await
            .map_err(|e| e.advice())?;
        return Ok(Change::Created(id_of(&created[r.one]["id"])));
    };
    let id = id_of(&have["id"]);
    guard(&have)?;
    if r.compared.iter().all(|k| have[*k] == w[*k]) {
        return Ok(Change::Unchanged(id));
    }
    // A PUT replaces what it names (for triggers, both conditions and actions): send it whole.
    z.call(
        update_ep,
        Method::PUT,
        &format!("{}/{id}", r.path),
        Some(wanted),
    )
    .await
    .map_err(|e| e.advice())?;
    Ok(Change::Updated(id))
}

/// Creates or updates the webhook described by `wanted` (`{"webhook": {...}}`).
async fn ensure_webhook(z: &ZendeskClient, wanted: &Value) -> Result<Change, String> {
    let name = wanted["webhook"]["name"].as_str().unwrap_or_default();
    let resource = Resource {
        one: "webhook",
        many: "webhooks",
        key: "name",
        path: "/api/v2/webhooks",
        list_query: format!("?filter[name_contains]={}", urlencode(name)),
        compared: &[
            "endpoint",
            "status",
            "http_method",
            "request_format",
            "subscriptions",
        ],
        endpoints: ["list_webhooks", "create_webhook", "update_webhook"],
    };
    let is_trigger_kind = |v: &Value| {
        v["subscriptions"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == "conditional_ticket_events"))
    };
    let wants_trigger_kind = is_trigger_kind(&wanted["webhook"]);
    ensure(z, &resource, wanted, |have| {
        if is_trigger_kind(have) == wants_trigger_kind {
            return Ok(());
        }
        Err(format!(
            "webhook {name:?} (id {}) exists with the other kind of subscription, which Zendesk cannot change: delete it in Admin Center, or pass another --name",
            id_of(&have["id"])
        ))
    })
    .await
}

/// The "deskbot" trigger category, created when the account has categories; `None` when it has none.
async fn ensure_category(z: &ZendeskClient, name: &str) -> Result<Option<(String, bool)>, String> {
    let list = match z
        .call(
            "list_trigger_categories",
            Method::GET,
            "/api/v2/trigger_categories",
            None,
        )
        .await
    {
        Ok((v, _)) => v,
        // Accounts without trigger categories answer 404: triggers then need no category.
        Err(ZendeskError::Status { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e.advice()),
    };
    if let Some(c) = list["trigger_categories"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
    {
        return Ok(Some((id_of(&c["id"]), false)));
    }
    let (created, _) = z
        .call(
            "create_trigger_category",
            Method::POST,
            "/api/v2/trigger_categories",
            Some(&json!({"trigger_category": {"name": name}})),
        )
        .await
        .map_err(|e| e.advice())?;
    Ok(Some((id_of(&created["trigger_category"]["id"]), true)))
}

async fn ensure_trigger(z: &ZendeskClient, wanted: &Value) -> Result<Change, String> {
    let resource = Resource {
        one: "trigger",
        many: "triggers",
        key: "title",
        path: "/api/v2/triggers",
        list_query: "?page[size]=100".into(),
        compared: &["active", "conditions", "actions"],
        endpoints: ["list_triggers", "create_trigger", "update_trigger"],
    };
    ensure(z, &resource, wanted, |_| Ok(())).await
}

async fn secret_of(z: &ZendeskClient, id: &str) -> Result<String, String> {
    let (v, _) = z
        .call(
            "signing_secret",
            Method::GET,
            &format!("/api/v2/webhooks/{id}/signing_secret"),
            None,
        )
        .await
        .map_err(|e| e.advice())?;
    v["signing_secret"]["secret"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("Zendesk returned no signing secret for webhook {id}: reveal it in Admin Center > Webhooks"))
}

/// Sets everything up; every error is one sentence with the fix.
pub async fn register(z: &ZendeskClient, plan: &Plan) -> Result<Registered, String> {
    let mut lines = Vec::new();
    let mut webhook_ids = Vec::new();
    if matches!(plan.mode, Mode::Events | Mode::Both) {
        let wanted = plan.events_webhook();
        let c = ensure_webhook(z, &wanted).await?;
        lines.push(format!("webhook {}: {c}", wanted["webhook"]["name"]));
        webhook_ids.push(c.id().to_string());
    }
    if matches!(plan.mode, Mode::Triggers | Mode::Both) {
        let wanted = plan.trigger_webhook();
        let c = ensure_webhook(z, &wanted).await?;
        lines.push(format!("webhook {}: {c}", wanted["webhook"]["name"]));
        webhook_ids.push(c.id().to_string());
        let category = ensure_category(z, &plan.name).await?;
        if let Some((id, created)) = &category {
            let what = if *created { "created" } else { "reused" };
            lines.push(format!(
                "trigger category {:?}: {what} (id {id})",
                plan.name
            ));
        }
        let wanted = plan.trigger(c.id(), category.as_ref().map(|(id, _)| id.as_str()));
        let t = ensure_trigger(z, &wanted).await?;
        lines.push(format!("trigger {}: {t}", wanted["trigger"]["title"]));
    }
    let mut secrets = Vec::new();
    for id in &webhook_ids {
        secrets.push(secret_of(z, id).await?);
    }
    Ok(Registered { lines, secrets })
}

/// Where to put the secret: printed in the next step, or written to a file (mode 600).
pub fn next_step(secrets: &[String], secret_file: Option<&PathBuf>) -> Result<String, String> {
    let joined = secrets.join(",");
    match secret_file {
        None => Ok(format!(
            "Next step: give deskbot the signing secret (keep it out of shell history and logs):\n  fly secrets set DESKBOT_WEBHOOK_SECRETS={joined}\n(anywhere else: set DESKBOT_WEBHOOK_SECRETS in deskbot's environment)"
        )),
        Some(path) => {
            write_private(path, &joined).map_err(|e| format!("cannot write the secret to {}: {e}", path.display()))?;
            Ok(format!(
                "The signing secret is in {} (readable by you only). Next step:\n  fly secrets set DESKBOT_WEBHOOK_SECRETS=\"$(cat {})\"",
                path.display(),
                path.display()
            ))
        }
    }
}

fn write_private(path: &PathBuf, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")
}

/// Percent-encodes a query value (names are short; only what URLs cannot carry is escaped).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_and_end_at_the_webhook_path() {
        assert!(validate_url("https://bot.fly.dev/webhooks/zendesk").is_ok());
        assert!(validate_url("http://bot.fly.dev/webhooks/zendesk")
            .unwrap_err()
            .contains("HTTPS"));
        assert!(validate_url("https://bot.fly.dev/")
            .unwrap_err()
            .contains("/webhooks/zendesk"));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            urlencode("deskbot: ticket events"),
            "deskbot%3A%20ticket%20events"
        );
    }
}
