use super::*;
use proptest::prelude::*;

/// FarApp's hours: 08:00-18:00 Pacific, Monday to Friday (no holiday falls in these tests).
fn farapp() -> Calendar {
    crate::calendar::weekdays("America/Los_Angeles", "08:00-18:00")
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn span(s: &str) -> Span {
    s.parse().unwrap()
}

fn urgent() -> Targets {
    Targets {
        first_response: Some(span("3 business hours")),
        next_response: Some(span("2 business hours")),
        resolution: Some(span("1 business day")),
    }
}

fn rules() -> Rules {
    Rules {
        warn: Some(Warn::Before(span("30 business minutes"))),
        ..Rules::default()
    }
}

/// Created Monday 30 Nov 2026, 09:00 Pacific, status new.
fn created() -> TicketClocks {
    TicketClocks::start(
        7,
        t("2026-11-30T09:00:00-08:00"),
        Some("new".into()),
        &urgent(),
        &rules(),
    )
    .0
}

fn comment(at: &str, by_agent: Option<bool>) -> Change {
    Change::Comment {
        at: t(at),
        public: true,
        by_agent,
    }
}

fn status(at: &str, s: &str) -> Change {
    Change::Status {
        at: t(at),
        status: s.into(),
    }
}

#[test]
fn no_reply_warns_then_breaches_to_the_minute() {
    let cal = farapp();
    let tc = created();
    let timers = tc.timers(&cal, &rules());
    let fr: Vec<(TimerKind, DateTime<Utc>)> = timers
        .iter()
        .filter(|x| x.metric == Metric::FirstResponse)
        .map(|x| (x.kind, x.at))
        .collect();
    assert_eq!(
        fr,
        vec![
            (TimerKind::AtRisk, t("2026-11-30T11:30:00-08:00")),
            (TimerKind::Breached, t("2026-11-30T12:00:00-08:00")),
        ]
    );
    let frc = tc.latest(Metric::FirstResponse).unwrap();
    assert_eq!(
        frc.state(&cal, t("2026-11-30T11:59:00-08:00")),
        State::Active
    );
    assert_eq!(
        frc.state(&cal, t("2026-11-30T12:00:00-08:00")),
        State::Breached
    );
    assert_eq!(
        frc.missed_by(&cal, t("2026-11-30T12:45:00-08:00")),
        Some(Duration::minutes(45))
    );
    // Resolution: 1 business day = 10 business hours → Tuesday 09:00.
    assert_eq!(
        tc.latest(Metric::Resolution).unwrap().due(&cal),
        Some(t("2026-12-01T09:00:00-08:00"))
    );
}

#[test]
fn first_reply_in_time_fulfils_and_stops_its_timers() {
    let cal = farapp();
    let mut tc = created();
    let fx = tc.apply(
        &comment("2026-11-30T10:15:00-08:00", Some(true)),
        &urgent(),
        &rules(),
    );
    assert_eq!(
        fx,
        vec![Effect::Fulfilled {
            metric: Metric::FirstResponse,
            instance: 1,
            at: t("2026-11-30T10:15:00-08:00")
        }]
    );
    let c = tc.latest(Metric::FirstResponse).unwrap();
    assert_eq!(
        c.state(&cal, t("2026-11-30T13:00:00-08:00")),
        State::Fulfilled
    );
    assert_eq!(c.missed_by(&cal, t("2026-11-30T13:00:00-08:00")), None);
    assert!(tc
        .timers(&cal, &rules())
        .iter()
        .all(|x| x.metric == Metric::Resolution));
    // The same comment delivered again changes nothing.
    let before = tc.clone();
    assert!(tc
        .apply(
            &comment("2026-11-30T10:15:00-08:00", Some(true)),
            &urgent(),
            &rules()
        )
        .is_empty());
    assert_eq!(tc, before);
}

#[test]
fn late_reply_records_by_how_much() {
    let cal = farapp();
    let mut tc = created();
    tc.apply(
        &comment("2026-11-30T12:20:00-08:00", Some(true)),
        &urgent(),
        &rules(),
    );
    let c = tc.latest(Metric::FirstResponse).unwrap();
    assert_eq!(
        c.missed_by(&cal, t("2026-12-02T00:00:00Z")),
        Some(Duration::minutes(20))
    );
}

#[test]
fn agent_created_ticket_is_not_breached_by_its_own_opening_comment() {
    let cal = farapp();
    let mut tc = created();
    let fx = tc.apply(
        &comment("2026-11-30T09:00:01-08:00", Some(true)),
        &urgent(),
        &rules(),
    );
    assert_eq!(
        fx,
        vec![Effect::Fulfilled {
            metric: Metric::FirstResponse,
            instance: 1,
            at: t("2026-11-30T09:00:01-08:00")
        }]
    );
    assert_eq!(
        tc.latest(Metric::FirstResponse)
            .unwrap()
            .state(&cal, t("2026-11-30T15:00:00-08:00")),
        State::Fulfilled
    );
    assert!(tc
        .timers(&cal, &rules())
        .iter()
        .all(|x| x.metric == Metric::Resolution));
    // The customer's answer to the agent's opening message waits for a next response.
    let fx = tc.apply(
        &comment("2026-11-30T10:00:00-08:00", Some(false)),
        &urgent(),
        &rules(),
    );
    assert!(matches!(
        fx.as_slice(),
        [Effect::Started {
            metric: Metric::NextResponse,
            ..
        }]
    ));
}

#[test]
fn private_and_authorless_comments_change_nothing() {
    let mut tc = created();
    let before = tc.clone();
    let private = Change::Comment {
        at: t("2026-11-30T10:00:00-08:00"),
        public: false,
        by_agent: Some(true),
    };
    assert!(matches!(
        tc.apply(&private, &urgent(), &rules()).as_slice(),
        [Effect::Ignored { .. }]
    ));
    assert!(matches!(
        tc.apply(
            &comment("2026-11-30T10:00:00-08:00", None),
            &urgent(),
            &rules()
        )
        .as_slice(),
        [Effect::Ignored { .. }]
    ));
    assert_eq!(tc, before);
}

#[test]
fn pending_across_a_weekend_moves_resolution_due() {
    let cal = farapp();
    let mut tc = created();
    // Friday 4 Dec 10:00 the team asks the customer (pending); the customer answers Monday 7 Dec 10:00.
    let long = Targets {
        resolution: Some(span("5 business days")),
        ..urgent()
    };
    tc.apply(&Change::Retarget, &long, &rules());
    assert_eq!(
        tc.latest(Metric::Resolution).unwrap().due(&cal),
        Some(t("2026-12-07T09:00:00-08:00"))
    );
    tc.apply(
        &status("2026-12-04T10:00:00-08:00", "pending"),
        &long,
        &rules(),
    );
    let c = tc.latest(Metric::Resolution).unwrap();
    assert_eq!(c.state(&cal, t("2026-12-05T12:00:00-08:00")), State::Paused);
    assert_eq!(c.due(&cal), None, "no due instant while paused");
    assert!(tc
        .timers(&cal, &rules())
        .iter()
        .all(|x| x.metric != Metric::Resolution));
    tc.apply(
        &status("2026-12-07T10:00:00-08:00", "open"),
        &long,
        &rules(),
    );
    // Used by the pause: Mon 09-18 (9 h) + Tue-Thu (30 h) + Fri 08-10 (2 h) = 41 of 50 h. The
    // weekend costs nothing either way, but Monday 08:00-10:00 was paused: 9 h left from Mon 10:00
    // → 8 h to Mon 18:00, 1 h more → Tue 09:00 (instead of Mon 09:00 without the pause).
    let c = tc.latest(Metric::Resolution).unwrap();
    assert_eq!(c.due(&cal), Some(t("2026-12-08T09:00:00-08:00")));
    assert_eq!(
        c.consumed(&cal, t("2026-12-07T11:00:00-08:00")),
        Duration::hours(42)
    );
}

#[test]
fn hold_pauses_only_when_the_policy_says_so() {
    let cal = farapp();
    let mut tc = created();
    tc.apply(
        &status("2026-11-30T10:00:00-08:00", "hold"),
        &urgent(),
        &rules(),
    );
    assert!(!tc.latest(Metric::Resolution).unwrap().is_paused());
    let with_hold = Rules {
        pause_on: vec!["pending".into(), "hold".into()],
        ..rules()
    };
    let mut tc = created();
    tc.apply(
        &status("2026-11-30T10:00:00-08:00", "hold"),
        &urgent(),
        &with_hold,
    );
    assert_eq!(
        tc.latest(Metric::Resolution)
            .unwrap()
            .state(&cal, t("2026-11-30T11:00:00-08:00")),
        State::Paused
    );
}

#[test]
fn reopened_ticket_resumes_the_same_clock() {
    let cal = farapp();
    let mut tc = created();
    // Solved Monday 12:00 after 3 business hours; reopened Tuesday 08:00.
    tc.apply(
        &status("2026-11-30T12:00:00-08:00", "solved"),
        &urgent(),
        &rules(),
    );
    assert_eq!(
        tc.latest(Metric::Resolution)
            .unwrap()
            .state(&cal, t("2026-11-30T13:00:00-08:00")),
        State::Fulfilled
    );
    assert!(tc.timers(&cal, &rules()).is_empty());
    let fx = tc.apply(
        &status("2026-12-01T08:00:00-08:00", "open"),
        &urgent(),
        &rules(),
    );
    assert_eq!(
        fx,
        vec![Effect::Resumed {
            metric: Metric::Resolution,
            at: t("2026-12-01T08:00:00-08:00")
        }]
    );
    let c = tc.latest(Metric::Resolution).unwrap();
    assert_eq!(c.instance, 1);
    // 7 of 10 business hours left from Tue 08:00 → Tue 15:00.
    assert_eq!(c.due(&cal), Some(t("2026-12-01T15:00:00-08:00")));
    assert_eq!(
        c.consumed(&cal, t("2026-12-01T08:00:00-08:00")),
        Duration::hours(3)
    );
}

#[test]
fn priority_change_retargets_from_the_original_start() {
    let cal = farapp();
    let (mut tc, _) = TicketClocks::start(
        7,
        t("2026-11-30T09:00:00-08:00"),
        Some("open".into()),
        &Targets {
            first_response: Some(span("1 business day")),
            ..Targets::default()
        },
        &rules(),
    );
    assert_eq!(
        tc.latest(Metric::FirstResponse).unwrap().due(&cal),
        Some(t("2026-12-01T09:00:00-08:00"))
    );
    let fx = tc.apply(&Change::Retarget, &urgent(), &rules());
    assert!(fx.contains(&Effect::Retargeted {
        metric: Metric::FirstResponse,
        target: Some("3 business hours".into())
    }));
    assert_eq!(
        tc.latest(Metric::FirstResponse).unwrap().due(&cal),
        Some(t("2026-11-30T12:00:00-08:00"))
    );
    assert!(tc.apply(&Change::Retarget, &urgent(), &rules()).is_empty());
}

#[test]
fn out_of_order_and_unknown_statuses_are_ignored() {
    let mut tc = created();
    tc.apply(
        &status("2026-11-30T11:00:00-08:00", "pending"),
        &urgent(),
        &rules(),
    );
    let before = tc.clone();
    let late = tc.apply(
        &status("2026-11-30T10:00:00-08:00", "open"),
        &urgent(),
        &rules(),
    );
    assert_eq!(
        late,
        vec![Effect::Ignored {
            reason: "a status change older than the one already applied".into()
        }]
    );
    let odd = tc.apply(
        &status("2026-11-30T12:00:00-08:00", "escalated"),
        &urgent(),
        &rules(),
    );
    assert!(
        matches!(&odd[..], [Effect::Ignored { reason }] if reason.starts_with("unknown status \"escalated\""))
    );
    assert_eq!(tc, before);
}

#[test]
fn next_response_runs_per_customer_reply_after_an_agent_reply() {
    let cal = farapp();
    let mut tc = created();
    // A customer comment before any agent reply starts nothing: first response is still running.
    assert!(tc
        .apply(
            &comment("2026-11-30T09:30:00-08:00", Some(false)),
            &urgent(),
            &rules()
        )
        .is_empty());
    tc.apply(
        &comment("2026-11-30T10:00:00-08:00", Some(true)),
        &urgent(),
        &rules(),
    );
    let fx = tc.apply(
        &comment("2026-11-30T11:00:00-08:00", Some(false)),
        &urgent(),
        &rules(),
    );
    assert_eq!(
        fx,
        vec![Effect::Started {
            metric: Metric::NextResponse,
            instance: 1,
            at: t("2026-11-30T11:00:00-08:00")
        }]
    );
    // A second customer comment while waiting, and a redelivery, start nothing new.
    assert!(tc
        .apply(
            &comment("2026-11-30T11:30:00-08:00", Some(false)),
            &urgent(),
            &rules()
        )
        .is_empty());
    assert!(tc
        .apply(
            &comment("2026-11-30T11:00:00-08:00", Some(false)),
            &urgent(),
            &rules()
        )
        .is_empty());
    assert_eq!(
        tc.latest(Metric::NextResponse).unwrap().due(&cal),
        Some(t("2026-11-30T13:00:00-08:00"))
    );
    tc.apply(
        &comment("2026-11-30T12:00:00-08:00", Some(true)),
        &urgent(),
        &rules(),
    );
    assert!(!tc.latest(Metric::NextResponse).unwrap().is_open());
    // The redelivered first customer reply, now answered, must not start a second instance.
    assert!(tc
        .apply(
            &comment("2026-11-30T11:00:00-08:00", Some(false)),
            &urgent(),
            &rules()
        )
        .is_empty());
    tc.apply(
        &comment("2026-11-30T14:00:00-08:00", Some(false)),
        &urgent(),
        &rules(),
    );
    assert_eq!(tc.latest(Metric::NextResponse).unwrap().instance, 2);
}

#[test]
fn warn_as_a_percentage_of_the_target() {
    let cal = farapp();
    let r = Rules {
        warn: Some("25%".parse().unwrap()),
        ..Rules::default()
    };
    let (tc, _) = TicketClocks::start(1, t("2026-11-30T09:00:00-08:00"), None, &urgent(), &r);
    let fr = tc.latest(Metric::FirstResponse).unwrap();
    assert_eq!(
        fr.at_risk(&cal, r.warn.unwrap()),
        Some(t("2026-11-30T11:15:00-08:00"))
    );
    assert_eq!(
        "0%".parse::<Warn>().unwrap_err(),
        "\"0%\": a percentage of the target is a whole number from 1% to 99%"
    );
    assert!("soon".parse::<Warn>().is_err());
}

#[test]
fn pause_across_the_fall_back_night() {
    // 2026-11-01 is the night Los Angeles falls back. A 24/7 calendar would see 25 wall hours; a
    // business calendar is closed then, so a pause from Friday 30 Oct 17:00 to Monday 2 Nov 09:00
    // costs exactly 2 business hours (Fri 17-18, Mon 08-09).
    let cal = farapp();
    let (mut tc, _) = TicketClocks::start(
        1,
        t("2026-10-30T09:00:00-07:00"),
        Some("open".into()),
        &Targets {
            resolution: Some(span("2 business days")),
            ..Targets::default()
        },
        &rules(),
    );
    let due_before = tc.latest(Metric::Resolution).unwrap().due(&cal);
    assert_eq!(due_before, Some(t("2026-11-03T09:00:00-08:00")));
    tc.apply(
        &status("2026-10-30T17:00:00-07:00", "pending"),
        &urgent(),
        &rules(),
    );
    tc.apply(
        &status("2026-11-02T09:00:00-08:00", "open"),
        &urgent(),
        &rules(),
    );
    assert_eq!(
        tc.latest(Metric::Resolution).unwrap().due(&cal),
        Some(t("2026-11-03T11:00:00-08:00"))
    );
}

#[test]
fn a_holiday_costs_nothing_and_a_pause_across_it_moves_due_by_business_time_only() {
    // FarApp's real calendar, U.S. federal holidays included: Thanksgiving is Thu 26 Nov 2026.
    let spec = crate::calendar::CalendarSpec {
        timezone: "America/Los_Angeles".into(),
        hours: [(
            "mon-fri".into(),
            crate::calendar::Hours::One("08:00-18:00".into()),
        )]
        .into_iter()
        .collect(),
        holidays: vec![crate::calendar::HolidaySpec::Named("us-federal".into())],
    };
    let cal = Calendar::build(&spec, std::path::Path::new(".")).unwrap();
    let day = Targets {
        resolution: Some(span("1 business day")),
        ..Targets::default()
    };
    let (mut tc, _) = TicketClocks::start(
        1,
        t("2026-11-25T14:00:00-08:00"),
        Some("open".into()),
        &day,
        &rules(),
    );
    // Wed 14:00 + 10 business hours: Wed 4 h, Thanksgiving closed, Fri 6 h → Fri 14:00.
    assert_eq!(
        tc.latest(Metric::Resolution).unwrap().due(&cal),
        Some(t("2026-11-27T14:00:00-08:00"))
    );
    // Pending from Wed 17:00 to Fri 10:00 costs Wed 17-18 and Fri 08-10: 3 business hours.
    tc.apply(
        &status("2026-11-25T17:00:00-08:00", "pending"),
        &day,
        &rules(),
    );
    tc.apply(&status("2026-11-27T10:00:00-08:00", "open"), &day, &rules());
    assert_eq!(
        tc.latest(Metric::Resolution).unwrap().due(&cal),
        Some(t("2026-11-27T17:00:00-08:00"))
    );
}

#[test]
fn calendar_targets_count_wall_time_and_pauses() {
    let cal = farapp();
    let (mut tc, _) = TicketClocks::start(
        1,
        t("2026-11-28T09:00:00Z"),
        None,
        &Targets {
            resolution: Some(span("24 calendar hours")),
            ..Targets::default()
        },
        &rules(),
    );
    tc.apply(
        &status("2026-11-28T10:00:00Z", "pending"),
        &urgent(),
        &rules(),
    );
    tc.apply(&status("2026-11-28T13:00:00Z", "open"), &urgent(), &rules());
    assert_eq!(
        tc.latest(Metric::Resolution).unwrap().due(&cal),
        Some(t("2026-11-29T12:00:00Z"))
    );
}

#[test]
fn clocks_survive_a_round_trip_through_json() {
    let mut tc = created();
    tc.apply(
        &status("2026-11-30T10:00:00-08:00", "pending"),
        &urgent(),
        &rules(),
    );
    tc.mark_fired(Metric::FirstResponse, 1, TimerKind::AtRisk);
    let json = serde_json::to_string(&tc).unwrap();
    let back: TicketClocks = serde_json::from_str(&json).unwrap();
    assert_eq!(back, tc);
    assert!(
        !tc.mark_fired(Metric::FirstResponse, 1, TimerKind::AtRisk),
        "fires once"
    );
    assert!(!tc
        .timers(&farapp(), &rules())
        .iter()
        .any(|x| x.metric == Metric::FirstResponse && x.kind == TimerKind::AtRisk));
}

proptest! {
    /// Whatever the sequence of pauses and resumes: consumed time is never negative, never more
    /// than the business time elapsed, never decreases, and at the due instant equals the target.
    #[test]
    fn consumed_is_bounded_and_due_is_where_the_target_runs_out(
        steps in proptest::collection::vec((1i64..4000, any::<bool>()), 0..12),
        target_hours in 1i64..60,
    ) {
        let cal = farapp();
        let start = t("2026-11-20T07:13:00-08:00");
        let targets = Targets { resolution: Some(Span { amount: target_hours, unit: Unit::Hours, business: true }), ..Targets::default() };
        let (mut tc, _) = TicketClocks::start(1, start, Some("open".into()), &targets, &rules());
        let mut at = start;
        let mut last = Duration::zero();
        for (minutes, pending) in steps {
            at += Duration::minutes(minutes);
            let s = if pending { "pending" } else { "open" };
            tc.apply(&Change::Status { at, status: s.into() }, &targets, &rules());
            let c = tc.latest(Metric::Resolution).unwrap();
            let used = c.consumed(&cal, at);
            prop_assert!(used >= Duration::zero());
            prop_assert!(used <= cal.business_between(start, at));
            prop_assert!(used <= at - start);
            prop_assert!(used >= last);
            last = used;
        }
        let c = tc.latest(Metric::Resolution).unwrap();
        if let Some(due) = c.due(&cal) {
            prop_assert!(due >= start);
            prop_assert_eq!(c.consumed(&cal, due), Duration::hours(target_hours));
        } else {
            prop_assert!(c.is_paused());
        }
    }
}
