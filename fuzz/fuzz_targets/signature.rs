//! The signature and timestamp headers: any header bytes and body give a verdict, never a panic.
#![no_main]

use chrono::DateTime;
use deskbot::config::Secret;
use deskbot::webhook::signature::Verifier;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: [signature length][timestamp length][signature][timestamp][body].
    let [sig_len, ts_len, rest @ ..] = data else {
        return;
    };
    let (sig, rest) = rest.split_at((*sig_len as usize).min(rest.len()));
    let (ts, body) = rest.split_at((*ts_len as usize).min(rest.len()));
    let verifier = Verifier::new(vec![Secret::new("fuzz-secret")], true, 300);
    let Some(now) = DateTime::from_timestamp(1_795_000_000, 0) else {
        return;
    };
    let _ = verifier.verify(Some(sig), Some(ts), body, now);
});
