//! What every handler shares: the engine's services, and the HTTP client for upstreams.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tollgate_engine::Engine;

use crate::error::ErrorStyle;
use crate::proxy::client::UpstreamClient;
use crate::session::Sessions;

pub struct AppState {
    pub engine: Engine,
    pub http: UpstreamClient,
    /// Dashboard sign-ins (in memory: see `session`).
    pub sessions: Sessions,
}

pub type SharedState = Arc<AppState>;

/// The client's address, for the authentication-failure brake (set by `server` per
/// connection).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Facts about the current request, set by `router::request_context` before any handler runs.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    pub request_id: String,
    pub style: ErrorStyle,
    pub started: Instant,
    pub started_ms: i64,
    /// Set when the answer was read while the store was behind (it may miss recent requests);
    /// the response then says so in `x-tollgate-stale`.
    pub stale: Arc<AtomicBool>,
}

impl RequestCtx {
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Waits until finished requests are in the store (read-your-writes); if the store is
    /// behind, the answer, read from what is committed, is marked stale.
    pub async fn read_your_writes(&self, s: &AppState) {
        if !s.engine.read_your_writes().await {
            self.mark_stale();
        }
    }
}
