//! Shapes of the Zendesk Support API that deskbot reads and writes.
//!
//! Responses are read leniently (every field optional), because a missing field must not stop a job;
//! requests are written strictly, and a test validates them against Zendesk's OpenAPI file.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ticket::{parse_time, Organization, Priority, Ticket};

/// `GET /api/v2/tickets/{id}.json?include=users`.
#[derive(Debug, Clone, Deserialize)]
pub struct TicketResponse {
    /// The ticket.
    pub ticket: ApiTicket,
    /// Side-loaded users (requester, submitter, assignee).
    #[serde(default)]
    pub users: Vec<ApiUser>,
}

/// One page of `GET /api/v2/incremental/tickets/cursor.json` (Incremental Ticket Export).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExportPage {
    /// Tickets changed since the start time, oldest change first.
    pub tickets: Vec<ApiTicket>,
    /// Side-loaded users (`include=users`).
    pub users: Vec<ApiUser>,
    /// Side-loaded organizations (`include=organizations`).
    pub organizations: Vec<ApiOrganization>,
    /// Where the next page starts.
    pub after_cursor: Option<String>,
    /// True on the last page.
    pub end_of_stream: bool,
}

impl ExportPage {
    /// The page's tickets with their requesters' e-mails and organizations folded in.
    pub fn into_tickets(self) -> Vec<Ticket> {
        let ExportPage {
            tickets,
            users,
            organizations,
            ..
        } = self;
        tickets
            .into_iter()
            .map(|t| {
                let org = t
                    .organization_id
                    .and_then(|id| organizations.iter().find(|o| o.id == id))
                    .cloned();
                let mut ticket = TicketResponse {
                    ticket: t,
                    users: users.clone(),
                }
                .into_ticket();
                ticket.organization = org.map(Organization::from);
                ticket
            })
            .collect()
    }
}

/// One page of `GET /api/v2/search/export.json?filter[type]=ticket` (Search Export).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SearchPage {
    /// The tickets found, in `created_at` order.
    pub results: Vec<ApiTicket>,
    /// Side-loaded users, when Zendesk honours `include` here (UNCONFIRMED).
    pub users: Vec<ApiUser>,
    /// Side-loaded organizations, likewise.
    pub organizations: Vec<ApiOrganization>,
    /// Cursor pagination.
    pub meta: CursorMeta,
}

/// `GET /api/v2/users/show_many.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UsersResponse {
    /// The users.
    pub users: Vec<ApiUser>,
}

/// `GET /api/v2/organizations/show_many.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OrganizationsResponse {
    /// The organizations.
    pub organizations: Vec<ApiOrganization>,
}

/// A ticket as the REST API returns it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiTicket {
    /// Ticket id.
    pub id: u64,
    /// Subject.
    pub subject: Option<String>,
    /// First comment.
    pub description: Option<String>,
    /// `urgent|high|normal|low` or null.
    pub priority: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Ticket type.
    #[serde(rename = "type")]
    pub ticket_type: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Channel it came through.
    pub via: Option<Via>,
    /// Support address it was sent to.
    pub recipient: Option<String>,
    /// Requester user id.
    pub requester_id: Option<u64>,
    /// Organization id.
    pub organization_id: Option<u64>,
    /// Group id.
    pub group_id: Option<u64>,
    /// Brand id.
    pub brand_id: Option<u64>,
    /// Form id.
    pub ticket_form_id: Option<u64>,
    /// Custom field values.
    pub custom_fields: Vec<CustomFieldValue>,
    /// Creation time.
    pub created_at: Option<String>,
    /// Last update time: echoed as `updated_stamp`.
    pub updated_at: Option<String>,
    /// Task due time.
    pub due_at: Option<String>,
}

/// `via` object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Via {
    /// Channel name.
    #[serde(default)]
    pub channel: Option<String>,
}

/// A side-loaded user.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiUser {
    /// User id.
    pub id: u64,
    /// Primary e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// `end-user`, `agent` or `admin`.
    #[serde(default)]
    pub role: Option<String>,
}

/// `GET /api/v2/tickets/{id}/comments.json?include=users`.
#[derive(Debug, Clone, Deserialize)]
pub struct CommentsResponse {
    /// Comments on this page.
    #[serde(default)]
    pub comments: Vec<ApiComment>,
    /// Side-loaded authors.
    #[serde(default)]
    pub users: Vec<ApiUser>,
}

