//! Business calendars: weekly opening hours in an IANA time zone, minus holidays, and the
//! business-time arithmetic SLA due dates are computed with.
//!
//! Rules (also in docs/calendars.md):
//! - Opening hours are wall-clock times in the calendar's zone: 08:00 is 08:00 local on every
//!   date, whatever the UTC offset. Business time is real elapsed time inside those hours, so an
//!   interval that contains a DST change is an hour shorter or longer.
//! - A local time that does not exist (spring-forward gap) means the first instant after the gap;
//!   one that exists twice (fall-back) means the first of the two.
//! - The clock starts at the next opening when a ticket arrives outside hours.
//! - A business day is the calendar's usual day: the most common total of opening hours among
//!   the open weekdays (ties: the longest). `1 business day` from 10:00 on a 08:00–18:00 calendar
//!   is 10:00 the next business day. A business week is 5 business days.
//! - `N calendar days` is the same local time N dates later; calendar hours and minutes are
//!   exact elapsed time.
//! - A due time that lands exactly on a closing time stays there (due by close), not at the next opening.

pub mod duration;
pub mod holidays;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::Deserialize;

pub use duration::{Span, Unit};

/// Years for which `us-federal` dates are computed when the calendar is built; outside them they are computed on demand.
const FEDERAL_YEARS: std::ops::RangeInclusive<i32> = 1970..=2200;

/// A calendar as written in a policy file (`[calendars.NAME]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// IANA zone, e.g. `America/Los_Angeles`.
    pub timezone: String,
    /// Weekday (or range, or list) → `"HH:MM-HH:MM"` or a list of them.
    pub hours: BTreeMap<String, Hours>,
    /// `"us-federal"`, `"YYYY-MM-DD"`, `"YYYY-MM-DD HH:MM-HH:MM"` (closed part of a day), or `{ ics = "file.ics" }`.
    #[serde(default)]
    pub holidays: Vec<HolidaySpec>,
}

/// One or several intervals.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Hours {
    /// `"08:00-18:00"`
    One(String),
    /// `["09:00-12:00", "13:00-17:00"]`
    Many(Vec<String>),
}

/// One holiday entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HolidaySpec {
    /// A built-in set or a date.
    Named(String),
    /// An iCalendar file of all-day events, relative to the policy file.
    Ics {
        /// Path of the `.ics` file.
        ics: PathBuf,
    },
}

/// A compiled business calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    tz: Tz,
    /// Per weekday (Monday first): open intervals in minutes since local midnight, sorted, disjoint.
    week: [Vec<(u32, u32)>; 7],
    // Ordered sets: a week-long range query answers "any holiday in these 7 days?" in one lookup.
    closed_days: BTreeSet<NaiveDate>,
    closed_parts: BTreeMap<NaiveDate, Vec<(u32, u32)>>,
    us_federal: bool,
    day_seconds: i64,
    week_seconds: i64,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(name: &str) -> Result<usize, String> {
    let n = name.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| n == *d || (n.len() > 3 && full_day_name(d) == n))
        .ok_or_else(|| format!("unknown weekday {name:?}: use mon, tue, wed, thu, fri, sat, sun"))
}

fn full_day_name(d: &str) -> &'static str {
    match d {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

/// Weekdays named by a key: `mon`, `mon-fri`, `sat,sun`, `fri-mon` (wraps).
fn days_of(key: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in key.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a)?, day_index(b)?);
                let mut i = a;
                loop {
                    out.push(i);
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => out.push(day_index(part)?),
        }
    }
    Ok(out)
}

fn minute_of(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a time: write HH:MM"))?;
    let (h, m): (u32, u32) = match (h.parse(), m.parse()) {
        (Ok(h), Ok(m)) if m < 60 && (h < 24 || (h == 24 && m == 0)) => (h, m),
        _ => return Err(format!("{s:?} is not a time between 00:00 and 24:00")),
    };
    Ok(h * 60 + m)
}

/// Parses `"HH:MM-HH:MM"`; an interval that ends before it starts crosses midnight and is refused.
fn interval(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not an interval: write \"08:00-18:00\""))?;
    let (a, b) = (minute_of(a)?, minute_of(b)?);
    if b < a {
        return Err(format!(
            "{s:?} crosses midnight: split it into \"{}-24:00\" on one day and \"00:00-{}\" on the next",
            a_str(a),
            a_str(b)
        ));
    }
    if a == b {
        return Err(format!("{s:?} is empty"));
    }
    Ok((a, b))
}

