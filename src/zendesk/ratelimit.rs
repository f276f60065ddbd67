//! Keeps deskbot under Zendesk's rate limits before Zendesk has to say no.
//!
//! Two limits apply to deskbot's calls (zendesk-api.md §6): the account's requests per minute (by
//! plan, `ZENDESK_RATE_LIMIT_PER_MINUTE`), and ticket updates (100 per minute by default). Each is an
//! exact sliding-window log: a request may go when fewer than `limit` went in the last window, so
//! no window of that length ever holds more (a token bucket would allow a burst on top). Zendesk's
//! own headers then correct it: when they say nothing is left, deskbot waits for their reset.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// Which limits a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any other call: the account limit only.
    Read,
    /// A ticket update: the account limit and the ticket-update limit.
    Update,
}

#[derive(Debug)]
struct Window {
    limit: usize,
    sent: VecDeque<Instant>,
    /// Zendesk said this limit is used up until then.
    blocked_until: Option<Instant>,
}

impl Window {
    fn new(limit: u32) -> Self {
        Window {
            limit: limit.max(1) as usize,
            sent: VecDeque::new(),
            blocked_until: None,
        }
    }

    /// How long to wait before a request may go (zero: now).
    fn wait(&mut self, now: Instant, span: Duration) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= span)
        {
            self.sent.pop_front();
        }
        let by_log = if self.sent.len() < self.limit {
            Duration::ZERO
        } else {
            self.sent.front().map_or(Duration::ZERO, |first| {
                (*first + span).saturating_duration_since(now)
            })
        };
        let by_zendesk = self
            .blocked_until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        by_log.max(by_zendesk)
    }
}

/// Paces deskbot's calls to Zendesk.
#[derive(Debug)]
pub struct RateLimiter {
    span: Duration,
    windows: Mutex<(Window, Window)>,
}

impl RateLimiter {
    /// `per_minute` requests and `updates_per_minute` ticket updates per `span` (a minute, except in tests).
    pub fn new(per_minute: u32, updates_per_minute: u32, span: Duration) -> Self {
        RateLimiter {
            span,
            windows: Mutex::new((Window::new(per_minute), Window::new(updates_per_minute))),
        }
    }

    /// Waits until a request of this kind may be sent, and counts it.
    pub async fn acquire(&self, kind: Kind) {
        loop {
            let wait = {
                let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let (account, updates) = &mut *w;
                let mut wait = account.wait(now, self.span);
                if kind == Kind::Update {
                    wait = wait.max(updates.wait(now, self.span));
                }
                if wait.is_zero() {
                    account.sent.push_back(now);
                    if kind == Kind::Update {
                        updates.sent.push_back(now);
                    }
                    return;
                }
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Reads what Zendesk reports is left after a response, and waits for its reset when nothing is.
    pub fn observe(&self, headers: &HeaderMap) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let now = Instant::now();
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        // Account limit: `X-Rate-Limit-Remaining` (no reset given: wait a window) or `ratelimit-*`.
        let remaining = header("ratelimit-remaining")
            .or_else(|| header("x-rate-limit-remaining"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if remaining == Some(0) {
            let reset = header("ratelimit-reset")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(self.span, Duration::from_secs);
            w.0.blocked_until = Some(now + reset);
        }
        // Ticket updates: `Zendesk-RateLimit-tickets-update: total=100; remaining=0; resets=41`.
        if let Some(v) = header("zendesk-ratelimit-tickets-update") {
            let field = |name: &str| {
                v.split(';').find_map(|part| {
                    let (k, val) = part.split_once('=')?;
                    (k.trim() == name)
                        .then(|| val.trim().parse::<u64>().ok())
                        .flatten()
                })
            };
            if field("remaining") == Some(0) {
                let reset = field("resets").map_or(self.span, Duration::from_secs);
                w.1.blocked_until = Some(now + reset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[tokio::test(start_paused = true)]
    async fn no_window_holds_more_than_the_limit() {
        let rl = RateLimiter::new(3, 100, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..3 {
            rl.acquire(Kind::Read).await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first three go at once"
        );
        rl.acquire(Kind::Read).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(60),
            "the fourth waits for the first to leave the window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn updates_have_their_own_limit() {
        let rl = RateLimiter::new(100, 2, Duration::from_secs(60));
        let start = Instant::now();
        rl.acquire(Kind::Update).await;
        rl.acquire(Kind::Update).await;
        rl.acquire(Kind::Read).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "reads are not held back by the update limit"
        );
        rl.acquire(Kind::Update).await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn zendesk_headers_pause_until_their_reset() {
        let rl = RateLimiter::new(100, 100, Duration::from_secs(60));
        let mut h = HeaderMap::new();
        h.insert(
            "zendesk-ratelimit-tickets-update",
            HeaderValue::from_static("total=100; remaining=0; resets=7"),
        );
        rl.observe(&h);
        let start = Instant::now();
        rl.acquire(Kind::Read).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        rl.acquire(Kind::Update).await;
        assert_eq!(start.elapsed(), Duration::from_secs(7));

        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("ratelimit-reset", HeaderValue::from_static("3"));
        rl.observe(&h);
        let start = Instant::now();
        rl.acquire(Kind::Read).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-remaining", HeaderValue::from_static("5"));
        rl.observe(&h);
        let start = Instant::now();
        rl.acquire(Kind::Read).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "something left: no pause");
    }
}
