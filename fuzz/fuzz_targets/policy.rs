//! The policy loader: any text gives a policy or diagnostics, never a panic; a policy that loads
//! also runs its own `[[test]]` cases without panicking.
#![no_main]

use std::path::Path;

use deskbot::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loaded) = Policy::parse(text, Path::new("fuzz.toml")) {
        for case in loaded.policy.tests() {
            let _ = case.run(&loaded.policy);
        }
    }
});
