//! The diff between a [`Decision`] and the ticket as just read: the one update deskbot sends, or none.
//!
//! This is what makes deskbot idempotent and loop-free: applying the same decision to a ticket that
//! already reflects it yields `None`, so a redelivered event, a job retried after a crash, and the
//! `ticket.*_changed` events caused by deskbot's own update all send nothing.

use crate::policy::Decision;
use crate::ticket::Ticket;
use crate::zendesk::model::{CustomFieldValue, NewComment, TicketUpdate};

/// Plans the update that brings `ticket` in line with `decision`; `None` when nothing would change.
///
/// A private note is sent only along with a real change: alone it would be added again on every
/// redelivery.
pub fn plan(ticket: &Ticket, decision: &Decision) -> Option<TicketUpdate> {
    let mut after = ticket.clone();
    if !apply(&mut after, decision) {
        return None;
    }
    diff(ticket, &after, decision.note.clone())
}

/// Applies `decision` to `ticket` as Zendesk would; returns whether anything changed.
///
/// Applying decisions one after another is how several waiting events of one ticket become one
/// update: each is decided on the ticket as the ones before it left it.
pub fn apply(ticket: &mut Ticket, decision: &Decision) -> bool {
    let mut changed = false;
    if let Some(p) = decision.priority.filter(|p| Some(*p) != ticket.priority) {
        ticket.priority = Some(p);
        changed = true;
    }
    let mut tags: Vec<String> = ticket
        .tags
        .iter()
        .filter(|t| {
            !decision
                .remove_tags
                .iter()
                .any(|r| r.eq_ignore_ascii_case(t))
        })
        .cloned()
        .collect();
    for t in &decision.add_tags {
        if !tags.iter().any(|have| have.eq_ignore_ascii_case(t)) {
            tags.push(t.clone());
        }
    }
    if !same_tags(&tags, &ticket.tags) {
        ticket.tags = tags;
        changed = true;
    }
    for (id, value) in &decision.fields {
        if ticket.custom_fields.get(id) != Some(value) {
            ticket.custom_fields.insert(*id, value.clone());
            changed = true;
        }
    }
    if let Some(g) = decision.group_id.filter(|g| Some(*g) != ticket.group_id) {
        ticket.group_id = Some(g);
        changed = true;
    }
    if let Some(d) = decision.due_at.filter(|d| Some(*d) != ticket.due_at) {
        ticket.due_at = Some(d);
        changed = true;
    }
    changed
}

/// The update that turns `before` into `after` (only what differs), with `note` as a private
/// comment; `None` when they hold the same values, whatever the note.
pub fn diff(before: &Ticket, after: &Ticket, note: Option<String>) -> Option<TicketUpdate> {
    let tags_change = !same_tags(&before.tags, &after.tags);
    let custom_fields: Vec<CustomFieldValue> = after
        .custom_fields
        .iter()
        .filter(|(id, value)| before.custom_fields.get(id) != Some(value))
        .map(|(id, value)| CustomFieldValue {
            id: *id,
            value: value.clone(),
        })
        .collect();
    let group_change = after.group_id.filter(|g| Some(*g) != before.group_id);
    let due_change = after.due_at.filter(|d| Some(*d) != before.due_at);
    if after.priority == before.priority
        && !tags_change
        && custom_fields.is_empty()
        && group_change.is_none()
        && due_change.is_none()
    {
        return None;
    }
    Some(TicketUpdate {
        priority: after.priority,
        tags: after.tags.clone(),
        custom_fields,
        group_id: group_change,
        due_at: due_change.map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        comment: note.map(|body| NewComment {
            body,
            public: false,
        }),
        safe_update: before.updated_at.as_ref().map(|_| true),
        updated_stamp: before.updated_at.clone(),
    })
}

