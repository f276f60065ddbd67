//! Every request body deskbot sends validates against Zendesk's OpenAPI file.

use std::collections::BTreeMap;

use deskbot::policy::Decision;
use deskbot::ticket::{Priority, Ticket};
use deskbot::update::plan;
use deskbot::zendesk::model::TicketUpdateRequest;
use serde_json::json;

use crate::support::oas::{request_schema, validate};
use crate::support::{api_ticket, event_body, eventually, spawn_app};

const UPDATE_TICKET: (&str, &str) = ("put", "/api/v2/tickets/{ticket_id}");

#[test]
fn every_shape_of_update_validates() {
    let schema = request_schema(UPDATE_TICKET.0, UPDATE_TICKET.1);
    let ticket = Ticket {
        id: 1,
        tags: vec!["a".into()],
        priority: None,
        updated_at: Some("2026-11-23T17:00:00Z".into()),
        ..Ticket::default()
    };
    let decisions = [
        Decision {
            priority: Some(Priority::High),
            ..Decision::default()
        },
        Decision {
            add_tags: vec!["b".into()],
            remove_tags: vec!["a".into()],
            ..Decision::default()
        },
        Decision {
            priority: Some(Priority::Urgent),
            add_tags: vec!["x".into()],
            fields: BTreeMap::from([
                (360001, json!("2026-11-24")),
                (360002, json!(true)),
                (360003, json!(null)),
            ]),
            group_id: Some(42),
            note: Some("[deskbot] note".into()),
            due_at: chrono::DateTime::from_timestamp(1_795_000_000, 0),
            ..Decision::default()
        },
    ];
    for d in decisions {
        let update = plan(&ticket, &d).expect("each decision changes the ticket");
        let body = serde_json::to_value(TicketUpdateRequest { ticket: update }).unwrap();
        assert_eq!(validate(schema, &body), Vec::<String>::new(), "{body}");
    }
    // Without updated_at there is no safe update, and the body still validates.
    let bare = Ticket {
        id: 2,
        ..Ticket::default()
    };
    let update = plan(
        &bare,
        &Decision {
            priority: Some(Priority::Low),
            ..Decision::default()
        },
    )
    .unwrap();
    let body = serde_json::to_value(TicketUpdateRequest { ticket: update }).unwrap();
    assert!(body["ticket"].get("safe_update").is_none());
    assert_eq!(validate(schema, &body), Vec::<String>::new());
}

#[test]
fn the_validator_catches_what_it_should() {
    let schema = request_schema(UPDATE_TICKET.0, UPDATE_TICKET.1);
    let bad = json!({"ticket": {"priority": "critical", "update_stamp": "x", "tags": "a b", "safe_update": "yes",
                                "custom_fields": [{"id": "f", "value": 1}], "comment": {"body": "n", "public": false, "id": 3}}});
    let errors = validate(schema, &bad);
    for expected in [
        "$.ticket.priority: \"critical\" is not one of",
        "$.ticket.update_stamp: not a property of this schema",
        "$.ticket.tags: expected array",
        "$.ticket.safe_update: expected boolean",
        "$.ticket.custom_fields[].id: expected an integer field id",
        "$.ticket.comment.id: read-only, must not be sent",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }
}

#[tokio::test]
async fn puts_sent_end_to_end_validate() {
    let app = spawn_app().await;
    app.zendesk
        .put_ticket(api_ticket(201, "URGENT: payment failing"));
    assert_eq!(
        app.post_signed(event_body("c-1", "created", 201, "URGENT: payment failing"))
            .await
            .status(),
        202
    );
    let z = app.zendesk.clone();
    eventually(10, "one PUT", || z.applied_puts().len() == 1).await;
    let schema = request_schema(UPDATE_TICKET.0, UPDATE_TICKET.1);
    for body in app.zendesk.applied_puts() {
        assert_eq!(validate(schema, &body), Vec::<String>::new(), "{body}");
    }
    app.stop().await;
}
