//! Both kinds of Zendesk webhook body → one normalized [`TicketEvent`].
//!
//! - Event webhooks: a fixed envelope `{"type": "zen:event-type:ticket.<name>", "id", "time",
//!   "subject": "zen:ticket:N", "detail": {ticket snapshot}, "event": {...}}` with ids as strings and
//!   enums upper-case.
//! - Trigger webhooks: the body deskbot recommends, `{"ticket_id": "{{ticket.id}}", "event":
//!   "created", "updated_at": "{{ticket.updated_at_with_timestamp}}"}`. Placeholder values are
//!   strings and may be empty; the worker reads the ticket itself, so little is needed here.
//!
//! Parsing never panics on any input: every problem is a [`PayloadError`] with a one-line reason.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::sla::clock::Timer;
use crate::ticket::{parse_time, EventKind, Priority, Ticket};

const EVENT_TYPE_PREFIX: &str = "zen:event-type:";

/// The trigger webhook body `deskbot register` installs: little more than the ticket id (the worker
/// reads the rest), so no placeholder value can break the JSON.
pub const TRIGGER_BODY: &str = r#"{"ticket_id": "{{ticket.id}}", "event": "created", "updated_at": "{{ticket.updated_at_with_timestamp}}"}"#;

/// Ticket event types deskbot acknowledges but never acts on: the ticket is gone or not a real request.
const IGNORED_TICKET_EVENTS: &[&str] = &[
    "permanently_deleted",
    "soft_deleted",
    "marked_as_spam",
    "merged",
];

/// Which kind of webhook delivered the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An event-subscription webhook (`zen:event-type:ticket.*`).
    Event,
    /// A trigger or automation webhook with deskbot's recommended body.
    Trigger,
    /// deskbot's own job: an SLA timer or a notification.
    Internal,
    /// `deskbot backfill --apply`: an existing ticket to decide.
    Backfill,
}

/// The comment carried by a `ticket.comment_added` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Plain-text body.
    pub body: String,
    /// False for internal notes.
    pub public: bool,
    /// True when an agent wrote it, false for the customer; `None` when the event does not say.
    #[serde(default)]
    pub by_staff: Option<bool>,
}

/// One ticket event, as stored in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketEvent {
    /// Key that identifies a delivery of this event: the envelope id, or ticket+event+updated_at.
    pub dedup_key: String,
    /// Which webhook kind delivered it.
    pub source: Source,
    /// Zendesk ticket id.
    pub ticket_id: u64,
    /// What happened.
    pub kind: EventKind,
    /// When Zendesk says it happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// What the payload itself says about the ticket (partial; the worker re-reads the ticket).
    pub snapshot: Ticket,
    /// The comment of a `comment_added` event.
    pub comment: Option<Comment>,
    /// `event.current` of a `*_changed` event (e.g. the new status), lower case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Set when this job is a due SLA timer rather than a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<Timer>,
    /// Set when this job is a message for the team's chat (a rule's `notify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

impl TicketEvent {
    /// The job a due SLA timer becomes. Its key names the timer and its instant, so a timer
    /// moved by a pause or a priority change is a new job; that a timer acts at most once is
    /// kept by the clock itself (see `sla::clock::Clock::fired`).
    pub fn timer(ticket_id: u64, timer: Timer) -> TicketEvent {
        TicketEvent {
            dedup_key: format!(
                "sla:{ticket_id}:{}:{}:{}:{}",
                timer.metric,
                timer.instance,
                timer.kind.as_str(),
                timer.at.timestamp_millis()
            ),
            source: Source::Internal,
            ticket_id,
            kind: EventKind::new(timer.kind.event()),
            occurred_at: Some(timer.at),
            snapshot: Ticket {
                id: ticket_id,
                event: Some(EventKind::new(timer.kind.event())),
                ..Ticket::default()
            },
            comment: None,
            current: None,
            timer: Some(timer),
            notice: None,
        }
    }

    /// The job that delivers the `index`th `notify` message decided while handling job `from`;
    /// its key makes a redone job queue it once.
    pub fn notice(ticket_id: u64, from: i64, index: usize, text: String) -> TicketEvent {
        TicketEvent {
            dedup_key: format!("notify:{from}:{index}"),
            source: Source::Internal,
            ticket_id,
            kind: EventKind::new("notify"),
            occurred_at: None,
            snapshot: Ticket {
                id: ticket_id,
                ..Ticket::default()
            },
            comment: None,
            current: None,
            timer: None,
            notice: Some(text),
        }
    }
}

