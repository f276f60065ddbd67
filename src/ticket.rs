//! The normalized ticket that rules see, whatever payload or API response it came from.
//!
//! Zendesk speaks two dialects: event webhooks send ids as strings and enums in upper case, the REST
//! API sends numbers and lower case. Everything is folded into these types once, at the edge.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Zendesk's four ticket priorities, ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// `low`
    Low,
    /// `normal`
    Normal,
    /// `high`
    High,
    /// `urgent`
    Urgent,
}

impl Priority {
    /// `levels` steps more severe, stopping at urgent.
    pub fn raised(self, levels: u8) -> Priority {
        const ORDER: [Priority; 4] = [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Urgent,
        ];
        let i = ORDER.iter().position(|p| *p == self).unwrap_or(1);
        ORDER[(i + usize::from(levels)).min(3)]
    }

    /// The API spelling (`low`, `normal`, `high`, `urgent`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority string that is not one of Zendesk's four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {0:?}: expected low, normal, high or urgent")]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    /// Case-insensitive, because event webhooks say `URGENT` and trigger placeholders say `Urgent`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Priority::Low),
            "normal" => Ok(Priority::Normal),
            "high" => Ok(Priority::High),
            "urgent" => Ok(Priority::Urgent),
            _ => Err(UnknownPriority(s.to_string())),
        }
    }
}

/// What happened to the ticket, in deskbot's short names (`created`, `comment_added`, ...).
///
/// Event webhooks name it `zen:event-type:ticket.<name>`; trigger bodies carry the short name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventKind(String);

impl EventKind {
    /// The ticket was created.
    pub const CREATED: &'static str = "created";
    /// A comment (public or private) was added.
    pub const COMMENT_ADDED: &'static str = "comment_added";
    /// A trigger fired on an update without saying which kind.
    pub const UPDATED: &'static str = "updated";

    /// Builds a kind from a short name, lower-cased.
    pub fn new(name: &str) -> Self {
        EventKind(name.trim().to_ascii_lowercase())
    }

    /// The short name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The ticket's organization with its custom fields (by field key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// Zendesk organization id.
    pub id: u64,
    /// Display name.
    pub name: Option<String>,
    /// `organization_fields`: field key → value.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A ticket as the policy sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// Zendesk ticket id.
    pub id: u64,
    /// What happened (created, comment_added, ...).
    pub event: Option<EventKind>,
    /// Subject line.
    pub subject: String,
    /// First comment.
    pub description: String,
    /// Body of the comment that caused a `comment_added` event, when known.
    pub latest_comment: Option<String>,
    /// Whether that comment was written by an agent (`Some(false)`: by the customer).
    #[serde(default)]
    pub comment_by_staff: Option<bool>,
    /// Tags, in Zendesk's order.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Current priority; `None` when unset.
    pub priority: Option<Priority>,
    /// Status (`new`, `open`, ...), lower case.
    pub status: Option<String>,
    /// Type (`question`, `incident`, `problem`, `task`), lower case.
    pub ticket_type: Option<String>,
    /// `via.channel` (`email`, `web`, `voice`, ...).
    pub channel: Option<String>,
    /// The support address the ticket was sent to.
    pub recipient: Option<String>,
    /// Requester's e-mail address, when known.
    pub requester_email: Option<String>,
    /// Requester's user id.
    pub requester_id: Option<u64>,
    /// Organization id.
    pub organization_id: Option<u64>,
    /// Organization, when fetched.
    pub organization: Option<Organization>,
    /// Custom ticket fields: field id → value.
    #[serde(default)]
    pub custom_fields: BTreeMap<u64, serde_json::Value>,
    /// Brand id.
    pub brand_id: Option<u64>,
    /// Group id.
    pub group_id: Option<u64>,
    /// Ticket form id.
    pub form_id: Option<u64>,
    /// When the ticket was created.
    pub created_at: Option<DateTime<Utc>>,
    /// `updated_at` exactly as Zendesk sent it: echoed back as `updated_stamp` for safe updates.
    pub updated_at: Option<String>,
    /// A task ticket's due time.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// The SLA timer being handled, for `sla.at_risk` / `sla.breached` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaAlert>,
}

/// An SLA timer as escalation rules see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaAlert {
    /// `first_response`, `next_response` or `resolution`.
    pub metric: String,
    /// `at_risk` or `breached`.
    pub kind: String,
    /// The target, as written (`3 business hours`).
    pub target: Option<String>,
    /// The due instant.
    pub due: Option<DateTime<Utc>>,
    /// How far past the due instant the timer acted (zero or more; for breaches).
    pub missed_by_secs: i64,
}

/// Parses Zendesk's timestamps: RFC 3339, or the minute-precision form placeholders render (`2013-12-12T05:35Z`).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M%#z").ok())
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_parses_every_dialect() {
        assert_eq!("URGENT".parse::<Priority>(), Ok(Priority::Urgent));
        assert_eq!("High".parse::<Priority>(), Ok(Priority::High));
        assert_eq!(" normal ".parse::<Priority>(), Ok(Priority::Normal));
        assert_eq!(
            "critical".parse::<Priority>(),
            Err(UnknownPriority("critical".into()))
        );
    }

    #[test]
    fn priority_orders_by_severity() {
        assert!(Priority::Urgent > Priority::High);
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
    }
}
