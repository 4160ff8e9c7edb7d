//! tollgate: the binary's crate. `main` and the CLI (`cli`), layered configuration loading
//! (`config`), and the wiring that starts everything (`app`). The gateway itself lives in the
//! crates below (see ARCHITECTURE.md): tollgate-core (domain), tollgate-store (backends),
//! tollgate-engine (services), tollgate-http (the HTTP boundary).

pub mod app;
pub mod cli;
pub mod config;

pub use app::Application;
pub use config::Config;
pub use tollgate_core::{clock, metering, record};