/// One comment, as far as SLA clocks care.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiComment {
    /// Author.
    #[serde(default)]
    pub author_id: Option<u64>,
    /// Visible to the customer.
    #[serde(default)]
    pub public: bool,
    /// When it was added.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A comment read back from Zendesk: when, public or not, and whether an agent wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenComment {
    /// When it was added.
    pub at: DateTime<Utc>,
    /// Visible to the customer.
    pub public: bool,
    /// Written by an agent or admin (`None`: the author is unknown).
    pub by_agent: Option<bool>,
}

impl CommentsResponse {
    /// The comments with their authors' roles resolved; ones without a readable time are skipped.
    pub fn seen(&self) -> Vec<SeenComment> {
        self.comments
            .iter()
            .filter_map(|c| {
                let at = c.created_at.as_deref().and_then(parse_time)?;
                let role = c
                    .author_id
                    .and_then(|a| self.users.iter().find(|u| u.id == a))
                    .and_then(|u| u.role.as_deref());
                Some(SeenComment {
                    at,
                    public: c.public,
                    by_agent: role.map(|r| r != "end-user"),
                })
            })
            .collect()
    }
}

/// One page of `GET /api/v2/tickets/{id}/audits.json?include=users` (cursor-paginated).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditsPage {
    /// The audits, oldest first.
    pub audits: Vec<ApiAudit>,
    /// Side-loaded authors (`include=users`; UNCONFIRMED that audits honour it, so optional).
    pub users: Vec<ApiUser>,
    /// Cursor pagination.
    pub meta: CursorMeta,
}

/// `meta` of a cursor-paginated list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CursorMeta {
    /// Whether another page follows.
    pub has_more: bool,
    /// Where it starts.
    pub after_cursor: Option<String>,
}

/// One audit: when, by whom, and its events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiAudit {
    /// When the change was made.
    pub created_at: Option<String>,
    /// Who made it.
    pub author_id: Option<u64>,
    /// What changed.
    pub events: Vec<AuditEvent>,
}

/// An audit event, as far as SLA clocks care: `Comment`, or `Create`/`Change` of a field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditEvent {
    /// `Comment`, `Create`, `Change`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The comment's author (comments).
    pub author_id: Option<u64>,
    /// Visible to the customer (comments).
    pub public: Option<bool>,
    /// The field set or changed (`status`, `priority`, ...).
    pub field_name: Option<String>,
    /// Its new value.
    pub value: Option<Value>,
}

/// A past change of a ticket read from its audits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PastChange {
    /// A comment.
    Comment(SeenComment),
    /// The status was set (on creation) or changed.
    Status {
        /// When.
        at: DateTime<Utc>,
        /// The new status (lower case).
        status: String,
    },
}

