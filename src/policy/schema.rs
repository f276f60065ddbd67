//! `deskbot schema`: a JSON Schema of the policy format, so editors (Taplo / Even Better TOML)
//! complete keys and flag typos. Written as data rather than derived, because the condition
//! grammar (any field name → operator table, nested `all`/`any`/`not`) is not a Rust type.
//! Draft-04, the version Taplo supports.

use serde_json::{json, Map, Value};

use super::condition::{field_names, OPS};
use super::KNOWN_EVENTS;

fn duration() -> Value {
    json!({"type": "string", "pattern": "^\\s*\\d+\\s+((business|calendar)\\s+)?(minutes?|mins?|hours?|h|days?|weeks?)\\s*$",
           "description": "e.g. \"3 business hours\", \"2 business days\", \"1 week\", \"24 calendar hours\""})
}

/// The schema as JSON.
pub fn schema() -> Value {
    let string_or_list =
        json!({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]});
    let mut ops = Map::new();
    for op in OPS {
        let v = match *op {
            "in" => json!({"type": "array", "items": {"type": ["string", "integer"]}}),
            "has_any_word" | "has_all_words" => json!({"oneOf": [
                {"type": "array", "items": {"type": ["string", "integer"]}},
                {"type": "string", "pattern": "^\\s*@", "description": "a vocabulary: \"@name\" from [words]"}]}),
            "near" => {
                json!({"type": "object", "additionalProperties": false, "required": ["terms"],
                             "properties": {"terms": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
                                            "within": {"type": "integer", "minimum": 0}}})
            }
            "exists" => json!({"type": "boolean"}),
            "gt" | "gte" | "lt" | "lte" => json!({"type": ["number", "string"]}),
            _ => json!({"type": ["string", "integer", "boolean"]}),
        };
        ops.insert(op.to_string(), v);
    }
    let operators = json!({"type": "object", "additionalProperties": false, "minProperties": 1, "properties": ops});
    let mut fields = Map::new();
    for f in field_names() {
        let v = match f {
            "all" | "any" => json!({"type": "array", "items": {"$ref": "#/definitions/condition"}}),
            "not" => json!({"$ref": "#/definitions/condition"}),
            "organization_fields" | "custom_fields" => {
                json!({"type": "object", "additionalProperties": {"$ref": "#/definitions/operators"}})
            }
            _ => json!({"$ref": "#/definitions/operators"}),
        };
        fields.insert(f.to_string(), v);
    }
    let target = json!({"oneOf": [{"$ref": "#/definitions/duration"}, {"type": "object", "additionalProperties": {"$ref": "#/definitions/duration"}}]});
    let sla = json!({"type": "object",
        "properties": {"plan": {"type": "object", "properties": {"organization_field": {"type": "string"}, "tag_prefix": {"type": "string"}}, "additionalProperties": false},
                       "note": {"type": "boolean"},
                       "pause_on": {"type": "array", "items": {"enum": ["pending", "hold"]}},
                       "warn_before": {"type": "string", "description": "e.g. \"30 business minutes\" or \"25%\" of the target"}},
        "additionalProperties": {"type": "object", "additionalProperties": false,
                                 "properties": {"first_response": target, "next_response": target, "resolution": target}}});
    let field_ref = json!({"oneOf": [{"type": "integer"}, {"type": "string"},
        {"type": "object", "additionalProperties": false, "required": ["id"],
         "properties": {"id": {"type": ["integer", "string"]}, "type": {"enum": ["date", "text"]}}}]});
    let plan = json!({"type": "object", "additionalProperties": false,
        "properties": {"organization_field": {"type": "string"}, "tag_prefix": {"type": "string"}}});
    let state = json!({"enum": ["active", "paused", "fulfilled", "breached"]});
    let scenario = json!({"type": "object", "additionalProperties": false, "properties": {
        "until": {"type": "string"}, "first_response": state, "next_response": state, "resolution": state,
        "first_response_due": {"type": "string"}, "next_response_due": {"type": "string"}, "resolution_due": {"type": "string"},
        "fired": {"type": "array", "items": {"type": "string"}}, "tags": {"type": "array", "items": {"type": "string"}},
        "absent_tags": {"type": "array", "items": {"type": "string"}}, "note_contains": {"type": ["string", "array"]}}});
    let step = json!({"type": "object", "additionalProperties": false, "required": ["at"], "properties": {
        "at": {"type": "string"}, "comment_by": {"enum": ["agent", "end-user"]}, "public": {"type": "boolean"},
        "status": {"enum": ["new", "open", "pending", "hold", "solved", "closed"]}, "priority": {"enum": ["low", "normal", "high", "urgent"]}}});
    let test = json!({"type": "array", "items": {"type": "object", "additionalProperties": false, "required": ["ticket"], "properties": {
        "name": {"type": "string"}, "ticket": {"type": "object"}, "expect": {"type": "object"},
        "events": {"type": "array", "items": step}, "sla": scenario}}});
    let phrases = json!({"type": "array", "minItems": 1, "items": {"type": "string"}});
    let words = json!({"type": "object", "description": "Named vocabularies, used in word operators as \"@name\".",
        "additionalProperties": {"oneOf": [phrases.clone(),
            {"type": "object", "additionalProperties": false, "required": ["terms"],
             "properties": {"terms": phrases, "typos": {"type": "boolean", "description": "one edit tolerated on words of five letters or more"}}}]}});
    let mut events: Vec<&str> = KNOWN_EVENTS.to_vec();
    events.push("*");
    json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "deskbot policy",
        "description": "A deskbot support policy: rules, calendar, SLA targets and tests. See docs/rules.md.",
        "type": "object",
        "additionalProperties": false,
        "required": ["policy"],
        "definitions": {"condition": {"type": "object", "additionalProperties": false, "properties": fields},
                        "operators": operators, "duration": duration()},
        "properties": {
            "policy": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
                "name": {"type": "string"}, "calendar": {"type": "string"}, "only_raise": {"type": "boolean"},
                "scope": {"$ref": "#/definitions/condition"}, "plan": plan,
                "stemming": {"type": "boolean", "description": "word forms: \"price\" matches \"pricing\" (default true)"},
                "typos": {"type": "boolean", "description": "every word operator tolerates one edit on words of five letters or more (default false)"}}},
            "words": words,
            "levels": {"type": "object", "additionalProperties": {"oneOf": [
                {"enum": ["low", "normal", "high", "urgent"]},
                {"type": "object", "additionalProperties": false, "required": ["priority"],
                 "properties": {"priority": {"enum": ["low", "normal", "high", "urgent"]}, "tag": {"type": "string"}}}]}},
            "calendars": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": false,
                "required": ["timezone", "hours"], "properties": {
                    "timezone": {"type": "string"},
                    "hours": {"type": "object", "additionalProperties": string_or_list},
                    "holidays": {"type": "array", "items": {"oneOf": [{"type": "string"},
                        {"type": "object", "additionalProperties": false, "required": ["ics"], "properties": {"ics": {"type": "string"}}}]}}}}},
            "sla": sla.clone(),
            "slas": {"type": "object", "additionalProperties": sla},
            "fields": {"type": "object", "additionalProperties": false, "properties": {
                "first_response_due": field_ref.clone(), "resolution_due": field_ref,
                "task_due_at": {"enum": ["first_response", "resolution"]}}},
            "rule": {"type": "array", "items": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
                "name": {"type": "string"},
                "on": {"type": "array", "items": {"enum": events}},
                "when": {"$ref": "#/definitions/condition"},
                "priority": {"type": "string"},
                "raise": {"type": "integer", "minimum": 1, "maximum": 3},
                "add_tags": {"type": "array", "items": {"type": "string", "pattern": "^\\S+$"}},
                "remove_tags": {"type": "array", "items": {"type": "string", "pattern": "^\\S+$"}},
                "set_fields": {"type": "object"},
                "group": {"type": ["integer", "string"]},
                "note": {"type": "string"},
                "notify": {"type": "string", "description": "a message POSTed as {\"text\": ...} to DESKBOT_NOTIFY_URL"},
                "sla": {"type": "string"},
                "stop": {"type": "boolean"}}}},
            "unclassified": {"type": "object", "additionalProperties": false,
                "description": "What a ticket gets when no rule gave it a level",
                "properties": {
                "on": {"type": "array", "items": {"enum": events.clone()}},
                "priority": {"type": "string"},
                "add_tags": {"type": "array", "items": {"type": "string", "pattern": "^\\S+$"}},
                "remove_tags": {"type": "array", "items": {"type": "string", "pattern": "^\\S+$"}},
                "set_fields": {"type": "object"},
                "group": {"type": ["integer", "string"]},
                "note": {"type": "string"},
                "notify": {"type": "string"},
                "sla": {"type": "string"}}},
            "test": test
        }
    })
}
