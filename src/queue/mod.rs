//! The durable queue (SQLite or PostgreSQL, behind one `Store`) and the worker that drains it.

pub mod clocks;
pub mod console;
pub mod copy;
pub mod cursors;
pub mod postgres;
pub mod retry;
pub mod store;
pub mod tracking;
pub mod worker;
