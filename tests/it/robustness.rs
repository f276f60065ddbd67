//! Random input never panics the entry points that read outside data; errors are values.

use std::path::Path;

use chrono::Utc;
use deskbot::config::Secret;
use deskbot::policy::Policy;
use deskbot::webhook::payload;
use deskbot::webhook::signature::Verifier;
use proptest::prelude::*;

/// Bytes that are often almost-JSON: fragments of real payloads glued together.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "null",
        "true",
        "1e999",
        "-0",
        "\"type\"",
        "\"zen:event-type:ticket.created\"",
        "\"zen:event-type:user.x\"",
        "\"id\"",
        "\"x\"",
        "\"subject\"",
        "\"zen:ticket:\"",
        "\"zen:ticket:18446744073709551616\"",
        "\"detail\"",
        "\"event\"",
        "\"comment\"",
        "\"ticket_id\"",
        "\"\"",
        "\"12\"",
        "\"tags\"",
        "\"priority\"",
        "\"URGENT\"",
        "\"\\ud800\"",
        "é",
        "\u{0}",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn payload_parser_never_panics(bytes in prop_oneof![jsonish(), prop::collection::vec(any::<u8>(), 0..300)]) {
        let _ = payload::parse(&bytes);
    }

    #[test]
    fn signature_check_never_panics(
        sig in prop::collection::vec(any::<u8>(), 0..80),
        ts in prop_oneof![Just(b"2026-11-23T17:04:11Z".to_vec()), prop::collection::vec(any::<u8>(), 0..40)],
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let v = Verifier::new(vec![Secret::new("s")], true, 300);
        let _ = v.verify(Some(&sig), Some(&ts), &body, Utc::now());
        let _ = v.verify(None, Some(&ts), &body, Utc::now());
    }

    #[test]
    fn policy_loader_never_panics(text in prop_oneof![
        "\\PC{0,200}",
        prop::collection::vec(prop::sample::select(vec![
            "[policy]\n", "name = \"n\"\n", "[[rule]]\n", "name = \"r\"\n", "when = { subject = { has_word = \"x\" } }\n",
            "when = { any = [] }\n", "when = { near = {} }\n", "when = { text = { near = { terms = [\"a\"] } } }\n",
            "priority = \"urgent\"\n", "raise = 9\n", "[calendars.c]\n", "timezone = \"UTC\"\n", "hours = { mon = \"25:00-26:00\" }\n",
            "[sla.urgent]\n", "first_response = \"-1 hours\"\n", "[levels]\n", "x = \"urgent\"\n", "[[test]]\n", "ticket = {}\n",
            "expect = { priority = \"urgent\" }\n", "note = \"{{\"\n", "set_fields = { \"${NOPE}\" = 1 }\n", "when = { regex = \"(\" }\n",
        ]), 0..25).prop_map(|v| v.concat()),
    ]) {
        if let Ok(loaded) = Policy::parse(&text, Path::new("p.toml")) {
            for t in loaded.policy.tests() {
                let _ = t.run(&loaded.policy);
            }
        }
    }
}
