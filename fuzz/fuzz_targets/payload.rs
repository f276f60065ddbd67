//! The webhook body parser: any bytes give a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = deskbot::webhook::payload::parse(data);
});