/// The result of parsing a well-formed body.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A ticket event to queue.
    Ticket(Box<TicketEvent>),
    /// A valid Zendesk event deskbot does not act on (answered 200, not queued).
    Ignored {
        /// The event type as received.
        event_type: String,
    },
}

/// Why a body is not a ticket event deskbot understands. Answered 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Empty body.
    #[error("empty body: expected a Zendesk ticket event as JSON")]
    Empty,
    /// Not JSON at all.
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a ticket event.
    #[error("{0}")]
    Shape(String),
}

/// Parses a raw webhook body.
pub fn parse(body: &[u8]) -> Result<Parsed, PayloadError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(PayloadError::Empty);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json errors are one line with position, which is what the 400 reason should say.
        PayloadError::NotJson(e.to_string())
    })?;
    let Value::Object(obj) = value else {
        return Err(shape("expected a JSON object"));
    };
    if obj.contains_key("type") && obj.contains_key("detail") || is_event_type(obj.get("type")) {
        parse_event(&obj)
    } else if obj.contains_key("ticket_id") {
        parse_trigger(&obj, body)
    } else {
        Err(shape(
            "not a Zendesk ticket event: expected an event webhook (\"type\": \"zen:event-type:ticket.*\") or a trigger body with \"ticket_id\"",
        ))
    }
}

/// Event names of deskbot's own jobs: a webhook naming one must not reach the escalation rules.
fn is_internal(name: &str) -> bool {
    name.starts_with("sla.") || name == "notify"
}

fn shape(msg: &str) -> PayloadError {
    PayloadError::Shape(msg.to_string())
}

fn is_event_type(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| s.starts_with(EVENT_TYPE_PREFIX))
}

fn parse_event(obj: &Map<String, Value>) -> Result<Parsed, PayloadError> {
    let event_type = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("\"type\" must be a string like \"zen:event-type:ticket.created\""))?;
    let domain = event_type
        .strip_prefix(EVENT_TYPE_PREFIX)
        .ok_or_else(|| shape("\"type\" must start with \"zen:event-type:\" (an event webhook)"))?;
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| shape("event webhook without an \"id\" string"))?;
    let Some(name) = domain.strip_prefix("ticket.") else {
        return Ok(Parsed::Ignored {
            event_type: event_type.to_string(),
        });
    };
    if name.is_empty() {
        return Err(shape("\"type\" names no ticket event"));
    }
    if IGNORED_TICKET_EVENTS.contains(&name) || is_internal(name) {
        return Ok(Parsed::Ignored {
            event_type: event_type.to_string(),
        });
    }
    let detail = match obj.get("detail") {
        Some(Value::Object(d)) => Some(d),
        None | Some(Value::Null) => None,
        Some(_) => return Err(shape("\"detail\" must be an object")),
    };
    let from_subject = obj
        .get("subject")
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("zen:ticket:"))
        .and_then(|n| n.trim().parse::<u64>().ok());
    let ticket_id = from_subject
        .or_else(|| detail.and_then(|d| id_of(d.get("id"))))
        .ok_or_else(|| shape("ticket event without a ticket id (\"subject\": \"zen:ticket:N\")"))?;
    let kind = EventKind::new(name);
    let mut snapshot = detail.map(snapshot_from_detail).unwrap_or_default();
    snapshot.id = ticket_id;
    snapshot.event = Some(kind.clone());
    let comment = obj
        .get("event")
        .and_then(|e| e.get("comment"))
        .and_then(Value::as_object)
        .map(|c| Comment {
            body: str_of(c.get("body")).unwrap_or_default(),
            public: c.get("is_public").and_then(Value::as_bool).unwrap_or(true),
            by_staff: c
                .get("author")
                .and_then(|a| a.get("is_staff"))
                .and_then(Value::as_bool),
        });
    if let Some(c) = &comment {
        snapshot.latest_comment = Some(c.body.clone());
        snapshot.comment_by_staff = c.by_staff;
    }
    Ok(Parsed::Ticket(Box::new(TicketEvent {
        dedup_key: format!("event:{id}"),
        source: Source::Event,
        ticket_id,
        kind,
        occurred_at: time_of(obj.get("time")),
        snapshot,
        comment,
        current: obj
            .get("event")
            .and_then(|e| e.get("current"))
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase()),
        timer: None,
        notice: None,
    })))
}

