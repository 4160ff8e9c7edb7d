//! tollgate-core: the gateway's domain, as pure types and rules with no I/O crates (no async
//! runtime, HTTP or database). Everything above it (store backends, services, the HTTP layer)
//! depends on it; it depends on nothing of theirs.
//!
//! - `money`: exact integer nano-USD arithmetic and decimal parsing
//! - `pricing`: the price table, a request's cost, its maximum cost, and who is charged what
//! - `metering`: reading usage out of upstream answers; the bundled tokenizer for estimates
//! - `record`, `account`, `credit`: the data the gateway keeps
//! - `attribution`: the end user and tags a request names (checked headers and body fields)
//! - `calendar`: day/week/month/hour arithmetic in UTC and IANA zones (the one calendar)
//! - `rollup`: records → per-grain rollup deltas, and which rollup rows answer a query
//! - `store`: one trait per aggregate, and the `Store` supertrait every backend implements
//! - `webhook`: endpoints, events, the outbox of deliveries and the retry schedule
//! - `error`: `DomainError` with stable codes, and `StoreError` with kinds
//! - `config`: the typed configuration (loading it from files and the environment is the
//!   binary's job)

pub mod account;
pub mod attribution;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod credit;
pub mod error;
pub mod fingerprint;
pub mod id;
pub mod insights;
pub mod metering;
pub mod money;
pub mod pricing;
pub mod record;
pub mod request;
pub mod rollup;
pub mod store;
pub mod webhook;

pub use error::{Code, DomainError, StoreError, StoreErrorKind};
