//! The Zendesk Support API: typed requests and responses, and a client that classifies failures.

pub mod client;
pub mod model;
pub mod ratelimit;

pub use client::{ErrorClass, ZendeskClient, ZendeskError};