fn parse_trigger(obj: &Map<String, Value>, raw: &[u8]) -> Result<Parsed, PayloadError> {
    let ticket_id = match obj.get("ticket_id") {
        Some(Value::String(s)) if s.trim().is_empty() => return Err(shape(
            "\"ticket_id\" is empty: the trigger body should say \"ticket_id\": \"{{ticket.id}}\"",
        )),
        v => id_of(v).ok_or_else(|| shape("\"ticket_id\" must be a positive whole number"))?,
    };
    let kind = match obj.get("event") {
        None | Some(Value::Null) => EventKind::new(EventKind::UPDATED),
        Some(Value::String(s)) if is_internal(&s.trim().to_ascii_lowercase()) => {
            return Err(shape(
                "\"event\" names one of deskbot's own jobs (sla.*, notify), which no webhook can start",
            ))
        }
        Some(Value::String(s)) if !s.trim().is_empty() => EventKind::new(s),
        Some(_) => {
            return Err(shape(
                "\"event\" must be a non-empty string such as \"created\"",
            ))
        }
    };
    let updated_at = str_of(obj.get("updated_at")).filter(|s| !s.trim().is_empty());
    // Without updated_at, two deliveries of one action can only be told apart by their bytes.
    let version = match &updated_at {
        Some(u) => u.clone(),
        None => hex(&Sha256::digest(raw)),
    };
    let snapshot = Ticket {
        id: ticket_id,
        event: Some(kind.clone()),
        updated_at: updated_at.clone(),
        ..Ticket::default()
    };
    Ok(Parsed::Ticket(Box::new(TicketEvent {
        dedup_key: format!("trigger:{ticket_id}:{kind}:{version}"),
        source: Source::Trigger,
        ticket_id,
        kind,
        occurred_at: updated_at.as_deref().and_then(parse_time),
        snapshot,
        comment: None,
        current: None,
        timer: None,
        notice: None,
    })))
}

