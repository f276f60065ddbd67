//! Keeps deskbot under Zendesk's rate limits before Zendesk has to say no.
//!
//! Two limits apply to deskbot's calls (zendesk-api.md §6): the account's requests per minute (by
//! plan, `ZENDESK_RATE_LIMIT_PER_MINUTE`), and ticket updates (100 per minute by default). Each is an
//! exact sliding-window log: a request may go when fewer than `limit` went in the last window, so
//! no window of that length ever holds more (a token bucket would allow a burst on top). Zendesk's
//! own headers then correct it: when they say nothing is left, deskbot waits for their reset.
//!
//! Zendesk also allows only 30 updates per ticket in 10 minutes. That limit is not waited for here
//! (one busy ticket must not hold up the others): the worker asks [`RateLimiter::ticket_wait`] first
//! and puts that ticket's jobs back until then.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// Which limits a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any other call: the account limit only.
    Read,
    /// An update of this ticket: the account limit, the ticket-update limit and the per-ticket log.
    Update(u64),
}

/// Updates one ticket may take per [`PER_TICKET_SPANS`] windows (Zendesk: 30 per 10 minutes).
pub const PER_TICKET_LIMIT: usize = 30;
/// The per-ticket window, in account windows (10 minutes when the window is a minute).
pub const PER_TICKET_SPANS: u32 = 10;
/// Above this many tickets in the per-ticket log, tickets with no update left in it are dropped.
const PER_TICKET_PRUNE_AT: usize = 1024;

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
        let by_log = log_wait(&mut self.sent, self.limit, now, span);
        let by_zendesk = self
            .blocked_until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        by_log.max(by_zendesk)
    }
}

/// Drops entries older than `span` from a send log; returns how long until it has room for one more.
fn log_wait(sent: &mut VecDeque<Instant>, limit: usize, now: Instant, span: Duration) -> Duration {
    while sent.front().is_some_and(|t| now.duration_since(*t) >= span) {
        sent.pop_front();
    }
    if sent.len() < limit {
        return Duration::ZERO;
    }
    // The log never holds more than `limit`, so the oldest entry is the one that must leave.
    sent.front().map_or(Duration::ZERO, |first| {
        (*first + span).saturating_duration_since(now)
    })
}

#[derive(Debug)]
struct Windows {
    account: Window,
    updates: Window,
    per_ticket: HashMap<u64, VecDeque<Instant>>,
}

/// The Zendesk rate budget in use over the last window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Requests sent.
    pub requests: usize,
    /// The account's limit.
    pub request_limit: usize,
    /// Ticket updates sent.
    pub updates: usize,
    /// The ticket-update limit.
    pub update_limit: usize,
    /// How long Zendesk asked deskbot to wait (a 429's Retry-After), zero when not paused.
    pub paused: Duration,
}

