//! What the benchmarks share: FarApp's calendar (08:00-18:00 Pacific, Monday to Friday, U.S.
//! federal holidays), the one the budgets are stated on.

use std::path::Path;

use deskbot::calendar::{Calendar, CalendarSpec, HolidaySpec, Hours};

/// FarApp's business calendar.
pub fn farapp() -> Calendar {
    let spec = CalendarSpec {
        timezone: "America/Los_Angeles".into(),
        hours: [("mon-fri".to_string(), Hours::One("08:00-18:00".into()))]
            .into_iter()
            .collect(),
        holidays: vec![HolidaySpec::Named("us-federal".into())],
    };
    Calendar::build(&spec, Path::new(".")).expect("calendar builds")
}