impl AuditsPage {
    /// The page's comments and status changes in order. A comment's author is an agent when
    /// the side-loaded user's role says so; without side-loaded users, the requester's own
    /// comments count as the customer's and anyone else's as unknown.
    pub fn changes(&self, requester: Option<u64>) -> Vec<PastChange> {
        let mut out = Vec::new();
        for audit in &self.audits {
            let Some(at) = audit.created_at.as_deref().and_then(parse_time) else {
                continue;
            };
            for e in &audit.events {
                match (e.kind.as_str(), e.field_name.as_deref()) {
                    ("Comment", _) => {
                        let author = e.author_id.or(audit.author_id);
                        let role = author
                            .and_then(|a| self.users.iter().find(|u| u.id == a))
                            .and_then(|u| u.role.as_deref());
                        let by_agent = match (role, author) {
                            (Some(r), _) => Some(r != "end-user"),
                            (None, Some(a)) if Some(a) == requester => Some(false),
                            _ => None,
                        };
                        out.push(PastChange::Comment(SeenComment {
                            at,
                            public: e.public.unwrap_or(true),
                            by_agent,
                        }));
                    }
                    ("Create" | "Change", Some("status")) => {
                        if let Some(status) = e.value.as_ref().and_then(Value::as_str) {
                            out.push(PastChange::Status {
                                at,
                                status: status.to_ascii_lowercase(),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

/// `GET /api/v2/organizations/{id}.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct OrganizationResponse {
    /// The organization.
    pub organization: ApiOrganization,
}

/// An organization with its custom fields.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiOrganization {
    /// Organization id.
    pub id: u64,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Custom fields by key.
    #[serde(default)]
    pub organization_fields: Option<Map<String, Value>>,
}

impl From<ApiOrganization> for Organization {
    fn from(o: ApiOrganization) -> Self {
        Organization {
            id: o.id,
            name: o.name,
            fields: o.organization_fields.unwrap_or_default(),
        }
    }
}

/// `{id, value}`: the wire form of a custom field value (in both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomFieldValue {
    /// Field id.
    pub id: u64,
    /// Value (string, number, bool, list or null).
    #[serde(default)]
    pub value: Value,
}

impl TicketResponse {
    /// Folds the API ticket and its requester into deskbot's [`Ticket`].
    pub fn into_ticket(self) -> Ticket {
        let t = self.ticket;
        let requester_email = t.requester_id.and_then(|rid| {
            self.users
                .iter()
                .find(|u| u.id == rid)
                .and_then(|u| u.email.clone())
        });
        Ticket {
            id: t.id,
            event: None,
            subject: t.subject.unwrap_or_default(),
            description: t.description.unwrap_or_default(),
            latest_comment: None,
            comment_by_staff: None,
            tags: t.tags,
            priority: t
                .priority
                .as_deref()
                .and_then(|p| p.parse::<Priority>().ok()),
            status: t.status.map(|s| s.to_ascii_lowercase()),
            ticket_type: t.ticket_type.map(|s| s.to_ascii_lowercase()),
            channel: t
                .via
                .and_then(|v| v.channel)
                .map(|c| c.to_ascii_lowercase()),
            recipient: t.recipient,
            requester_email,
            requester_id: t.requester_id,
            organization_id: t.organization_id,
            organization: None,
            custom_fields: t
                .custom_fields
                .into_iter()
                .map(|f| (f.id, f.value))
                .collect(),
            brand_id: t.brand_id,
            group_id: t.group_id,
            form_id: t.ticket_form_id,
            created_at: t.created_at.as_deref().and_then(parse_time),
            updated_at: t.updated_at,
            due_at: t.due_at.as_deref().and_then(parse_time),
            sla: None,
        }
    }
}

/// Body of `PUT /api/v2/tickets/{id}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketUpdateRequest {
    /// The update.
    pub ticket: TicketUpdate,
}

/// The one update deskbot sends per decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketUpdate {
    /// Priority to set (omitted when the ticket has none and the policy chose none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The full tag set: a single-ticket update replaces tags wholesale.
    pub tags: Vec<String>,
    /// Custom fields that change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<CustomFieldValue>,
    /// Group to assign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<u64>,
    /// Task due time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    /// Private note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<NewComment>,
    /// Refuse the update (409) if the ticket changed since `updated_stamp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_update: Option<bool>,
    /// The `updated_at` of the ticket the update was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_stamp: Option<String>,
}

/// A comment to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewComment {
    /// Text.
    pub body: String,
    /// Always false: deskbot writes internal notes only.
    pub public: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(users: Value) -> AuditsPage {
        serde_json::from_value(json!({
            "audits": [
                {"created_at": "2026-11-02T09:00:00Z", "author_id": 7, "events": [
                    {"type": "Comment", "author_id": 7, "public": true, "body": "help"},
                    {"type": "Create", "field_name": "status", "value": "new"},
                    {"type": "Create", "field_name": "priority", "value": "high"}
                ]},
                {"created_at": "2026-11-02T10:00:00Z", "author_id": 3, "events": [
                    {"type": "Comment", "author_id": 3, "public": false, "body": "looking"},
                    {"type": "Change", "field_name": "status", "value": "Pending", "previous_value": "new"}
                ]},
                {"created_at": "not a time", "events": [{"type": "Comment", "public": true}]}
            ],
            "users": users,
            "meta": {"has_more": false, "after_cursor": null}
        }))
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn audits_give_comments_with_their_authors_role_and_status_changes_in_order() {
        let p = page(json!([{"id": 7, "role": "end-user"}, {"id": 3, "role": "agent"}]));
        assert_eq!(
            p.changes(Some(7)),
            [
                PastChange::Comment(SeenComment {
                    at: at("2026-11-02T09:00:00Z"),
                    public: true,
                    by_agent: Some(false)
                }),
                PastChange::Status {
                    at: at("2026-11-02T09:00:00Z"),
                    status: "new".into()
                },
                PastChange::Comment(SeenComment {
                    at: at("2026-11-02T10:00:00Z"),
                    public: false,
                    by_agent: Some(true)
                }),
                PastChange::Status {
                    at: at("2026-11-02T10:00:00Z"),
                    status: "pending".into()
                },
            ]
        );
    }

    #[test]
    fn without_side_loaded_users_only_the_requester_is_known() {
        let by_agent: Vec<Option<bool>> = page(json!([]))
            .changes(Some(7))
            .into_iter()
            .filter_map(|c| match c {
                PastChange::Comment(c) => Some(c.by_agent),
                PastChange::Status { .. } => None,
            })
            .collect();
        assert_eq!(by_agent, [Some(false), None]);
    }
}
