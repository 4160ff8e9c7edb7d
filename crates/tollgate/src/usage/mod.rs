//! Usage APIs: every seed platform's usage endpoint, read from rollups.

pub mod store;

use std::sync::Arc;

use axum::Router;

use crate::app::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
