//! Prometheus metrics: counters and histograms every module records into, rendered as text.
//!
//! A leaf module: it knows nothing of webhooks, queues or Zendesk beyond label values.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    endpoint: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClockState {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyName {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Endpoint {
    endpoint: String,
}

struct Inner {
    registry: Registry,
    received: Family<Source, Counter>,
    rejected: Family<Reason, Counter>,
    processed: Family<Outcome, Counter>,
    api_calls: Family<Call, Counter>,
    api_latency: Family<Endpoint, Histogram>,
    webhook_latency: Histogram,
    queue_depth: Gauge,
    oldest_job_age: Gauge,
    dead_letters: Gauge,
    sla_clocks: Family<ClockState, Gauge>,
    sla_timers_due: Gauge,
    unclassified: Family<PolicyName, Counter>,
    caught_up: Counter,
    reapplied: Family<Outcome, Counter>,
    reapply_runs: Family<Outcome, Counter>,
}

/// Shared handle to deskbot's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_buckets() -> Histogram {
    // Seconds: from a fast local insert (~1 ms) to Zendesk's ~10 s webhook timeout.
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// A fresh registry with every deskbot metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("deskbot");
        let received = Family::<Source, Counter>::default();
        let rejected = Family::<Reason, Counter>::default();
        let processed = Family::<Outcome, Counter>::default();
        let api_calls = Family::<Call, Counter>::default();
        let api_latency =
            Family::<Endpoint, Histogram>::new_with_constructor(latency_buckets as fn() -> _);
        let webhook_latency = latency_buckets();
        let queue_depth = Gauge::default();
        let oldest_job_age = Gauge::default();
        let dead_letters = Gauge::default();
        let sla_clocks = Family::<ClockState, Gauge>::default();
        let sla_timers_due = Gauge::default();
        let unclassified = Family::<PolicyName, Counter>::default();
        let caught_up = Counter::default();
        let reapplied = Family::<Outcome, Counter>::default();
        let reapply_runs = Family::<Outcome, Counter>::default();
        registry.register(
            "catch_up_tickets",
            "Tickets queued by a catch-up: changed in Zendesk while deskbot heard nothing of them",
            caught_up.clone(),
        );
        registry.register(
            "reapply_tickets",
            "Open tickets re-decided after a policy change, by outcome (changed: queued for an update; unchanged)",
            reapplied.clone(),
        );
        registry.register(
            "reapply_runs",
            "Re-apply runs after a policy change, by outcome (done, failed, superseded by a newer change)",
            reapply_runs.clone(),
        );
        registry.register(
            "tickets_unclassified",
            "Tickets no rule gave a level (the policy's [unclassified] applied, if it has one), by policy",
            unclassified.clone(),
        );
        registry.register(
            "sla_clocks",
            "Open SLA clocks by state (running, paused, at_risk, breached; at_risk is part of running)",
            sla_clocks.clone(),
        );
        registry.register(
            "sla_timers_due",
            "SLA timers due and not yet handed to the worker",
            sla_timers_due.clone(),
        );
        registry.register(
            "webhooks_received",
            "Webhook events accepted into the queue, by payload kind",
            received.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhook requests refused, by reason",
            rejected.clone(),
        );
        registry.register(
            "jobs_processed",
            "Jobs finished by the worker, by outcome",
            processed.clone(),
        );
        registry.register(
            "zendesk_requests",
            "Calls to the Zendesk API, by endpoint and HTTP status (or 'error')",
            api_calls.clone(),
        );
        registry.register(
            "zendesk_request_duration_seconds",
            "Latency of Zendesk API calls",
            api_latency.clone(),
        );
        registry.register(
            "webhook_duration_seconds",
            "Time to answer a webhook request",
            webhook_latency.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs waiting to be processed",
            queue_depth.clone(),
        );
        registry.register(
            "oldest_job_age_seconds",
            "Age of the oldest waiting job",
            oldest_job_age.clone(),
        );
        registry.register(
            "dead_letters",
            "Jobs that gave up after their last retry",
            dead_letters.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            received,
            rejected,
            processed,
            api_calls,
            api_latency,
            webhook_latency,
            queue_depth,
            oldest_job_age,
            dead_letters,
            sla_clocks,
            sla_timers_due,
            unclassified,
            caught_up,
            reapplied,
            reapply_runs,
        }))
    }

    /// A webhook event was stored (or found to be a duplicate).
    pub fn received(&self, source: &str) {
        self.0
            .received
            .get_or_create(&Source {
                source: source.to_string(),
            })
            .inc();
    }

    /// A webhook request was refused for `reason`.
    pub fn rejected(&self, reason: &str) {
        self.0
            .rejected
            .get_or_create(&Reason {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Policy `policy` gave a ticket no level.
    pub fn unclassified(&self, policy: &str) {
        self.0
            .unclassified
            .get_or_create(&PolicyName {
                policy: policy.to_string(),
            })
            .inc();
    }

    /// A catch-up queued `n` tickets.
    pub fn caught_up(&self, n: usize) {
        self.0.caught_up.inc_by(n as u64);
    }

    /// A re-apply decided `n` tickets with `outcome` (`changed`, `unchanged`).
    pub fn reapplied(&self, outcome: &str, n: usize) {
        self.0
            .reapplied
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc_by(n as u64);
    }

    /// A re-apply run ended with `outcome`.
    pub fn reapply_run(&self, outcome: &str) {
        self.0
            .reapply_runs
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A job ended with `outcome`.
    pub fn processed(&self, outcome: &str) {
        self.0
            .processed
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A Zendesk call finished with `status` (an HTTP code or `error`) after `seconds`.
    pub fn api_call(&self, endpoint: &str, status: &str, seconds: f64) {
        self.0
            .api_calls
            .get_or_create(&Call {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.0
            .api_latency
            .get_or_create(&Endpoint {
                endpoint: endpoint.to_string(),
            })
            .observe(seconds);
    }

    /// A webhook request was answered after `seconds`.
    pub fn webhook_latency(&self, seconds: f64) {
        self.0.webhook_latency.observe(seconds);
    }

    /// Sets the SLA clock gauges, read from the store just before rendering.
    pub fn set_clocks(&self, by_state: &[(&str, i64)], timers_due: i64) {
        for &(state, n) in by_state {
            self.0
                .sla_clocks
                .get_or_create(&ClockState {
                    state: state.into(),
                })
                .set(n);
        }
        self.0.sla_timers_due.set(timers_due);
    }

    /// Sets the queue gauges, read from the store just before rendering.
    pub fn set_queue(&self, depth: i64, oldest_age_secs: i64, dead: i64) {
        self.0.queue_depth.set(depth);
        self.0.oldest_job_age.set(oldest_age_secs);
        self.0.dead_letters.set(dead);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}
