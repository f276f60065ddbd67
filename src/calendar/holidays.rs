//! Holiday sets: the built-in `us-federal` set, computed by rule for any year, and all-day events
//! read from an iCalendar (`.ics`) file.
//!
//! `us-federal` agrees with the Python `holidays` package (`holidays.US()`), checked for 2000–2040
//! by `tests/fixtures/us-federal-2000-2040.csv`: fixed-date holidays falling on a Saturday are also
//! observed the Friday before, on a Sunday the Monday after; New Year's Day on a Saturday is
//! observed on December 31 of the year before; Juneteenth exists from 2021; MLK Day from 1986.

use chrono::{Datelike, Duration, NaiveDate, Weekday};

/// A holiday: its date and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holiday {
    /// The day (the observed day for an "(observed)" entry).
    pub date: NaiveDate,
    /// Name, e.g. "Independence Day (observed)".
    pub name: String,
}

fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u8) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n)
}

fn last_weekday(year: i32, month: u32, weekday: Weekday) -> Option<NaiveDate> {
    let first_next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    let last = first_next - Duration::days(1);
    let back = (7 + last.weekday().num_days_from_monday() - weekday.num_days_from_monday()) % 7;
    Some(last - Duration::days(i64::from(back)))
}

/// U.S. federal holidays whose date (actual or observed) falls in `year`.
pub fn us_federal(year: i32) -> Vec<Holiday> {
    let mut out = Vec::new();
    let mut push = |date: Option<NaiveDate>, name: &str| {
        if let Some(date) = date {
            out.push(Holiday {
                date,
                name: name.to_string(),
            });
        }
    };
    // Fixed-date holidays with weekend observance.
    let mut fixed = vec![
        (1, 1, "New Year's Day"),
        (7, 4, "Independence Day"),
        (11, 11, "Veterans Day"),
        (12, 25, "Christmas Day"),
    ];
    if year >= 2021 {
        fixed.push((6, 19, "Juneteenth National Independence Day"));
    }
    for (month, day, name) in fixed {
        let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
            continue;
        };
        push(Some(date), name);
        let observed = match date.weekday() {
            Weekday::Sat => Some(date - Duration::days(1)),
            Weekday::Sun => Some(date + Duration::days(1)),
            _ => None,
        };
        // New Year's Day on a Saturday is observed on Dec 31 of the previous year, listed there.
        if let Some(obs) = observed.filter(|o| o.year() == year) {
            push(Some(obs), &format!("{name} (observed)"));
        }
    }
    let next_new_year = NaiveDate::from_ymd_opt(year + 1, 1, 1);
    if next_new_year.is_some_and(|d| d.weekday() == Weekday::Sat) {
        push(
            NaiveDate::from_ymd_opt(year, 12, 31),
            "New Year's Day (observed)",
        );
    }
    if year >= 1986 {
        push(
            nth_weekday(year, 1, Weekday::Mon, 3),
            "Martin Luther King Jr. Day",
        );
    }
    push(
        nth_weekday(year, 2, Weekday::Mon, 3),
        "Washington's Birthday",
    );
    push(last_weekday(year, 5, Weekday::Mon), "Memorial Day");
    push(nth_weekday(year, 9, Weekday::Mon, 1), "Labor Day");
    push(nth_weekday(year, 10, Weekday::Mon, 2), "Columbus Day");
    push(nth_weekday(year, 11, Weekday::Thu, 4), "Thanksgiving Day");
    out.sort_by_key(|h| h.date);
    out
}

/// Why an `.ics` file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IcsError {
    /// 1-based line of the problem.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The all-day events of an iCalendar file, each day of a multi-day event listed.
