//! tollgate: a self-hosted LLM API gateway that meters every token.
//!
//! Modules name the architecture (see ARCHITECTURE.md): `proxy` is the request path,
//! `metering` the pure token and price arithmetic, `ledger` the journal and the store,
//! `auth` the keys, `admin` the admin API, `config` the layered configuration.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credits;
pub mod error;
pub mod ledger;
pub mod metering;
pub mod proxy;
pub mod usage;

pub use app::Application;
pub use config::Config;
