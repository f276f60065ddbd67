//! deskbot: signed Zendesk webhooks in, policy decisions out, one idempotent ticket update each.
//!
//! Data flows one way: `webhook` (verify, parse) → `queue` (durable store, worker) → `policy`
//! (decide) → `update` (diff) → `zendesk` (API client). `server` wires them together; `cli` and
//! `admin` (the console) are the edges.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backfill;
pub mod calendar;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod queue;
pub mod register;
pub mod reload;
pub mod server;
pub mod sla;
pub mod telemetry;
pub mod ticket;
pub mod update;
pub mod webhook;
pub mod zendesk;
