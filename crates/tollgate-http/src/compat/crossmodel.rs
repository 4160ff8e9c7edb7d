//! `GET /v1/credits` in CrossModel's shape, for any key of the account.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::extract::UsageQuery;
use crate::state::SharedState;

/// `balance_micro`: grants − charges + refunds, in micro-units of `currency` (rounded down);
/// `uncollected_micro`: held by this account's requests in flight. Also the same in credits.
/// Scoped like every usage endpoint: an admin may name `account_id` / `key_id`; a user key
/// naming another account's gets 404 (it used to be ignored, answering with the caller's own
/// balance as if it were the named account's).
pub async fn credits(State(s): State<SharedState>, q: UsageQuery) -> Result<Response, ApiError> {
    let scope = q.scope(&s).await?;
    let v = s.engine.credits.view(&scope.account_id).await?;
    Ok(Json(json!({
        "currency": s.engine.credits.config().currency,
        "balance_micro": v.balance_nanos.div_euclid(1000),
        "uncollected_micro": v.held_nanos.div_euclid(1000),
        "balance_credits": s.engine.credits.nanos_to_credits(v.balance_nanos),
        "available_credits": s.engine.credits.nanos_to_credits(v.balance_nanos - v.held_nanos),
        "credits_per_usd": s.engine.credits.config().per_usd,
    }))
    .into_response())
}
