//! tollgate-http: the HTTP boundary, on top of the engine.
//!
//! - `router`: every route, the request-context middleware, errors rendered once
//! - `routes`: the recording route builder (the route table the authorization test walks)
//! - `body`: request bodies read under `server.max_body_bytes`
//! - `extract`: authentication as extractors (`Authed`, `Admin`, `UsageQuery`)
//! - `error`: `ApiError`, mapped from `DomainError` once, in the caller's error shape
//! - `proxy`: the OpenAI- and Anthropic-compatible endpoints and their exchange upstream
//! - `compat`: the seed platforms' usage endpoints (LLMHub, CrossModel, ElectronHub, Runtype,
//!   OpenAI organization usage, exports)
//! - `insights`: `GET /v1/usage/insights` (duplicates, retry loops, waste; the engine's analyses)
//! - `admin`: accounts, keys, credits, provider keys, raw records
//! - `metrics`: `GET /metrics` (Prometheus)
//! - `session`: dashboard sign-ins (session cookie, CSRF token), accepted by `extract`
//! - `dashboard`: the usage dashboard at `/dashboard` (embedded assets, its thin read APIs)
//! - `server`: the listener and graceful shutdown

pub mod admin;
pub mod body;
pub mod compat;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod insights;
pub mod metrics;
pub mod params;
pub mod proxy;
pub mod router;
pub mod routes;
pub mod server;
pub mod session;
pub mod state;
pub mod webhooks;

pub use router::routes;
pub use server::serve;
pub use state::{AppState, SharedState};