///
/// Hand-written rather than a full iCalendar crate: deskbot needs only VEVENTs with date-valued
/// DTSTART/DTEND (what Google and Zammad holiday feeds publish), and refusing the rest with a line
/// number is clearer than silently interpreting recurrence rules or time zones.
pub fn parse_ics(text: &str) -> Result<Vec<Holiday>, IcsError> {
    // RFC 5545 §3.1: a line starting with a space or tab continues the previous one.
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim_end_matches('\r');
        match raw.strip_prefix([' ', '\t']) {
            Some(cont) if !lines.is_empty() => {
                if let Some(last) = lines.last_mut() {
                    last.1.push_str(cont);
                }
            }
            _ => lines.push((i + 1, raw.to_string())),
        }
    }
    if !lines
        .iter()
        .any(|(_, l)| l.eq_ignore_ascii_case("BEGIN:VCALENDAR"))
    {
        return Err(IcsError {
            line: 1,
            message: "not an iCalendar file (no BEGIN:VCALENDAR)".into(),
        });
    }
    let mut out = Vec::new();
    let mut event: Option<(usize, Option<NaiveDate>, Option<NaiveDate>, String)> = None;
    for (n, line) in lines {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (name, params) = key.split_once(';').unwrap_or((key, ""));
        let name = name.to_ascii_uppercase();
        match (name.as_str(), &mut event) {
            ("BEGIN", None) if value.eq_ignore_ascii_case("VEVENT") => {
                event = Some((n, None, None, String::new()));
            }
            ("END", Some(_)) if value.eq_ignore_ascii_case("VEVENT") => {
                if let Some((start_line, start, end, summary)) = event.take() {
                    let start = start.ok_or(IcsError {
                        line: start_line,
                        message: "event without DTSTART".into(),
                    })?;
                    // DTEND of an all-day event is exclusive; absent, the event is one day.
                    let end = end.unwrap_or(start + Duration::days(1));
                    let mut day = start;
                    while day < end {
                        out.push(Holiday {
                            date: day,
                            name: unescape(&summary),
                        });
                        day += Duration::days(1);
                    }
                }
            }
            ("DTSTART" | "DTEND", Some(ev)) => {
                let date = all_day(params, value).ok_or_else(|| IcsError {
                    line: n,
                    message: format!(
                        "{name} {value:?} is not an all-day date: holiday calendars must use DATE values (e.g. DTSTART;VALUE=DATE:20261225)"
                    ),
                })?;
                if name == "DTSTART" {
                    ev.1 = Some(date);
                } else {
                    ev.2 = Some(date);
                }
            }
            ("RRULE" | "RDATE", Some(_)) => {
                return Err(IcsError {
                    line: n,
                    message: "recurring events are not supported: export the calendar with each occurrence as its own event".into(),
                })
            }
            ("SUMMARY", Some(ev)) => ev.3 = value.to_string(),
            _ => {}
        }
    }
    if let Some((line, ..)) = event {
        return Err(IcsError {
            line,
            message: "BEGIN:VEVENT without END:VEVENT".into(),
        });
    }
    out.sort_by_key(|h| h.date);
    Ok(out)
}

fn all_day(params: &str, value: &str) -> Option<NaiveDate> {
    let value = value.trim();
    let is_date = params.to_ascii_uppercase().contains("VALUE=DATE")
        && !params.to_ascii_uppercase().contains("VALUE=DATE-TIME");
    if value.len() == 8 && (is_date || !value.contains('T')) {
        NaiveDate::parse_from_str(value, "%Y%m%d").ok()
    } else {
        None
    }
}

fn unescape(s: &str) -> String {
    s.replace("\\,", ",")
        .replace("\\;", ";")
        .replace("\\n", " ")
        .replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn observed_dates_of_the_issue() {
        let y2026: Vec<NaiveDate> = us_federal(2026).into_iter().map(|h| h.date).collect();
        assert!(
            y2026.contains(&d("2026-07-03")),
            "July 4 2026 is a Saturday"
        );
        assert!(y2026.contains(&d("2026-11-26")), "Thanksgiving 2026");
        let y2027: Vec<Holiday> = us_federal(2027);
        assert!(y2027
            .iter()
            .any(|h| h.date == d("2027-12-31") && h.name == "New Year's Day (observed)"));
        assert!(!us_federal(2020)
            .iter()
            .any(|h| h.name.starts_with("Juneteenth")));
    }

    #[test]
    fn ics_all_day_events_with_folding_and_ranges() {
        let ics = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20261224\r\nDTEND;VALUE=DATE:20261227\r\nSUMMARY:Christmas\r\n  break\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20270101\r\nSUMMARY:New Year\\, again\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let got: Vec<(String, String)> = parse_ics(ics)
            .unwrap()
            .into_iter()
            .map(|h| (h.date.to_string(), h.name))
            .collect();
        assert_eq!(
            got,
            vec![
                ("2026-12-24".into(), "Christmas break".into()),
                ("2026-12-25".into(), "Christmas break".into()),
                ("2026-12-26".into(), "Christmas break".into()),
                ("2027-01-01".into(), "New Year, again".into()),
            ]
        );
    }

    #[test]
    fn ics_errors_have_lines() {
        let timed =
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20261224T090000Z\nEND:VEVENT\nEND:VCALENDAR\n";
        assert_eq!(parse_ics(timed).unwrap_err().line, 3);
        let rrule = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261225\nRRULE:FREQ=YEARLY\nEND:VEVENT\nEND:VCALENDAR\n";
        assert_eq!(parse_ics(rrule).unwrap_err().line, 4);
        assert_eq!(parse_ics("hello").unwrap_err().line, 1);
    }
}
