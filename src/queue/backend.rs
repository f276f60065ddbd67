//! The queue's promises as one interface, kept by each storage backend: the SQLite store (one
//! process, the embedded default) and PostgreSQL (several instances). One contract suite
//! (`tests/it/store_contract.rs`) runs against both.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::store::{Enqueued, Job, NewEvent, Settle, Stats, Store, StoreError};

/// What a queue backend does.
pub trait QueueBackend {
    /// Stores an event durably (returns once committed); a second one with the same key is a
    /// no-op reported as [`Enqueued::Duplicate`].
    fn enqueue(&self, event: NewEvent)
        -> impl Future<Output = Result<Enqueued, StoreError>> + Send;

    /// Leases the due jobs of up to `tickets` tickets, live lane first, oldest first, never a
    /// ticket's job before an older unfinished one of the same ticket (even one waiting to
    /// retry): per ticket, its head job and up to `per_ticket` waiting right behind it.
    fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        tickets: usize,
        per_ticket: usize,
    ) -> impl Future<Output = Result<Vec<Vec<Job>>, StoreError>> + Send;

    /// Records how each claimed job ended.
    fn settle(
        &self,
        results: Vec<(i64, Settle)>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Counts for /healthz and /metrics.
    fn stats(&self, now: DateTime<Utc>) -> impl Future<Output = Result<Stats, StoreError>> + Send;
}

impl QueueBackend for Store {
    fn enqueue(
        &self,
        event: NewEvent,
    ) -> impl Future<Output = Result<Enqueued, StoreError>> + Send {
        Store::enqueue(self, event)
    }

    fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        tickets: usize,
        per_ticket: usize,
    ) -> impl Future<Output = Result<Vec<Vec<Job>>, StoreError>> + Send {
        Store::claim(self, now, lease, tickets, per_ticket)
    }

    fn settle(
        &self,
        results: Vec<(i64, Settle)>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        Store::settle(self, results, now)
    }

    fn stats(&self, now: DateTime<Utc>) -> impl Future<Output = Result<Stats, StoreError>> + Send {
        Store::stats(self, now)
    }
}