/// Builds a partial ticket from an event webhook's `detail` (string ids, upper-case enums).
fn snapshot_from_detail(d: &Map<String, Value>) -> Ticket {
    Ticket {
        subject: str_of(d.get("subject")).unwrap_or_default(),
        description: str_of(d.get("description")).unwrap_or_default(),
        tags: d
            .get("tags")
            .and_then(Value::as_array)
            .map(|tags| {
                tags.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        priority: str_of(d.get("priority")).and_then(|p| p.parse::<Priority>().ok()),
        status: str_of(d.get("status")).map(|s| s.to_ascii_lowercase()),
        ticket_type: str_of(d.get("type")).map(|s| s.to_ascii_lowercase()),
        channel: d
            .get("via")
            .and_then(|v| v.get("channel"))
            .and_then(Value::as_str)
            .map(|s| s.to_ascii_lowercase()),
        requester_id: id_of(d.get("requester_id")),
        organization_id: id_of(d.get("organization_id")),
        brand_id: id_of(d.get("brand_id")),
        group_id: id_of(d.get("group_id")),
        form_id: id_of(d.get("form_id")),
        created_at: time_of(d.get("created_at")),
        updated_at: str_of(d.get("updated_at")),
        ..Ticket::default()
    }
}

/// An id that arrives as a number or as a string of digits.
pub(crate) fn id_of(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

fn time_of(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str).and_then(parse_time)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real captured ticket.created body (../shared/reference/zendesk-api.md §3.2).
    const CAPTURED: &str = r#"{"account_id":22129848,
 "detail":{"actor_id":"8447388090494","assignee_id":"8447388090494","brand_id":"8447346621310",
  "created_at":"2025-01-08T10:12:07Z","custom_status":"8447320465790","description":"ticket_info_desc_2294a6e9ece2",
  "external_id":null,"form_id":"8646151517822","group_id":"8447320466430","id":"5158","is_public":true,
  "organization_id":"8447346622462","priority":"LOW","requester_id":"8447388090494","status":"OPEN",
  "subject":"ticketinfo_2294a6e9ece2","submitter_id":"8447388090494","tags":["ticket-info-test-tag"],
  "type":"TASK","updated_at":"2025-01-08T10:12:07Z","via":{"channel":"web_service"}},
 "event":{},"id":"cbe4028c-7239-495d-b020-f22348516046","subject":"zen:ticket:5158",
 "time":"2025-01-08T10:12:07.672717030Z","type":"zen:event-type:ticket.created","zendesk_event_version":"2022-11-06"}"#;

    #[test]
    fn captured_event_normalizes() {
        let Ok(Parsed::Ticket(ev)) = parse(CAPTURED.as_bytes()) else {
            panic!("captured body must parse");
        };
        assert_eq!(ev.dedup_key, "event:cbe4028c-7239-495d-b020-f22348516046");
        assert_eq!(ev.ticket_id, 5158);
        assert_eq!(ev.kind.as_str(), "created");
        assert_eq!(ev.snapshot.priority, Some(Priority::Low));
        assert_eq!(ev.snapshot.status.as_deref(), Some("open"));
        assert_eq!(ev.snapshot.ticket_type.as_deref(), Some("task"));
        assert_eq!(ev.snapshot.channel.as_deref(), Some("web_service"));
        assert_eq!(ev.snapshot.organization_id, Some(8447346622462));
        assert_eq!(ev.snapshot.tags, vec!["ticket-info-test-tag".to_string()]);
        assert_eq!(
            ev.snapshot.updated_at.as_deref(),
            Some("2025-01-08T10:12:07Z")
        );
    }

    #[test]
    fn comment_added_carries_the_comment() {
        let body = r#"{"type":"zen:event-type:ticket.comment_added","id":"e1","subject":"zen:ticket:7",
            "detail":{"id":"7"},"event":{"comment":{"id":"9","body":"still broken","is_public":false,
            "author":{"id":"1","is_staff":true,"name":"A"}}}}"#;
        let Ok(Parsed::Ticket(ev)) = parse(body.as_bytes()) else {
            panic!("must parse");
        };
        assert_eq!(
            ev.comment,
            Some(Comment {
                body: "still broken".into(),
                public: false,
                by_staff: Some(true),
            })
        );
        assert_eq!(ev.snapshot.latest_comment.as_deref(), Some("still broken"));
    }

    #[test]
    fn trigger_body_with_placeholders_rendered() {
        let body = r#"{"ticket_id":"35436","event":"created","updated_at":"2024-01-01T00:00:00Z"}"#;
        let Ok(Parsed::Ticket(ev)) = parse(body.as_bytes()) else {
            panic!("must parse");
        };
        assert_eq!(ev.ticket_id, 35436);
        assert_eq!(ev.source, Source::Trigger);
        assert_eq!(ev.dedup_key, "trigger:35436:created:2024-01-01T00:00:00Z");
    }

    #[test]
    fn non_ticket_and_deleted_events_are_ignored() {
        let user = r#"{"type":"zen:event-type:user.active_changed","id":"u1","subject":"zen:user:1","detail":{}}"#;
        assert_eq!(
            parse(user.as_bytes()),
            Ok(Parsed::Ignored {
                event_type: "zen:event-type:user.active_changed".into()
            })
        );
        let gone = r#"{"type":"zen:event-type:ticket.permanently_deleted","id":"d1","subject":"zen:ticket:1"}"#;
        assert!(matches!(parse(gone.as_bytes()), Ok(Parsed::Ignored { .. })));
    }

    #[test]
    fn a_webhook_cannot_pose_as_an_sla_timer() {
        let ev = r#"{"type":"zen:event-type:ticket.sla.breached","id":"x","subject":"zen:ticket:1","detail":{}}"#;
        assert!(matches!(parse(ev.as_bytes()), Ok(Parsed::Ignored { .. })));
        let trigger = br#"{"ticket_id":"1","event":"SLA.at_risk"}"#;
        assert!(matches!(parse(trigger), Err(PayloadError::Shape(_))));
        let notify = br#"{"ticket_id":"1","event":"notify"}"#;
        assert!(matches!(parse(notify), Err(PayloadError::Shape(_))));
    }

    #[test]
    fn bad_bodies_have_reasons() {
        assert_eq!(parse(b""), Err(PayloadError::Empty));
        assert!(matches!(parse(b"not json"), Err(PayloadError::NotJson(_))));
        assert!(matches!(parse(b"[1,2]"), Err(PayloadError::Shape(_))));
        assert!(matches!(
            parse(br#"{"hello":"world"}"#),
            Err(PayloadError::Shape(_))
        ));
        assert!(matches!(
            parse(br#"{"ticket_id":""}"#),
            Err(PayloadError::Shape(_))
        ));
        assert!(matches!(
            parse(br#"{"ticket_id":"-3"}"#),
            Err(PayloadError::Shape(_))
        ));
        assert!(matches!(
            parse(br#"{"type":"zen:event-type:ticket.created","id":"x"}"#),
            Err(PayloadError::Shape(_))
        ));
    }

    #[test]
    fn placeholder_time_format_parses() {
        assert_eq!(
            parse_time("2013-12-12T05:35Z").map(|t| t.to_rfc3339()),
            Some("2013-12-12T05:35:00+00:00".into())
        );
    }
}
