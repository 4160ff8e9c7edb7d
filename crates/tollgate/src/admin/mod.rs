//! The admin API: accounts, keys, and raw usage records. Admin keys only; a user key gets 403.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::ledger::{RecordQuery, Role};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/accounts", get(list_accounts).post(create_account))
        .route("/accounts/{id}", get(get_account))
        .route("/accounts/{id}/keys", get(list_keys).post(create_key))
        .route("/keys/{id}", delete(revoke_key))
        .route("/requests", get(list_requests))
        .route("/requests/{id}", get(get_request))
}

async fn admin(s: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let caller = s.keys.authenticate(headers).await?;
    if caller.role != Role::Admin {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "this endpoint needs an admin key",
        ));
    }
    Ok(caller)
}

/// Parses a JSON body, mapping failures to the caller's 400.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::new(ErrorCode::InvalidJson, e.to_string()));
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid request body: {e}"),
            )
        } else {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("the request body is not valid JSON: {e}"),
            )
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    name: String,
}

async fn create_account(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    let req: NewAccount = parse_body(&body)?;
    let account = s.keys.create_account(&req.name).await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

async fn list_accounts(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    let accounts = s.ledger.store.list_accounts().await?;
    Ok(Json(json!({ "object": "list", "data": accounts })).into_response())
}

async fn get_account(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    match s.ledger.store.get_account(&id).await? {
        Some(a) => Ok(Json(a).into_response()),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no account {id}"),
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct NewKey {
    name: Option<String>,
    role: Option<Role>,
}

async fn create_key(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    let req: NewKey = parse_body(&body)?;
    let issued = s
        .keys
        .issue(
            &id,
            req.name.as_deref().unwrap_or("default"),
            req.role.unwrap_or(Role::User),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn list_keys(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    if s.ledger.store.get_account(&id).await?.is_none() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no account {id}"),
        ));
    }
    let keys = s.ledger.store.list_keys(Some(id)).await?;
    Ok(Json(json!({ "object": "list", "data": keys })).into_response())
}

async fn revoke_key(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    Ok(Json(s.keys.revoke(&id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestsQuery {
    account_id: Option<String>,
    key_id: Option<String>,
    limit: Option<usize>,
}

async fn list_requests(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<RequestsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 10000",
        ));
    }
    s.ledger.flush().await;
    let records = s
        .ledger
        .store
        .list_usage(RecordQuery {
            account_id: q.account_id,
            key_id: q.key_id,
            limit,
        })
        .await?;
    Ok(Json(json!({ "object": "list", "data": records })).into_response())
}

async fn get_request(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    s.ledger.flush().await;
    match s.ledger.store.get_usage(&id).await? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no request {id}"),
        )),
    }
}
