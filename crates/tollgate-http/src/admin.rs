//! The admin API: accounts, keys, raw usage records and re-pricing. Admin keys only; a user key
//! gets 403.

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use crate::state::{AppState, RequestCtx, SharedState};
use tollgate_core::Code;

use crate::error::ApiError;
use crate::extract::{Admin, LimitedBody};
use crate::params::Params;
use crate::routes::{Access, Routes};
use tollgate_core::account::{KeyLimits, Role};
use tollgate_core::calendar::{MAX_MS, MIN_MS};
use tollgate_core::credit::CreditKind;
use tollgate_core::pricing::PriceTable;
use tollgate_core::store::RecordQuery;
use tollgate_engine::reports::reprice;

pub fn routes() -> Routes {
    use Access::Admin;
    Routes::new()
        .get("/accounts", Admin, list_accounts)
        .post("/accounts", Admin, create_account)
        .get("/accounts/{id}", Admin, get_account)
        .patch("/accounts/{id}", Admin, update_account)
        .get("/accounts/{id}/keys", Admin, list_keys)
        .post("/accounts/{id}/keys", Admin, create_key)
        .get("/accounts/{id}/credits", Admin, credit_audit)
        .post("/accounts/{id}/credits", Admin, add_credits)
        .get("/accounts/{id}/provider-keys", Admin, list_provider_keys)
        .put(
            "/accounts/{id}/provider-keys/{provider}",
            Admin,
            put_provider_key,
        )
        .delete(
            "/accounts/{id}/provider-keys/{provider}",
            Admin,
            delete_provider_key,
        )
        .delete("/keys/{id}", Admin, revoke_key)
        .patch("/keys/{id}", Admin, update_key)
        .get("/reprice", Admin, reprice_current)
        .post("/reprice", Admin, reprice_with)
        .get("/requests", Admin, list_requests)
        .get("/requests/{id}", Admin, get_request)
}

