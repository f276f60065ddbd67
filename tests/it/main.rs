//! Integration tests: the real app on a random port against an in-process fake Zendesk.

mod admin;
mod backfill;
mod bad_input;
mod binary;
mod browser;
mod console;
mod contract;
mod corpus;
mod crash;
mod disk;
mod drain;
mod faults;
mod instances;
mod pipeline;
mod postgres;
mod robustness;
mod signature;
mod sla;
mod store_contract;
mod support;
mod tools;
