//! Validates JSON bodies against schemas of Zendesk's OpenAPI 3.0 file (tests/fixtures/zendesk-oas.yaml).
//!
//! Hand-written because OpenAPI 3.0 schemas are not JSON Schema (`nullable`, `readOnly`), and the
//! subset Zendesk's request schemas use is small: `$ref`, `type`, `nullable`, `enum`, `properties`,
//! `required`, `items`, `format: date-time`, `allOf`/`anyOf`/`oneOf`, `readOnly`.
//! Stricter than the spec on one point, on purpose: a property the schema does not declare is an
//! error, so a misspelt field (`update_stamp`) cannot slip through.

use std::sync::OnceLock;

use serde_json::Value;

/// The parsed spec, loaded once per test binary.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/zendesk-oas.yaml"
        );
        let text =
            std::fs::read_to_string(path).expect("tests/fixtures/zendesk-oas.yaml is readable");
        serde_norway::from_str(&text).expect("the OpenAPI file parses as YAML")
    })
}

/// The request-body schema of `method path` (e.g. `put`, `/api/v2/tickets/{ticket_id}`).
pub fn request_schema(method: &str, path: &str) -> &'static Value {
    let op = &spec()["paths"][path][method];
    assert!(op.is_object(), "no {method} {path} in the OpenAPI file");
    &op["requestBody"]["content"]["application/json"]["schema"]
}

/// All violations of `schema` by `instance` (empty when valid).
pub fn validate(schema: &Value, instance: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, instance, "$", &mut errors);
    errors
}

fn resolve(schema: &Value) -> &Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unsupported $ref {r}"));
            let target = &spec()["components"]["schemas"][name];
            assert!(target.is_object(), "dangling $ref {r}");
            resolve(target)
        }
        None => schema,
    }
}

fn check(schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    // Known gap (shared/reference/zendesk-api.md §9): TicketUpdateInput.custom_fields points at the
    // field *definition* schema; the documented wire form of a value is `{id, value}`.
    if at.ends_with(".custom_fields[]") {
        return check_custom_field_value(v, at, errors);
    }
    let s = resolve(schema);
    if v.is_null() {
        if s.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    for key in ["allOf"] {
        if let Some(all) = s.get(key).and_then(Value::as_array) {
            for sub in all {
                check(sub, v, at, errors);
            }
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            if !alts.iter().any(|sub| validate_at(sub, v, at).is_empty()) {
                errors.push(format!("{at}: matches none of {key}"));
            }
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            errors.push(format!("{at}: {v} is not one of {values:?}"));
        }
    }
    let ty = s.get("type").and_then(Value::as_str);
    if s.get("properties").is_some() && matches!(ty, Some("object") | None) {
        return check_object(s, v, at, errors);
    }
    if ty == Some("array") {
        if let Some(items) = v.as_array() {
            for item in items {
                check(&s["items"], item, &format!("{at}[]"), errors);
            }
        }
    }
    if let (Some("string"), Some("date-time"), Some(text)) =
        (ty, s.get("format").and_then(Value::as_str), v.as_str())
    {
        if chrono::DateTime::parse_from_rfc3339(text).is_err() {
            errors.push(format!("{at}: {text:?} is not an RFC 3339 date-time"));
        }
    }
    let fits = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !fits {
        errors.push(format!("{at}: expected {}", ty.unwrap_or("a value")));
    }
}

fn validate_at(schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, v, at, &mut errors);
    errors
}

fn check_object(s: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(obj) = v.as_object() else {
        errors.push(format!("{at}: expected an object"));
        return;
    };
    let props = s["properties"].as_object().cloned().unwrap_or_default();
    for (k, val) in obj {
        match props.get(k) {
            Some(p) => {
                if resolve(p).get("readOnly") == Some(&Value::Bool(true)) {
                    errors.push(format!("{at}.{k}: read-only, must not be sent"));
                }
                check(p, val, &format!("{at}.{k}"), errors);
            }
            None => errors.push(format!("{at}.{k}: not a property of this schema")),
        }
    }
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = r.as_str() {
            if !obj.contains_key(name) {
                errors.push(format!("{at}: missing required {name}"));
            }
        }
    }
}

fn check_custom_field_value(v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(obj) = v.as_object() else {
        errors.push(format!("{at}: expected {{id, value}}"));
        return;
    };
    if !obj.get("id").is_some_and(|id| id.is_u64()) {
        errors.push(format!("{at}.id: expected an integer field id"));
    }
    if !obj.contains_key("value") {
        errors.push(format!("{at}: missing value"));
    }
    for k in obj.keys().filter(|k| *k != "id" && *k != "value") {
        errors.push(format!("{at}.{k}: not part of a custom field value"));
    }
}
