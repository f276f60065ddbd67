//! Table tests with hand-checked answers, the `us-federal` fixture, and property tests.

use super::*;
use proptest::prelude::*;

fn spec(tz: &str, hours: &[(&str, &[&str])], holidays: &[&str]) -> CalendarSpec {
    CalendarSpec {
        timezone: tz.into(),
        hours: hours
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Hours::Many(v.iter().map(|s| s.to_string()).collect()),
                )
            })
            .collect(),
        holidays: holidays
            .iter()
            .map(|h| HolidaySpec::Named(h.to_string()))
            .collect(),
    }
}

fn cal(tz: &str, hours: &[(&str, &[&str])], holidays: &[&str]) -> Calendar {
    Calendar::build(&spec(tz, hours, holidays), Path::new(".")).unwrap()
}

fn farapp() -> Calendar {
    cal(
        "America/Los_Angeles",
        &[("mon-fri", &["08:00-18:00"])],
        &["us-federal"],
    )
}

fn sydney() -> Calendar {
    cal("Australia/Sydney", &[("mon-fri", &["09:00-17:00"])], &[])
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn span(s: &str) -> Span {
    s.parse().unwrap()
}

/// (calendar, start, duration, expected due), each worked out by hand from the calendar's rules.
#[test]
fn due_dates_checked_by_hand() {
    let fa = farapp();
    let sy = sydney();
    let lunch = cal(
        "Europe/London",
        &[("mon-fri", &["09:00-12:00", "13:00-17:00"])],
        &[],
    );
    let xmas_eve = cal(
        "America/Los_Angeles",
        &[("mon-fri", &["08:00-18:00"])],
        &["us-federal", "2026-12-24 12:00-18:00"],
    );
    let cases: Vec<(&Calendar, &str, &str, &str, &str)> = vec![
        (
            &fa,
            "2026-11-23T09:00:00-08:00",
            "3 business hours",
            "2026-11-23T12:00:00-08:00",
            "inside hours",
        ),
        (
            &fa,
            "2026-11-23T19:00:00-08:00",
            "3 business hours",
            "2026-11-24T11:00:00-08:00",
            "after hours: clock starts at the next opening",
        ),
        (
            &fa,
            "2026-11-23T06:00:00-08:00",
            "90 business minutes",
            "2026-11-23T09:30:00-08:00",
            "before opening",
        ),
        (
            &fa,
            "2026-11-23T18:00:00-08:00",
            "1 business hour",
            "2026-11-24T09:00:00-08:00",
            "exactly at closing",
        ),
        (
            &fa,
            "2026-11-23T15:00:00-08:00",
            "3 business hours",
            "2026-11-23T18:00:00-08:00",
            "due exactly at close stays at close",
        ),
        (
            &fa,
            "2026-11-20T17:00:00-08:00",
            "3 business hours",
            "2026-11-23T10:00:00-08:00",
            "Friday evening",
        ),
        (
            &fa,
            "2026-11-25T16:00:00-08:00",
            "3 business hours",
            "2026-11-27T09:00:00-08:00",
            "Thanksgiving week: Thursday closed",
        ),
        (
            &fa,
            "2026-11-25T16:00:00-08:00",
            "1 business day",
            "2026-11-27T16:00:00-08:00",
            "Thanksgiving week, 1 business day",
        ),
        (
            &fa,
            "2026-11-26T10:00:00-08:00",
            "1 business hour",
            "2026-11-27T09:00:00-08:00",
            "created on Thanksgiving",
        ),
        (
            &fa,
            "2026-03-06T17:00:00-08:00",
            "2 business hours",
            "2026-03-09T09:00:00-07:00",
            "LA spring forward weekend",
        ),
        (
            &fa,
            "2026-03-07T12:00:00-08:00",
            "24 calendar hours",
            "2026-03-08T13:00:00-07:00",
            "24 calendar hours across the gap",
        ),
        (
            &fa,
            "2026-03-06T10:00:00-08:00",
            "7 calendar days",
            "2026-03-13T10:00:00-07:00",
            "7 calendar days keeps the wall time",
        ),
        (
            &fa,
            "2026-10-30T17:00:00-07:00",
            "2 business hours",
            "2026-11-02T09:00:00-08:00",
            "LA fall back weekend",
        ),
        (
            &sy,
            "2026-04-03T16:00:00+11:00",
            "2 business hours",
            "2026-04-06T10:00:00+10:00",
            "Sydney fall back weekend",
        ),
        (
            &sy,
            "2026-10-02T16:00:00+10:00",
            "2 business hours",
            "2026-10-05T10:00:00+11:00",
            "Sydney spring forward weekend",
        ),
        (
            &fa,
            "2026-07-02T17:00:00-07:00",
            "2 business hours",
            "2026-07-06T09:00:00-07:00",
            "July 3 2026 observed Independence Day",
        ),
        (
            &fa,
            "2027-12-30T17:00:00-08:00",
            "2 business hours",
            "2028-01-03T09:00:00-08:00",
            "Dec 31 2027 observed New Year's Day",
        ),
        (
            &fa,
            "2027-12-23T17:00:00-08:00",
            "2 business hours",
            "2027-12-27T09:00:00-08:00",
            "Dec 24 2027 observed Christmas",
        ),
        (
            &xmas_eve,
            "2026-12-24T10:00:00-08:00",
            "3 business hours",
            "2026-12-28T09:00:00-08:00",
            "partial holiday afternoon",
        ),
        (
            &lunch,
            "2026-11-23T11:00:00Z",
            "2 business hours",
            "2026-11-23T14:00:00Z",
            "lunch break",
        ),
        (
            &lunch,
            "2026-11-23T12:15:00Z",
            "1 business hour",
            "2026-11-23T14:00:00Z",
            "created during lunch",
        ),
        (
            &fa,
            "2028-02-28T17:00:00-08:00",
            "1 business day",
            "2028-02-29T17:00:00-08:00",
            "leap day",
        ),
        (
            &fa,
            "2026-12-30T17:00:00-08:00",
            "3 business days",
            "2027-01-05T17:00:00-08:00",
            "year end with New Year's Day",
        ),
        (
            &fa,
            "2026-11-02T08:00:00-08:00",
            "30 business days",
            "2026-12-15T18:00:00-08:00",
            "longer than a month, three holidays",
        ),
        (
            &fa,
            "2026-11-23T10:00:00-08:00",
            "2 weeks",
            "2026-12-08T10:00:00-08:00",
            "2 business weeks = 10 business days",
        ),
        (
            &fa,
            "2026-11-23T10:00:00-08:00",
            "0 business hours",
            "2026-11-23T10:00:00-08:00",
            "zero inside hours",
        ),
        (
            &fa,
            "2026-11-28T10:00:00-08:00",
            "0 business hours",
            "2026-11-30T08:00:00-08:00",
            "zero on a weekend: next opening",
        ),
    ];
    for (c, start, d, want, what) in cases {
        assert_eq!(c.add(t(start), span(d)), t(want), "{what}: {start} + {d}");
    }
}

#[test]
fn elapsed_time_across_dst_is_real_time() {
    let always_la = cal("America/Los_Angeles", &[("mon-sun", &["00:00-24:00"])], &[]);
    let always_sy = cal("Australia/Sydney", &[("mon-sun", &["00:00-24:00"])], &[]);
    // The fall-back day has 25 hours, the spring-forward day 23.
    assert_eq!(
        always_la.business_between(
            t("2026-10-31T00:00:00-07:00"),
            t("2026-11-02T00:00:00-08:00")
        ),
        Duration::hours(49)
    );
    assert_eq!(
        always_sy.business_between(
            t("2026-10-03T00:00:00+10:00"),
            t("2026-10-05T00:00:00+11:00")
        ),
        Duration::hours(47)
    );
    let fa = farapp();
    assert_eq!(
        fa.business_between(
            t("2026-11-20T17:00:00-08:00"),
            t("2026-11-23T10:00:00-08:00")
        ),
        Duration::hours(3)
    );
    assert_eq!(
        fa.business_between(
            t("2026-11-23T10:00:00-08:00"),
            t("2026-11-20T10:00:00-08:00")
        ),
        Duration::zero()
    );
}

#[test]
fn a_spring_forward_gap_inside_hours_is_skipped() {
    let night = cal("America/Los_Angeles", &[("sun", &["01:00-04:00"])], &[]);
    // 01:00–04:00 on 2026-03-08 lasts 2 real hours: 02:00–03:00 does not exist.
    assert_eq!(
        night.add(t("2026-03-08T01:00:00-08:00"), span("2 business hours")),
        t("2026-03-08T04:00:00-07:00")
    );
    assert!(night.is_open(t("2026-03-08T03:30:00-07:00")));
}

#[test]
fn an_interval_starting_inside_the_spring_forward_gap_opens_when_the_gap_ends() {
    // 2006-04-02, Los Angeles: 02:00 PST jumps to 03:00 PDT. 02:30–03:15 is 15 real minutes,
    // from 03:00 to 03:15 PDT; it used to come out as 03:30→03:15, a negative interval.
    let gap = cal("America/Los_Angeles", &[("sun", &["02:30-03:15"])], &[]);
    let sunday = t("2006-04-02T00:00:00-08:00");
    assert_eq!(
        gap.add(sunday, span("0 business minutes")),
        t("2006-04-02T03:00:00-07:00")
    );
    assert_eq!(
        gap.add(sunday, span("15 business minutes")),
        t("2006-04-02T03:15:00-07:00")
    );
    assert_eq!(
        gap.add(sunday, span("16 business minutes")),
        t("2006-04-09T02:31:00-07:00")
    );
    assert_eq!(
        gap.business_between(sunday, t("2006-04-03T00:00:00-07:00")),
        Duration::minutes(15)
    );
    assert!(gap.is_open(t("2006-04-02T03:10:00-07:00")));
    assert!(!gap.is_open(t("2006-04-02T03:20:00-07:00")));
    // Wholly inside the gap: no time at all that day, never a negative amount.
    let inside = cal("America/Los_Angeles", &[("sun", &["02:10-02:50"])], &[]);
    assert_eq!(
        inside.business_between(sunday, t("2006-04-03T00:00:00-07:00")),
        Duration::zero()
    );
    assert_eq!(
        inside.add(sunday, span("0 business minutes")),
        t("2006-04-09T02:10:00-07:00")
    );
}

#[test]
fn an_interval_inside_the_fall_back_fold_is_read_once() {
    // 2006-10-29, Los Angeles: 01:00–02:00 happens twice; the interval is the first 01:15–01:45.
    let fold = cal("America/Los_Angeles", &[("sun", &["01:15-01:45"])], &[]);
    let sunday = t("2006-10-29T00:00:00-07:00");
    assert_eq!(
        fold.add(sunday, span("0 business minutes")),
        t("2006-10-29T01:15:00-07:00")
    );
    assert_eq!(
        fold.add(sunday, span("30 business minutes")),
        t("2006-10-29T01:45:00-07:00")
    );
    assert_eq!(
        fold.add(sunday, span("31 business minutes")),
        t("2006-11-05T01:16:00-08:00")
    );
    assert_eq!(
        fold.business_between(sunday, t("2006-10-30T00:00:00-08:00")),
        Duration::minutes(30)
    );
}

#[test]
fn day_length_and_describe() {
    assert_eq!(farapp().business_day(), Duration::hours(10));
    let short_friday = cal(
        "UTC",
        &[("mon-thu", &["09:00-17:00"]), ("fri", &["09:00-13:00"])],
        &[],
    );
    assert_eq!(short_friday.business_day(), Duration::hours(8));
    assert_eq!(
        farapp().describe(t("2026-11-23T19:00:00Z")),
        "Mon 23 Nov, 11:00 PST"
    );
    assert_eq!(
        sydney().describe(t("2026-11-23T00:00:00Z")),
        "Mon 23 Nov, 11:00 AEDT"
    );
    assert_eq!(farapp().local_day(t("2026-11-24T04:00:00Z")), "2026-11-23");
}

#[test]
fn bad_calendars_say_what_is_wrong() {
    let build = |tz: &str, hours: &[(&str, &[&str])], holidays: &[&str]| {
        Calendar::build(&spec(tz, hours, holidays), Path::new(".")).unwrap_err()
    };
    let ok = &[("mon-fri", &["08:00-18:00"][..])][..];
    assert!(
        build("Pacific Time", ok, &[]).starts_with("timezone: unknown time zone \"Pacific Time\"")
    );
    assert_eq!(
        build("UTC", &[("mon", &["22:00-02:00"])], &[]),
        "hours.mon: \"22:00-02:00\" crosses midnight: split it into \"22:00-24:00\" on one day and \"00:00-02:00\" on the next"
    );
    assert_eq!(
        build("UTC", &[("mon", &["09:00-13:00", "12:00-17:00"])], &[]),
        "hours.mon: 12:00-17:00 overlaps 09:00-13:00"
    );
    assert_eq!(
        build(
            "UTC",
            &[("mon-fri", &["08:00-18:00"]), ("fri", &["08:00-12:00"])],
            &[]
        ),
        "hours: fri is given twice"
    );
    assert!(
        build("UTC", &[("funday", &["08:00-18:00"])], &[]).contains("unknown weekday \"funday\"")
    );
    assert!(build("UTC", &[("mon", &["8am-6pm"])], &[]).contains("is not a time"));
    assert!(build("UTC", &[("mon", &["closed"])], &[]).contains("never open"));
    assert!(build("UTC", ok, &["christmas"]).starts_with("holiday \"christmas\": expected"));
    assert!(build("UTC", ok, &["2026-12-24 18:00-12:00"]).contains("crosses midnight"));
}

#[test]
fn ics_holidays_close_the_calendar() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("h.ics"),
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261124\nSUMMARY:Company day\nEND:VEVENT\nEND:VCALENDAR\n",
    )
    .unwrap();
    let spec = CalendarSpec {
        timezone: "America/Los_Angeles".into(),
        hours: [("mon-fri".to_string(), Hours::One("08:00-18:00".into()))]
            .into_iter()
            .collect(),
        holidays: vec![HolidaySpec::Ics {
            ics: "h.ics".into(),
        }],
    };
    let c = Calendar::build(&spec, dir.path()).unwrap();
    assert_eq!(
        c.add(t("2026-11-23T17:00:00-08:00"), span("2 business hours")),
        t("2026-11-25T09:00:00-08:00")
    );
    let missing = CalendarSpec {
        holidays: vec![HolidaySpec::Ics {
            ics: "nope.ics".into(),
        }],
        ..spec
    };
    assert!(Calendar::build(&missing, dir.path())
        .unwrap_err()
        .contains("nope.ics"));
}

