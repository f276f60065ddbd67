//! `deskbot sla`: the open SLA clocks, soonest breach first, in each calendar's own zone.

use chrono::{DateTime, Utc};

use crate::calendar::describe_in_zone;
use crate::config::LogFormat;
use crate::sla::clock::{State, Summary};
use crate::telemetry;

/// `3 h 05 min` of consumed time.
fn hours(secs: i64) -> String {
    let m = secs.max(0) / 60;
    format!("{} h {:02} min", m / 60, m % 60)
}

/// One clock as a table row.
fn row(s: &Summary, now: DateTime<Utc>) -> String {
    let at_risk = s.state == State::Active && s.at_risk_at.is_some_and(|r| r <= now);
    let state = if at_risk { "at risk" } else { s.state.as_str() };
    let due = match (s.state, s.due_at, s.fulfilled_at) {
        (State::Fulfilled, _, Some(f)) => format!("fulfilled {}", describe_in_zone(&s.zone, f)),
        (State::Paused, None, _) => "paused: no due time".to_string(),
        (_, Some(d), _) => describe_in_zone(&s.zone, d),
        (_, None, _) => "no target".to_string(),
    };
    format!(
        "{:>10}  {:<16} {:>2}  {:<9}  {:<20}  {:>12}  {}",
        s.ticket_id,
        s.metric.as_str(),
        s.instance,
        state,
        s.target.as_deref().unwrap_or("none"),
        hours(s.consumed_secs),
        due
    )
}

/// Prints the open clocks (or every clock of `ticket`), soonest breach first.
pub async fn run(
    db: &crate::config::DatabaseArgs,
    ticket: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Pretty);
    let store = db.open(false).await.map_err(anyhow::Error::msg)?;
    let now = Utc::now();
    let clocks = store.list_clocks(ticket, now).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&clocks)?);
        return Ok(());
    }
    if clocks.is_empty() {
        match ticket {
            Some(t) => println!("ticket {t} has no SLA clocks"),
            None => println!("no open SLA clocks"),
        }
        return Ok(());
    }
    println!(
        "{:>10}  {:<16} {:>2}  {:<9}  {:<20}  {:>12}  due",
        "ticket", "metric", "#", "state", "target", "consumed"
    );
    for s in &clocks {
        println!("{}", row(s, now));
    }
    let count = |st: State| clocks.iter().filter(|s| s.state == st).count();
    println!(
        "\n{} clock(s): {} breached, {} paused, {} active\n(consumed: as of the ticket's last event, in business time unless the target is in calendar time)",
        clocks.len(),
        count(State::Breached),
        count(State::Paused),
        count(State::Active)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::clock::Metric;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn rows_read_in_the_calendar_zone() {
        let s = Summary {
            ticket_id: 501,
            metric: Metric::FirstResponse,
            instance: 1,
            state: State::Active,
            started_at: t("2026-11-30T17:00:00Z"),
            target: Some("3 business hours".into()),
            consumed_secs: 9300,
            at_risk_at: Some(t("2026-11-30T19:30:00Z")),
            due_at: Some(t("2026-11-30T20:00:00Z")),
            fulfilled_at: None,
            zone: "America/Los_Angeles".into(),
        };
        assert_eq!(
            row(&s, t("2026-11-30T19:40:00Z")),
            "       501  first_response    1  at risk    3 business hours        2 h 35 min  Mon 30 Nov, 12:00 PST"
        );
        assert_eq!(
            describe_in_zone("Nowhere/Land", t("2026-11-30T20:00:00Z")),
            "Mon 30 Nov, 20:00 UTC"
        );
    }
}