fn a_str(m: u32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// Sorts and merges touching intervals; overlapping ones are an error.
fn normalize(mut v: Vec<(u32, u32)>, what: &str) -> Result<Vec<(u32, u32)>, String> {
    v.sort();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a < last.1 => {
                return Err(format!(
                    "{what}: {}-{} overlaps {}-{}",
                    a_str(a),
                    a_str(b),
                    a_str(last.0),
                    a_str(last.1)
                ))
            }
            Some(last) if a == last.1 => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    Ok(out)
}

fn subtract(open: &[(u32, u32)], closed: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(mut a, b) in open {
        for &(c, d) in closed {
            if d <= a || c >= b {
                continue;
            }
            if c > a {
                out.push((a, c));
            }
            a = a.max(d);
        }
        if a < b {
            out.push((a, b));
        }
    }
    out
}

impl Calendar {
    /// Compiles a calendar; `base` is the directory `.ics` paths are relative to.
    pub fn build(spec: &CalendarSpec, base: &Path) -> Result<Calendar, String> {
        let tz: Tz = spec.timezone.parse().map_err(|_| {
            format!(
                "timezone: unknown time zone {:?}: use an IANA name such as \"America/Los_Angeles\" or \"Australia/Sydney\"",
                spec.timezone
            )
        })?;
        let mut week: [Vec<(u32, u32)>; 7] = Default::default();
        let mut seen = [false; 7];
        for (key, hours) in &spec.hours {
            let list = match hours {
                Hours::One(s) => vec![s.clone()],
                Hours::Many(v) => v.clone(),
            };
            let mut intervals = Vec::new();
            for s in &list {
                if s.trim().eq_ignore_ascii_case("closed") {
                    continue;
                }
                intervals.push(interval(s).map_err(|e| format!("hours.{key}: {e}"))?);
            }
            for d in days_of(key).map_err(|e| format!("hours.{key}: {e}"))? {
                if seen[d] {
                    return Err(format!("hours: {} is given twice", DAYS[d]));
                }
                seen[d] = true;
                week[d] = normalize(intervals.clone(), &format!("hours.{key}"))?;
            }
        }
        if week.iter().all(Vec::is_empty) {
            return Err("hours: the calendar is never open; give at least one interval, e.g. hours = { mon-fri = \"09:00-17:00\" }".into());
        }
        let mut cal = Calendar {
            tz,
            week,
            closed_days: BTreeSet::new(),
            closed_parts: BTreeMap::new(),
            us_federal: false,
            day_seconds: 0,
            week_seconds: 0,
        };
        for h in &spec.holidays {
            cal.add_holiday(h, base)?;
        }
        let totals: Vec<i64> = cal
            .week
            .iter()
            .map(|d| d.iter().map(|(a, b)| i64::from(b - a) * 60).sum())
            .collect();
        let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
        for t in totals.iter().filter(|t| **t > 0) {
            *counts.entry(*t).or_default() += 1;
        }
        cal.day_seconds = counts
            .iter()
            .max_by_key(|(total, n)| (**n, **total))
            .map(|(t, _)| *t)
            .unwrap_or(0);
        cal.week_seconds = totals.iter().sum();
        Ok(cal)
    }

    fn add_holiday(&mut self, h: &HolidaySpec, base: &Path) -> Result<(), String> {
        match h {
            HolidaySpec::Named(name) if name == "us-federal" => {
                self.us_federal = true;
                for y in FEDERAL_YEARS {
                    self.closed_days
                        .extend(holidays::us_federal(y).into_iter().map(|h| h.date));
                }
            }
            HolidaySpec::Named(s) => {
                let (date, part) = match s.trim().split_once(' ') {
                    Some((d, p)) => (d, Some(p)),
                    None => (s.trim(), None),
                };
                let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
                    format!(
                        "holiday {s:?}: expected \"us-federal\", a date \"YYYY-MM-DD\", a partial day \"YYYY-MM-DD HH:MM-HH:MM\", or {{ ics = \"file.ics\" }}"
                    )
                })?;
                match part {
                    None => {
                        self.closed_days.insert(date);
                    }
                    Some(p) => {
                        let closed = interval(p).map_err(|e| format!("holidays: {s:?}: {e}"))?;
                        let parts = self.closed_parts.entry(date).or_default();
                        parts.push(closed);
                        parts.sort();
                    }
                }
            }
            HolidaySpec::Ics { ics } => {
                let path = base.join(ics);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("holidays: file {}: {e}", path.display()))?;
                let days = holidays::parse_ics(&text)
                    .map_err(|e| format!("holidays: file {}: {e}", path.display()))?;
                self.closed_days.extend(days.into_iter().map(|h| h.date));
            }
        }
        Ok(())
    }

    /// The calendar's time zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Length of one business day.
    pub fn business_day(&self) -> Duration {
        Duration::seconds(self.day_seconds)
    }

    /// The open hours of each weekday (Monday first), in minutes since local midnight.
    pub fn week(&self) -> &[Vec<(u32, u32)>; 7] {
        &self.week
    }

    /// The next `n` local dates from `from` on (within a year) closed all day by a holiday.
    pub fn next_holidays(&self, from: NaiveDate, n: usize) -> Vec<NaiveDate> {
        from.iter_days()
            .take(366)
            .filter(|d| self.closed_all_day(*d))
            .take(n)
            .collect()
    }

    fn closed_all_day(&self, d: NaiveDate) -> bool {
        self.closed_days.contains(&d)
            || (self.us_federal
                && !FEDERAL_YEARS.contains(&d.year())
                && holidays::us_federal(d.year()).iter().any(|h| h.date == d))
    }

    /// Open intervals of a local date, in minutes since local midnight.
    fn local_intervals(&self, d: NaiveDate) -> Cow<'_, [(u32, u32)]> {
        if self.closed_all_day(d) {
            return Cow::Borrowed(&[]);
        }
        let open = &self.week[d.weekday().num_days_from_monday() as usize];
        match self.closed_parts.get(&d) {
            Some(closed) => Cow::Owned(subtract(open, closed)),
            None => Cow::Borrowed(open),
        }
    }

    /// The instant of local `date` + `minute` (0..=1440), resolving DST gaps forward and folds to the first.
    fn instant(&self, date: NaiveDate, minute: u32) -> DateTime<Utc> {
        let naive = date.and_time(chrono::NaiveTime::MIN) + Duration::minutes(i64::from(minute));
        self.resolve(naive)
    }

    fn resolve(&self, naive: NaiveDateTime) -> DateTime<Utc> {
        match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            LocalResult::None => {
                // In a spring-forward gap: every wall time in it names the instant the clock
                // resumes (02:30 on a 02:00→03:00 night is 03:00), so an interval that starts
                // inside the gap opens when the gap ends instead of after its own end. The
                // transition lies between the two readings of `naive` (offsets from 15 h either
                // side, beyond any zone's offset from UTC); find its second.
                let reading = |hours: i64| {
                    let off = self
                        .tz
                        .offset_from_utc_datetime(&(naive + Duration::hours(hours)))
                        .fix();
                    (naive - Duration::seconds(i64::from(off.local_minus_utc()))).and_utc()
                };
                let (mut lo, mut hi) = (reading(15).timestamp(), reading(-15).timestamp());
                if hi < lo {
                    std::mem::swap(&mut lo, &mut hi);
                }
                let offset_at = |secs: i64| {
                    DateTime::from_timestamp(secs, 0)
                        .map(|t| self.tz.offset_from_utc_datetime(&t.naive_utc()).fix())
                };
                let after = offset_at(hi);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if offset_at(mid) == after {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                DateTime::from_timestamp(hi, 0).unwrap_or_else(|| naive.and_utc())
            }
        }
    }

    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    fn utc_intervals(
        &self,
        d: NaiveDate,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let intervals = self.local_intervals(d);
        // An interval wholly inside a spring-forward gap has no real time: it is left out.
        (0..intervals.len()).filter_map(move |i| {
            let (a, b) = intervals[i];
            let (start, end) = (self.instant(d, a), self.instant(d, b));
            (end > start).then_some((start, end))
        })
    }

    /// True when the 7 local dates from `d` hold no holiday and no UTC offset change, so the
    /// week's business time is exactly `week_seconds` and it can be skipped in one step.
    /// (IANA zones never change offset twice within a week, so comparing the two ends suffices.)
    fn plain_week(&self, d: NaiveDate) -> bool {
        let end = d + Duration::days(7);
        if self.closed_days.range(d..end).next().is_some()
            || self.closed_parts.range(d..end).next().is_some()
            || (self.us_federal
                && !(FEDERAL_YEARS.contains(&d.year()) && FEDERAL_YEARS.contains(&end.year()))
                && (0..7).any(|i| self.closed_all_day(d + Duration::days(i))))
        {
            return false;
        }
        let offset = |day: NaiveDate| {
            self.tz
                .offset_from_utc_datetime(&self.instant(day, 0).naive_utc())
                .fix()
        };
        offset(d) == offset(end)
    }

    /// True when `t` is inside opening hours.
    pub fn is_open(&self, t: DateTime<Utc>) -> bool {
        let d = self.local_date(t);
        self.utc_intervals(d).any(|(a, b)| a <= t && t < b)
    }

    /// The due instant `span` after `start`.
    pub fn add(&self, start: DateTime<Utc>, span: Span) -> DateTime<Utc> {
        let n = span.amount;
        if span.business {
            let secs = match span.unit {
                Unit::Minutes => n.saturating_mul(60),
                Unit::Hours => n.saturating_mul(3600),
                Unit::Days => n.saturating_mul(self.day_seconds),
                Unit::Weeks => n.saturating_mul(5).saturating_mul(self.day_seconds),
            };
            return self.add_business(start, Duration::seconds(secs));
        }
        match span.unit {
            Unit::Minutes => start + Duration::minutes(n),
            Unit::Hours => start + Duration::hours(n),
            Unit::Days | Unit::Weeks => {
                let days = if span.unit == Unit::Weeks {
                    n.saturating_mul(7)
                } else {
                    n
                };
                let local = start.with_timezone(&self.tz).naive_local();
                self.resolve(local + Duration::days(days))
            }
        }
    }

    /// The instant at which `d` of business time has passed since `start`.
    pub fn add_business(&self, start: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
        let mut remaining = d.max(Duration::zero());
        let mut date = self.local_date(start);
        let week = Duration::seconds(self.week_seconds);
        // Whether all of `date` lies after `start`: only then may a whole week be skipped.
        let mut fresh = self.instant(date, 0) >= start;
        loop {
            if fresh && remaining > week && self.plain_week(date) {
                remaining -= week;
                date += Duration::days(7);
                continue;
            }
            for (a, b) in self.utc_intervals(date) {
                if b <= start {
                    continue;
                }
                let s = a.max(start);
                let avail = b - s;
                if remaining <= avail {
                    return s + remaining;
                }
                remaining -= avail;
            }
            date = date.succ_opt().unwrap_or(date);
            fresh = true;
        }
    }

    /// Business time elapsed between `a` and `b` (zero when `b` is not after `a`).
    pub fn business_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
        let mut total = Duration::zero();
        if b <= a {
            return total;
        }
        let mut date = self.local_date(a);
        let week = Duration::seconds(self.week_seconds);
        while self.instant(date, 0) < b {
            let fresh = self.instant(date, 0) >= a;
            if fresh && self.instant(date + Duration::days(7), 0) <= b && self.plain_week(date) {
                total += week;
                date += Duration::days(7);
                continue;
            }
            for (x, y) in self.utc_intervals(date) {
                let (s, e) = (x.max(a), y.min(b));
                if e > s {
                    total += e - s;
                }
            }
            date = match date.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
        total
    }

    /// `t` as a person reads it in this calendar: `Mon 23 Nov, 11:00 PST`.
    pub fn describe(&self, t: DateTime<Utc>) -> String {
        describe_in(self.tz, t)
    }

    /// `t` as a date in this calendar's zone (`YYYY-MM-DD`), for Zendesk date fields.
    pub fn local_day(&self, t: DateTime<Utc>) -> String {
        self.local_date(t).format("%Y-%m-%d").to_string()
    }
}

/// `t` as a person reads it in `tz`: `Mon 23 Nov, 11:00 PST`.
pub fn describe_in(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz)
        .format("%a %-d %b, %H:%M %Z")
        .to_string()
}

/// `t` as a person reads it in the zone named `zone` (an IANA name, as SLA clocks keep it), or
/// in UTC when the name is unknown.
pub fn describe_in_zone(zone: &str, t: DateTime<Utc>) -> String {
    describe_in(zone.parse::<Tz>().unwrap_or(Tz::UTC), t)
}

/// A test calendar: `timezone`, open `hours` (`"09:00-17:00"`) Monday to Friday, no holidays.
#[cfg(test)]
pub(crate) fn weekdays(timezone: &str, hours: &str) -> Calendar {
    let spec = CalendarSpec {
        timezone: timezone.into(),
        hours: [("mon-fri".into(), Hours::One(hours.into()))]
            .into_iter()
            .collect(),
        holidays: vec![],
    };
    Calendar::build(&spec, Path::new(".")).expect("a valid test calendar")
}

#[cfg(test)]
mod tests;