/// tests/fixtures/us-federal-2000-2040.csv was made by tests/fixtures/make-us-federal.sh (Python `holidays`).
#[test]
fn us_federal_agrees_with_python_holidays_2000_to_2040() {
    let text = include_str!("../../tests/fixtures/us-federal-2000-2040.csv");
    let mut want: Vec<String> = text.lines().skip(1).map(|l| l.replace(",", " ")).collect();
    want.sort();
    let mut got: Vec<String> = (2000..=2040)
        .flat_map(holidays::us_federal)
        .map(|h| format!("{} {}", h.date, h.name))
        .collect();
    got.sort();
    assert_eq!(got.len(), 485);
    assert_eq!(got, want);
}

/// Day-by-day reference without the whole-week shortcut.
fn add_slow(c: &Calendar, start: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let mut remaining = d;
    let mut date = c.local_date(start);
    loop {
        for (a, b) in c.utc_intervals(date) {
            if b <= start {
                continue;
            }
            let s = a.max(start);
            if remaining <= b - s {
                return s + remaining;
            }
            remaining -= b - s;
        }
        date = date.succ_opt().unwrap();
    }
}

fn calendars() -> Vec<Calendar> {
    vec![
        farapp(),
        sydney(),
        cal(
            "Europe/London",
            &[
                ("mon-fri", &["09:00-12:00", "13:00-17:30"]),
                ("sat", &["10:00-14:00"]),
            ],
            &["us-federal", "2027-03-15 12:00-15:00"],
        ),
        cal("America/Los_Angeles", &[("mon-sun", &["00:00-24:00"])], &[]),
        cal(
            "Australia/Lord_Howe",
            &[("sun-thu", &["01:00-03:00", "08:00-18:00"])],
            &[],
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn elapsed_business_time_equals_what_was_added(
        which in 0usize..5,
        start_secs in 1_577_836_800i64..2_082_758_400,
        minutes in 0i64..150_000,
    ) {
        let c = &calendars()[which];
        let start = DateTime::from_timestamp(start_secs, 0).unwrap();
        let d = Duration::minutes(minutes);
        let due = c.add_business(start, d);
        prop_assert_eq!(c.business_between(start, due), d);
        prop_assert_eq!(due, add_slow(c, start, d));
    }

    #[test]
    fn add_is_monotonic(
        which in 0usize..5,
        a in 1_577_836_800i64..2_082_758_400,
        gap in 0i64..10_000_000,
        minutes in 0i64..50_000,
    ) {
        let c = &calendars()[which];
        let s1 = DateTime::from_timestamp(a, 0).unwrap();
        let s2 = DateTime::from_timestamp(a + gap, 0).unwrap();
        let d = Duration::minutes(minutes);
        prop_assert!(c.add_business(s1, d) <= c.add_business(s2, d));
        prop_assert!(c.add_business(s1, d) >= s1);
    }
}
