//! When to try a failed job again: a pure function of the try count and what Zendesk said.

use std::time::Duration;

use crate::config::RetryConfig;

/// Spread of the random jitter applied to backoff delays (±20 %), so retries do not arrive in waves.
const JITTER: f64 = 0.2;
/// Longest `Retry-After` deskbot obeys; a larger value is treated as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Delay before try number `attempt + 1`, given `attempt` failed tries (≥ 1).
///
/// A `Retry-After` from Zendesk is obeyed as given (it is Zendesk's own schedule); otherwise the
/// delay doubles from `base` up to `max`, scaled by `1 + JITTER * jitter` with `jitter` in `[-1, 1]`.
pub fn delay(
    cfg: &RetryConfig,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(MAX_RETRY_AFTER);
    }
    let exp = attempt.saturating_sub(1).min(32);
    let raw = cfg.base.saturating_mul(1u32 << exp.min(31)).min(cfg.max);
    raw.mul_f64(1.0 + JITTER * jitter.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            base: Duration::from_secs(2),
            max: Duration::from_secs(600),
            max_attempts: 8,
        }
    }

    #[test]
    fn doubles_then_caps() {
        let d: Vec<u64> = (1..=10)
            .map(|a| delay(&cfg(), a, None, 0.0).as_secs())
            .collect();
        assert_eq!(d, vec![2, 4, 8, 16, 32, 64, 128, 256, 512, 600]);
        assert_eq!(delay(&cfg(), 1000, None, 0.0), Duration::from_secs(600));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        assert_eq!(delay(&cfg(), 3, None, 1.0), Duration::from_millis(9600));
        assert_eq!(delay(&cfg(), 3, None, -1.0), Duration::from_millis(6400));
        assert_eq!(delay(&cfg(), 3, None, 7.0), Duration::from_millis(9600));
    }

    #[test]
    fn retry_after_wins_and_is_bounded() {
        assert_eq!(
            delay(&cfg(), 5, Some(Duration::from_secs(1)), 1.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            delay(&cfg(), 1, Some(Duration::from_secs(99_999)), 0.0),
            MAX_RETRY_AFTER
        );
    }
}