/// Zendesk compares tags without regard to case.
fn same_tags(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// What `update` would change on `ticket`, in words.
pub fn described(ticket: &Ticket, d: &Decision) -> Option<Vec<String>> {
    let u = plan(ticket, d)?;
    let mut what = Vec::new();
    if let Some(p) = u.priority.filter(|p| Some(*p) != ticket.priority) {
        let was = ticket
            .priority
            .map_or("none".to_string(), |p| p.to_string());
        what.push(format!("priority {was} → {p}"));
    }
    let has = |t: &str| ticket.tags.iter().any(|x| x.eq_ignore_ascii_case(t));
    what.extend(u.tags.iter().filter(|t| !has(t)).map(|t| format!("+{t}")));
    what.extend(
        ticket
            .tags
            .iter()
            .filter(|t| !u.tags.iter().any(|x| x.eq_ignore_ascii_case(t)))
            .map(|t| format!("-{t}")),
    );
    what.extend(u.custom_fields.iter().map(|f| format!("field {}", f.id)));
    if let Some(g) = u.group_id {
        what.push(format!("group {g}"));
    }
    if u.comment.is_some() {
        what.push("note".to_string());
    }
    Some(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::Priority;
    use serde_json::json;

    fn ticket() -> Ticket {
        Ticket {
            id: 9,
            tags: vec!["agent_added".into(), "old".into()],
            priority: Some(Priority::Normal),
            updated_at: Some("2026-11-23T17:00:00Z".into()),
            custom_fields: [(5, json!("2026-11-24"))].into_iter().collect(),
            ..Ticket::default()
        }
    }

    #[test]
    fn sends_full_tag_set_and_keeps_agent_tags() {
        let d = Decision {
            priority: Some(Priority::Urgent),
            add_tags: vec!["escalated".into()],
            remove_tags: vec!["old".into()],
            note: Some("[deskbot] why".into()),
            ..Decision::default()
        };
        let u = plan(&ticket(), &d).unwrap();
        assert_eq!(u.priority, Some(Priority::Urgent));
        assert_eq!(u.tags, vec!["agent_added", "escalated"]);
        assert_eq!(u.safe_update, Some(true));
        assert_eq!(u.updated_stamp.as_deref(), Some("2026-11-23T17:00:00Z"));
        assert!(!u.comment.unwrap().public);
    }

    #[test]
    fn applied_decision_plans_nothing() {
        let d = Decision {
            priority: Some(Priority::Normal),
            add_tags: vec!["AGENT_ADDED".into()],
            remove_tags: vec!["absent".into()],
            fields: [(5, json!("2026-11-24"))].into_iter().collect(),
            note: Some("[deskbot] a note alone is not a change".into()),
            ..Decision::default()
        };
        assert_eq!(plan(&ticket(), &d), None);
    }

    #[test]
    fn only_changed_fields_are_sent() {
        let d = Decision {
            fields: [(5, json!("2026-11-24")), (6, json!("x"))]
                .into_iter()
                .collect(),
            ..Decision::default()
        };
        let u = plan(&ticket(), &d).unwrap();
        assert_eq!(
            u.custom_fields,
            vec![CustomFieldValue {
                id: 6,
                value: json!("x")
            }]
        );
        assert_eq!(u.priority, Some(Priority::Normal));
        assert_eq!(u.comment, None);
    }

    #[test]
    fn decisions_applied_in_turn_make_one_diff() {
        let before = ticket();
        let mut after = before.clone();
        let first = Decision {
            add_tags: vec!["refund".into()],
            ..Decision::default()
        };
        let second = Decision {
            priority: Some(Priority::High),
            add_tags: vec!["REFUND".into(), "vip".into()],
            ..Decision::default()
        };
        assert!(apply(&mut after, &first));
        assert!(apply(&mut after, &second));
        assert!(!apply(&mut after, &second), "applied twice changes nothing");
        let u = diff(&before, &after, Some("[deskbot] both".into())).unwrap();
        assert_eq!(u.tags, vec!["agent_added", "old", "refund", "vip"]);
        assert_eq!(u.priority, Some(Priority::High));
        assert_eq!(u.comment.unwrap().body, "[deskbot] both");
        assert_eq!(diff(&before, &before.clone(), Some("n".into())), None);
    }
}
