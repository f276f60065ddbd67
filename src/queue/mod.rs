//! The durable queue (SQLite) and the worker that drains it.

pub mod backend;
pub mod clocks;
pub mod console;
pub mod cursors;
pub mod postgres;
pub mod retry;
pub mod store;
pub mod tracking;
pub mod worker;
