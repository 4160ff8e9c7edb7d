//! `GET /v1/credits` in CrossModel's shape, for any key of the account.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/credits", get(credits))
}

/// `balance_micro`: grants − charges + refunds, in micro-units of `currency` (rounded down);
/// `uncollected_micro`: held by this account's requests in flight. Also the same in credits.
async fn credits(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = s.keys.authenticate(&headers).await?;
    let v = s.credits.view(&caller.account_id).await?;
    Ok(Json(json!({
        "currency": s.credits.config().currency,
        "balance_micro": v.balance_nanos.div_euclid(1000),
        "uncollected_micro": v.held_nanos.div_euclid(1000),
        "balance_credits": s.credits.nanos_to_credits(v.balance_nanos),
        "available_credits": s.credits.nanos_to_credits(v.balance_nanos - v.held_nanos),
        "credits_per_usd": s.credits.config().per_usd,
    }))
    .into_response())
}