/// Parses a JSON body, mapping failures to the caller's 400.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::new(Code::InvalidJson, e.to_string()));
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::new(Code::InvalidRequest, format!("invalid request body: {e}"))
        } else {
            ApiError::new(
                Code::InvalidJson,
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
    State(s): State<SharedState>,
    Admin(_): Admin,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req: NewAccount = parse_body(&body)?;
    let account = s.engine.keys.create_account(&req.name).await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

async fn list_accounts(
    State(s): State<SharedState>,
    Admin(_): Admin,
) -> Result<Response, ApiError> {
    let accounts = s.engine.store.list_accounts().await?;
    Ok(Json(json!({ "object": "list", "data": accounts })).into_response())
}

async fn get_account(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(existing_account(&s, &id).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct NewKey {
    name: Option<String>,
    role: Option<Role>,
    limits: Option<KeyLimits>,
}

async fn create_key(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Path(id): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req: NewKey = parse_body(&body)?;
    let issued = s
        .engine
        .keys
        .issue(
            &id,
            req.name.as_deref().unwrap_or("default"),
            req.role.unwrap_or(Role::User),
            req.limits.unwrap_or_default(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn list_keys(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    existing_account(&s, &id).await?;
    let keys = s.engine.store.list_keys(Some(id)).await?;
    Ok(Json(json!({ "object": "list", "data": keys })).into_response())
}

async fn revoke_key(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.engine.keys.revoke(&id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestsQuery {
    account_id: Option<String>,
    key_id: Option<String>,
    limit: Option<usize>,
}

async fn list_requests(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Extension(ctx): Extension<RequestCtx>,
    query: Result<Query<RequestsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 10000",
        ));
    }
    ctx.read_your_writes(&s).await;
    let records = s
        .engine
        .store
        .list_usage(RecordQuery {
            account_id: q.account_id,
            key_id: q.key_id,
            limit,
        })
        .await?;
    Ok(Json(json!({ "object": "list", "data": records })).into_response())
}

/// `from` / `to` (a date, RFC 3339 or Unix seconds; `to` of a date is inclusive) and
/// `account_id` of a re-pricing.
async fn reprice_params(
    s: &AppState,
    raw: Option<&str>,
) -> Result<(Option<String>, i64, i64), ApiError> {
    let p = Params::parse(raw);
    let tz = p.timezone()?;
    let start = p.instant("from", tz, false)?.unwrap_or(MIN_MS);
    let end = p.instant("to", tz, true)?.unwrap_or(MAX_MS);
    if end <= start {
        return Err(ApiError::invalid("to", "`to` must be after `from`"));
    }
    let account = p.get("account_id")?.map(String::from);
    if let Some(a) = &account {
        existing_account(s, a)
            .await
            .map_err(|e| e.with_param("account_id"))?;
    }
    Ok((account, start, end))
}

/// `GET /admin/reprice?from=&to=&account_id=`: the period re-priced with the table the gateway
/// runs now; after a price change, what the old requests would cost today.
async fn reprice_current(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Extension(ctx): Extension<RequestCtx>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let (account, start, end) = reprice_params(&s, q.as_deref()).await?;
    ctx.read_your_writes(&s).await;
    let out = reprice(
        &*s.engine.store,
        &s.engine.prices,
        account.as_deref(),
        start,
        end,
    )
    .await?;
    Ok(Json(out).into_response())
}

/// `POST /admin/reprice?from=&to=&account_id=` with a price file as the body (tollgate's
/// `{"models": [...]}` or LiteLLM's `model_prices_and_context_window.json`): the period
/// re-priced with that table. Changes nothing.
async fn reprice_with(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Extension(ctx): Extension<RequestCtx>,
    RawQuery(q): RawQuery,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let (account, start, end) = reprice_params(&s, q.as_deref()).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(Code::InvalidJson, "the price file is not UTF-8 text"))?;
    let table = PriceTable::from_file(text).map_err(|e| {
        ApiError::new(Code::InvalidRequest, format!("not a price file: {e}")).with_param("body")
    })?;
    ctx.read_your_writes(&s).await;
    let out = reprice(&*s.engine.store, &table, account.as_deref(), start, end).await?;
    Ok(Json(out).into_response())
}

async fn get_request(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    ctx.read_your_writes(&s).await;
    match s.engine.store.get_usage(&id).await? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::new(Code::NotFound, format!("no request {id}"))),
    }
}

/// The account, or 404 in the caller's shape.
async fn existing_account(
    s: &AppState,
    id: &str,
) -> Result<tollgate_core::account::Account, ApiError> {
    s.engine
        .store
        .get_account(id)
        .await?
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("no account {id}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountPatch {
    disabled: bool,
}

async fn update_account(
    State(s): State<SharedState>,
    admin: Admin,
    Path(id): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req: AccountPatch = parse_body(&body)?;
    s.engine
        .keys
        .set_account_disabled(&id, req.disabled)
        .await?;
    get_account(State(s), admin, Path(id)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyPatch {
    limits: KeyLimits,
}

async fn update_key(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Path(id): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req: KeyPatch = parse_body(&body)?;
    Ok(Json(s.engine.keys.set_limits(&id, req.limits).await?).into_response())
}

/// A grant or refund. The amount is given once: in USD as decimal text, or in credits.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditRequest {
    #[serde(default)]
    kind: Option<CreditKind>,
    amount_usd: Option<String>,
    amount_credits: Option<i64>,
    idempotency_key: Option<String>,
    note: Option<String>,
}

async fn add_credits(
    State(s): State<SharedState>,
    Admin(_): Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    existing_account(&s, &id).await?;
    let req: CreditRequest = parse_body(&body)?;
    let amount =
        match (&req.amount_usd, req.amount_credits) {
            (Some(usd), None) => tollgate_core::money::parse_decimal_scaled(usd, 9)
                .map_err(|e| ApiError::invalid("amount_usd", format!("amount_usd: {e}")))?,
            (None, Some(c)) => s.engine.credits.credits_to_nanos(c).ok_or_else(|| {
                ApiError::invalid("amount_credits", "amount_credits is too large")
            })?,
            _ => {
                return Err(ApiError::invalid(
                    "amount_usd",
                    "give exactly one of amount_usd or amount_credits",
                ))
            }
        };
    // The Idempotency-Key header is the conventional place; a body field works too.
    let header_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key = req.idempotency_key.or(header_key);
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(ApiError::invalid(
            "idempotency_key",
            "idempotency_key must be 1 to 255 characters",
        ));
    }
    let field = if req.amount_usd.is_some() {
        "amount_usd"
    } else {
        "amount_credits"
    };
    let (entry, created) = s
        .engine
        .credits
        .add(
            &id,
            req.kind.unwrap_or(CreditKind::Grant),
            amount,
            key,
            req.note,
            s.engine.clock.now_ms(),
        )
        .await
        .map_err(|mut e| {
            // The service names its argument; the caller gave it under one of two fields.
            if e.param.as_deref() == Some("amount") {
                e.message = format!("{field}: {}", e.message);
                e.param = Some(field.into());
            }
            ApiError::from(e)
        })?;
    let view = s.engine.credits.view(&id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "entry": entry,
            "replayed": !created,
            "balance_nanos": view.balance_nanos,
            "balance_credits": s.engine.credits.nanos_to_credits(view.balance_nanos),
        })),
    )
        .into_response())
}

async fn credit_audit(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    existing_account(&s, &id).await?;
    ctx.read_your_writes(&s).await;
    Ok(Json(s.engine.credits.audit(&id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderKeyBody {
    api_key: String,
}

async fn put_provider_key(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Path((id, provider)): Path<(String, String)>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    existing_account(&s, &id).await?;
    if !s.engine.router.providers.iter().any(|p| p.name == provider) {
        return Err(
            ApiError::new(Code::NotFound, format!("no provider {provider}")).with_param("provider"),
        );
    }
    let req: ProviderKeyBody = parse_body(&body)?;
    Ok(Json(
        s.engine
            .provider_keys
            .put(&id, &provider, &req.api_key, s.engine.clock.now_ms())
            .await?,
    )
    .into_response())
}

async fn delete_provider_key(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Path((id, provider)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    existing_account(&s, &id).await?;
    if !s.engine.provider_keys.delete(&id, &provider).await? {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no {provider} key stored for {id}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_provider_keys(
    State(s): State<SharedState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    existing_account(&s, &id).await?;
    Ok(
        Json(json!({"object": "list", "data": s.engine.provider_keys.list(&id).await?}))
            .into_response(),
    )
}
