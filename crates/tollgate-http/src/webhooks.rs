//! `/v1/webhooks`: an account's webhook endpoints and their deliveries. Scoped to the caller's
//! account; an admin key may name `account_id` (query, or in the body when creating), and reaches
//! any endpoint by its id.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tollgate_core::Code;

use crate::error::ApiError;
use crate::extract::{LimitedBody, UsageQuery};
use crate::routes::{Access, Routes};
use crate::state::SharedState;

pub fn routes() -> Routes {
    use Access::*;
    Routes::new()
        .post("/v1/webhooks", User, create)
        .get("/v1/webhooks", User, list)
        .get("/v1/webhooks/{id}", User, get)
        .patch("/v1/webhooks/{id}", User, update)
        .delete("/v1/webhooks/{id}", User, delete)
        .post("/v1/webhooks/{id}/rotate-secret", User, rotate)
        .post("/v1/webhooks/{id}/test", User, test)
        .get("/v1/webhooks/{id}/deliveries", User, deliveries)
        .post(
            "/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
            User,
            retry,
        )
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::InvalidJson,
            format!("the request body is not valid JSON: {e}"),
        )
    })
}

/// Whose endpoints a by-id request may reach: an admin any (the id names its account), a user
/// key its own (naming another account or key is 404, as on every usage route).
async fn reach(s: &SharedState, q: &UsageQuery) -> Result<Option<String>, ApiError> {
    let named = q.p.get("account_id")?;
    if q.caller.is_admin() {
        return Ok(None);
    }
    let key = q.p.get("key_id")?;
    Ok(Some(
        s.engine.scope(&q.caller, named, key).await?.account_id,
    ))
}

async fn create(
    State(s): State<SharedState>,
    q: UsageQuery,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let mut body = json_body(&body)?;
    let from_body = body
        .as_object_mut()
        .and_then(|o| o.remove("account_id"))
        .and_then(|v| v.as_str().map(str::to_string));
    let named = from_body.or(q.p.get("account_id")?.map(str::to_string));
    let scope = s
        .engine
        .scope(&q.caller, named.as_deref(), q.p.get("key_id")?)
        .await?;
    let created = s.engine.webhooks.create(&scope.account_id, &body).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list(State(s): State<SharedState>, q: UsageQuery) -> Result<Response, ApiError> {
    let scope = q.scope(&s).await?;
    let data = s.engine.webhooks.list(&scope.account_id).await?;
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

async fn get(
    State(s): State<SharedState>,
    q: UsageQuery,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = reach(&s, &q).await?;
    Ok(Json(s.engine.webhooks.get(who.as_deref(), &id).await?).into_response())
}

async fn update(
    State(s): State<SharedState>,
    q: UsageQuery,
    Path(id): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let who = reach(&s, &q).await?;
    let body = json_body(&body)?;
    Ok(Json(s.engine.webhooks.update(who.as_deref(), &id, &body).await?).into_response())
}

async fn delete(
    State(s): State<SharedState>,
    q: UsageQuery,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = reach(&s, &q).await?;
    s.engine.webhooks.delete(who.as_deref(), &id).await?;
    Ok(Json(json!({"id": id, "deleted": true})).into_response())
}

async fn rotate(
    State(s): State<SharedState>,
    q: UsageQuery,
    Path(id): Path<String>,
    // Read (and bounded, 413 past the limit) though unused: every POST treats bodies alike.
    LimitedBody(_body): LimitedBody,
) -> Result<Response, ApiError> {
    let who = reach(&s, &q).await?;
    Ok(Json(s.engine.webhooks.rotate_secret(who.as_deref(), &id).await?).into_response())
}

async fn test(
    State(s): State<SharedState>,
    q: UsageQuery,
    Path(id): Path<String>,
    // Read (and bounded, 413 past the limit) though unused: every POST treats bodies alike.
    LimitedBody(_body): LimitedBody,
) -> Result<Response, ApiError> {
    let who = reach(&s, &q).await?;
    let queued = s.engine.webhooks.test(who.as_deref(), &id).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
}

async fn deliveries(
    State(s): State<SharedState>,
    q: UsageQuery,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = reach(&s, &q).await?;
    let limit = q.p.int("limit", 1, 1000)?.unwrap_or(100) as usize;
    let data = s
        .engine
        .webhooks
        .deliveries(who.as_deref(), &id, limit)
        .await?;
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

async fn retry(
    State(s): State<SharedState>,
    q: UsageQuery,
    Path((id, delivery_id)): Path<(String, String)>,
    // Read (and bounded, 413 past the limit) though unused: every POST treats bodies alike.
    LimitedBody(_body): LimitedBody,
) -> Result<Response, ApiError> {
    let who = reach(&s, &q).await?;
    let queued = s
        .engine
        .webhooks
        .retry(who.as_deref(), &id, &delivery_id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
}