/// A rate budget that every instance of deskbot shares (kept in PostgreSQL), asked after this
/// instance's own windows allow a request, so that N instances together stay under Zendesk's limits.
pub trait SharedBudget: Send + Sync {
    /// Takes one request from budget `name` (`limit` per `span`): zero when granted, else how long
    /// until one may be.
    fn take(
        &self,
        name: &'static str,
        limit: u32,
        span: Duration,
    ) -> BoxFuture<'_, Result<Duration, String>>;
    /// Pauses budget `name` for `wait` (Zendesk said so), for every instance.
    fn pause(&self, name: &'static str, wait: Duration) -> BoxFuture<'_, Result<(), String>>;
}

/// The shared budget of all requests.
const ACCOUNT: &str = "zendesk_requests";
/// The shared budget of ticket updates.
const UPDATES: &str = "zendesk_ticket_updates";
/// How long to wait before asking again when the shared budget cannot be read.
const SHARED_RETRY: Duration = Duration::from_secs(1);

/// Paces deskbot's calls to Zendesk.
pub struct RateLimiter {
    span: Duration,
    windows: Mutex<Windows>,
    shared: OnceLock<Arc<dyn SharedBudget>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("span", &self.span)
            .field("shared", &self.shared.get().is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `per_minute` requests and `updates_per_minute` ticket updates per `span` (a minute, except in tests).
    pub fn new(per_minute: u32, updates_per_minute: u32, span: Duration) -> Self {
        RateLimiter {
            span,
            windows: Mutex::new(Windows {
                account: Window::new(per_minute),
                updates: Window::new(updates_per_minute),
                per_ticket: HashMap::new(),
            }),
            shared: OnceLock::new(),
        }
    }

    /// From now on, also takes every request from `budget`, shared with other instances (once;
    /// a second budget is ignored).
    pub fn share(&self, budget: Arc<dyn SharedBudget>) {
        let _ = self.shared.set(budget);
    }

    /// How much of each limit the last window used, for the console.
    pub fn budget(&self) -> Budget {
        let now = Instant::now();
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let span = self.span;
        let used = |win: &mut Window| {
            log_wait(&mut win.sent, win.limit, now, span);
            (win.sent.len(), win.limit)
        };
        let (requests, request_limit) = used(&mut w.account);
        let (updates, update_limit) = used(&mut w.updates);
        let paused = [w.account.blocked_until, w.updates.blocked_until]
            .into_iter()
            .flatten()
            .map(|u| u.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        Budget {
            requests,
            request_limit,
            updates,
            update_limit,
            paused,
        }
    }

    fn ticket_span(&self) -> Duration {
        self.span.saturating_mul(PER_TICKET_SPANS)
    }

    /// How long until `ticket` may be updated again under the per-ticket limit (zero: now).
    pub fn ticket_wait(&self, ticket: u64) -> Duration {
        let span = self.ticket_span();
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        w.per_ticket.get_mut(&ticket).map_or(Duration::ZERO, |log| {
            log_wait(log, PER_TICKET_LIMIT, Instant::now(), span)
        })
    }

    /// Waits until a request of this kind may be sent, and counts it.
    pub async fn acquire(&self, kind: Kind) {
        self.acquire_local(kind).await;
        if let Some(shared) = self.shared.get() {
            let (requests, updates) = {
                let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
                (w.account.limit as u32, w.updates.limit as u32)
            };
            self.take_shared(shared.as_ref(), ACCOUNT, requests).await;
            if let Kind::Update(_) = kind {
                self.take_shared(shared.as_ref(), UPDATES, updates).await;
            }
        }
    }

    /// Waits for one request of the shared budget `name`. When the database cannot answer, the
    /// request waits and asks again rather than going out uncounted.
    async fn take_shared(&self, shared: &dyn SharedBudget, name: &'static str, limit: u32) {
        loop {
            let wait = match shared.take(name, limit, self.span).await {
                Ok(w) if w.is_zero() => return,
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, budget = name, "cannot read the shared Zendesk rate budget; waiting");
                    SHARED_RETRY
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Zendesk answered 429: no request goes, from any instance, for `wait`.
    pub fn paused_for(&self, wait: Duration) {
        {
            let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let until = Instant::now() + wait;
            w.account.blocked_until = Some(w.account.blocked_until.map_or(until, |b| b.max(until)));
        }
        self.pause_shared(ACCOUNT, wait);
    }

    /// Tells the other instances about a pause, without holding up this response.
    fn pause_shared(&self, name: &'static str, wait: Duration) {
        if let Some(shared) = self.shared.get().cloned() {
            tokio::spawn(async move {
                if let Err(e) = shared.pause(name, wait).await {
                    tracing::warn!(error = %e, budget = name, "cannot share Zendesk's pause with the other instances");
                }
            });
        }
    }

    async fn acquire_local(&self, kind: Kind) {
        loop {
            let wait = {
                let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let mut wait = w.account.wait(now, self.span);
                if let Kind::Update(_) = kind {
                    wait = wait.max(w.updates.wait(now, self.span));
                }
                if wait.is_zero() {
                    w.account.sent.push_back(now);
                    if let Kind::Update(ticket) = kind {
                        w.updates.sent.push_back(now);
                        self.record_ticket_update(&mut w, ticket, now);
                    }
                    return;
                }
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn record_ticket_update(&self, w: &mut Windows, ticket: u64, now: Instant) {
        let span = self.ticket_span();
        if w.per_ticket.len() >= PER_TICKET_PRUNE_AT {
            w.per_ticket
                .retain(|_, log| log.back().is_some_and(|t| now.duration_since(*t) < span));
        }
        let log = w.per_ticket.entry(ticket).or_default();
        log.push_back(now);
        // An update sent anyway (the caller did not ask `ticket_wait`) must not grow the log unbounded.
        while log.len() > PER_TICKET_LIMIT {
            log.pop_front();
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
            w.account.blocked_until = Some(now + reset);
            self.pause_shared(ACCOUNT, reset);
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
                w.updates.blocked_until = Some(now + reset);
                self.pause_shared(UPDATES, reset);
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
        rl.acquire(Kind::Update(1)).await;
        rl.acquire(Kind::Update(1)).await;
        rl.acquire(Kind::Read).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "reads are not held back by the update limit"
        );
        rl.acquire(Kind::Update(1)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn each_ticket_takes_thirty_updates_per_ten_windows() {
        let rl = RateLimiter::new(1000, 1000, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..PER_TICKET_LIMIT {
            assert_eq!(rl.ticket_wait(7), Duration::ZERO, "update {i}");
            rl.acquire(Kind::Update(7)).await;
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // The first of the thirty leaves the ten-minute window at 600 s.
        assert_eq!(rl.ticket_wait(7), Duration::from_secs(570));
        assert_eq!(rl.ticket_wait(8), Duration::ZERO, "other tickets are free");
        tokio::time::advance(Duration::from_secs(570)).await;
        assert_eq!(rl.ticket_wait(7), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_per_ticket_log_forgets_quiet_tickets() {
        let rl = RateLimiter::new(100_000, 100_000, Duration::from_secs(1));
        for t in 0..PER_TICKET_PRUNE_AT as u64 {
            rl.acquire(Kind::Update(t)).await;
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        rl.acquire(Kind::Update(u64::MAX)).await;
        let w = rl.windows.lock().unwrap();
        assert_eq!(w.per_ticket.len(), 1);
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
        rl.acquire(Kind::Update(1)).await;
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
