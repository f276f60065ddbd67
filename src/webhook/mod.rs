//! Receiving Zendesk webhooks: signature check, payload parsing, the HTTP route.

pub mod payload;
pub mod routes;
pub mod signature;
