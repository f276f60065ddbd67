//! SLA durations as rule authors write them: `3 business hours`, `90 business minutes`,
//! `1 business day`, `2 weeks`, `24 calendar hours`, `7 calendar days`.
//!
//! Business time is the default: `2 weeks` means 2 business weeks (10 business days); calendar
//! time must say `calendar`.

use std::fmt;
use std::str::FromStr;

/// Unit of a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Minutes.
    Minutes,
    /// Hours.
    Hours,
    /// Days: business days (the calendar's day length) or calendar days (same local time).
    Days,
    /// Weeks: 5 business days or 7 calendar days.
    Weeks,
}

/// A parsed SLA duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// How many units (≥ 0).
    pub amount: i64,
    /// The unit.
    pub unit: Unit,
    /// Business time (counted only while open) or calendar time.
    pub business: bool,
}

/// A duration that does not parse; the message shows the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration: {reason} (write e.g. \"3 business hours\", \"2 business days\", \"24 calendar hours\")")]
pub struct SpanError {
    input: String,
    reason: &'static str,
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| SpanError {
            input: s.to_string(),
            reason,
        };
        let words: Vec<String> = s.split_whitespace().map(str::to_ascii_lowercase).collect();
        let (amount, rest) = match words.as_slice() {
            [n, rest @ ..] => (n, rest),
            [] => return Err(err("it is empty")),
        };
        let amount: i64 = amount
            .parse()
            .map_err(|_| err("it must start with a whole number"))?;
        if amount < 0 {
            return Err(err("it must not be negative"));
        }
        let (business, unit) = match rest {
            [q, u] if q == "business" => (true, u),
            [q, u] if q == "calendar" => (false, u),
            [u] => (true, u),
            [] => return Err(err("the unit is missing")),
            _ => return Err(err("expected \"<number> [business|calendar] <unit>\"")),
        };
        let unit = match unit.as_str() {
            "minute" | "minutes" | "min" | "mins" => Unit::Minutes,
            "hour" | "hours" | "h" => Unit::Hours,
            "day" | "days" => Unit::Days,
            "week" | "weeks" => Unit::Weeks,
            _ => return Err(err("the unit must be minutes, hours, days or weeks")),
        };
        Ok(Span {
            amount,
            unit,
            business,
        })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            Unit::Minutes => "minute",
            Unit::Hours => "hour",
            Unit::Days => "day",
            Unit::Weeks => "week",
        };
        let kind = if self.business {
            "business"
        } else {
            "calendar"
        };
        let plural = if self.amount == 1 { "" } else { "s" };
        write!(f, "{} {kind} {unit}{plural}", self.amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_authors_write() {
        let p = |s: &str| s.parse::<Span>().unwrap();
        assert_eq!(
            p("3 business hours"),
            Span {
                amount: 3,
                unit: Unit::Hours,
                business: true
            }
        );
        assert_eq!(p("90 business minutes").unit, Unit::Minutes);
        assert_eq!(p("1 business day").to_string(), "1 business day");
        assert_eq!(
            p("2 weeks"),
            Span {
                amount: 2,
                unit: Unit::Weeks,
                business: true
            }
        );
        assert_eq!(
            p("24 Calendar Hours"),
            Span {
                amount: 24,
                unit: Unit::Hours,
                business: false
            }
        );
        assert_eq!(p("7 calendar days").to_string(), "7 calendar days");
    }

    #[test]
    fn rejects_with_a_reason() {
        for (input, reason) in [
            ("", "it is empty"),
            ("three hours", "it must start with a whole number"),
            ("-1 hours", "it must not be negative"),
            ("3", "the unit is missing"),
            (
                "3 business fortnights",
                "the unit must be minutes, hours, days or weeks",
            ),
            (
                "3 working business hours",
                "expected \"<number> [business|calendar] <unit>\"",
            ),
        ] {
            let e = input.parse::<Span>().unwrap_err();
            assert_eq!(e.reason, reason, "{input}");
        }
    }
}
