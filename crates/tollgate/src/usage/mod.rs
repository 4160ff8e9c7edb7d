//! Usage APIs: every seed platform's usage endpoint, read from rollups (see docs/usage-api.md).
//!
//! - `llmhub`: `GET /v1/usage` (LLMHub and CrossModel in one object), `GET /v1/usage/models`
//! - `electronhub`: `GET /v1/user/models`, `GET /v1/user/me`
//! - `runtype`: `GET /v1/model-usage`, `GET /v1/model-usage/{modelConfigId}`
//! - `export`: `GET /v1/usage/export` (CSV, JSON array or NDJSON, streamed)
//! - `openai_org`: `GET /v1/organization/usage/completions`, `GET /v1/organization/costs`
//!
//! Handlers are thin: they resolve the caller's scope, turn parameters into bucket bounds
//! (`time`), and fold the rollup rows (`cover` picks which rows) into each platform's shape.

pub mod cover;
mod electronhub;
mod export;
mod llmhub;
pub mod model_configs;
mod openai_org;
mod openapi;
pub mod params;
mod runtype;
pub mod store;
pub mod time;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use self::params::Params;
use self::store::{Dims, GroupKey, RollupFilter, Sums};
use crate::app::AppState;
use crate::auth::Caller;
use crate::credits::CreditView;
use crate::error::{ApiError, ErrorCode};
use crate::ledger::Role;
use crate::metering::money::{div_round_half_up, nanos_to_usd_f64};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/usage", get(llmhub::usage))
        .route("/v1/usage/models", get(llmhub::models))
        .route("/v1/usage/export", get(export::export))
        .route("/v1/user/models", get(electronhub::models))
        .route("/v1/user/me", get(electronhub::me))
        .route("/v1/user/logs", get(electronhub::logs))
        .route("/v1/model-usage", get(runtype::stats))
        .route("/v1/model-usage/{model_config_id}", get(runtype::details))
        .route(
            "/v1/organization/usage/completions",
            get(openai_org::completions),
        )
        .route("/v1/organization/costs", get(openai_org::costs))
        .route("/openapi.json", get(openapi::document))
}

/// Whose usage a request reads: the caller's account unless an admin names another.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub account_id: String,
    pub key_id: Option<String>,
}

impl Scope {
    pub fn filter(&self) -> RollupFilter {
        RollupFilter {
            accounts: Some(vec![self.account_id.clone()]),
            key_ids: self.key_id.iter().cloned().collect(),
            ..RollupFilter::default()
        }
    }
}

fn not_found(param: &str, what: &str, id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no {what} `{id}`")).with_param(param)
}

/// Resolves `account_id` / `key_id`: a user key may only name its own account and its keys
/// (anything else is 404, as if it did not exist); an admin key may name any.
pub(crate) async fn scope(s: &AppState, caller: &Caller, p: &Params) -> Result<Scope, ApiError> {
    let store = &s.ledger.store;
    let mut account_id = caller.account_id.clone();
    if let Some(id) = p.get("account_id")? {
        if caller.role != Role::Admin && id != caller.account_id {
            return Err(not_found("account_id", "account", id));
        }
        if store.get_account(id).await?.is_none() {
            return Err(not_found("account_id", "account", id));
        }
        account_id = id.to_string();
    }
    let mut key_id = None;
    if let Some(id) = p.get("key_id")? {
        let key = store.get_key(id).await?;
        let Some(key) = key else {
            return Err(not_found("key_id", "API key", id));
        };
        let named_account = p.get("account_id")?.is_some();
        if caller.role == Role::Admin && !named_account {
            account_id = key.account_id.clone();
        } else if key.account_id != account_id {
            return Err(not_found("key_id", "API key", id));
        }
        key_id = Some(key.id);
    }
    Ok(Scope { account_id, key_id })
}

/// Sums per (bucket, group) for the buckets `bounds[i]..bounds[i+1]`. Bounds are floored to
/// the minute, the rollups' finest grain. Always sums integers; callers convert once per
/// displayed number.
pub(crate) async fn bucketed(
    s: &AppState,
    filter: RollupFilter,
    dims: Dims,
    bounds: &[i64],
) -> Result<BTreeMap<(usize, GroupKey), Sums>, ApiError> {
    let floored: Vec<i64> = bounds
        .iter()
        .map(|&b| b.div_euclid(store::MINUTE_MS) * store::MINUTE_MS)
        .collect();
    let aligned = cover::align(&floored);
    let plan = cover::plan(&aligned);
    if plan.segments.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = s
        .usage
        .rollup_rows(filter, dims, plan.segments.clone())
        .await?;
    // Buckets of the aligned bounds back to the caller's (a bucket shorter than a minute is
    // empty and was dropped by `align`).
    let index: Vec<usize> = aligned
        .iter()
        .map(|a| floored.partition_point(|f| f <= a) - 1)
        .collect();
    Ok(cover::fold(&plan, &aligned, rows)
        .into_iter()
        .map(|((i, g), v)| ((index[i], g), v))
        .collect())
}

/// Sums per group over one range.
pub(crate) async fn totals(
    s: &AppState,
    filter: RollupFilter,
    dims: Dims,
    start_ms: i64,
    end_ms: i64,
) -> Result<BTreeMap<GroupKey, Sums>, ApiError> {
    if end_ms <= start_ms {
        return Ok(BTreeMap::new());
    }
    let rows = bucketed(s, filter, dims, &[start_ms, end_ms]).await?;
    Ok(rows.into_iter().map(|((_, g), v)| (g, v)).collect())
}

/// The caller's request is visible once its response completed: wait for the batch writer.
/// `limit` (1–1000, default 50) and `cursor` of a newest-first page of raw records; `cursor_field`
/// names the response field the cursor came from, for the error message.
pub(crate) fn page_params(
    p: &Params,
    cursor_field: &str,
) -> Result<(usize, Option<store::RecordCursor>), ApiError> {
    let limit = p.int("limit", 1, 1000)?.unwrap_or(50) as usize;
    let cursor = match p.get("cursor")? {
        None => None,
        Some(v) => Some(store::RecordCursor::decode(v).ok_or_else(|| {
            ApiError::invalid(
                "cursor",
                format!("`cursor` must be a `{cursor_field}` from a previous page"),
            )
        })?),
    };
    Ok((limit, cursor))
}

/// One newest-first page of raw records, and the cursor of the next page if there is one.
pub(crate) async fn newest_page(
    s: &AppState,
    filter: store::RecordFilter,
    cursor: Option<store::RecordCursor>,
    limit: usize,
) -> Result<(Vec<crate::ledger::UsageRecord>, Option<String>), ApiError> {
    let mut records = s
        .usage
        .records_page(filter, cursor, true, limit + 1)
        .await?;
    let next = if records.len() > limit {
        records.truncate(limit);
        records.last().map(|r| {
            store::RecordCursor {
                created_at_ms: r.created_at_ms,
                request_id: r.request_id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok((records, next))
}

pub(crate) async fn read_your_writes(s: &AppState) {
    s.ledger.flush().await;
}

// ---- money: integer nano-USD sums in, one conversion per displayed number ----

/// USD as a JSON number (ElectronHub, Runtype, OpenAI costs).
pub(crate) fn usd(nanos: i64) -> f64 {
    nanos_to_usd_f64(nanos)
}

/// Micro-units of the currency, rounded half up (CrossModel `cost_micro`).
pub(crate) fn micro(nanos: i64) -> i64 {
    div_round_half_up(i128::from(nanos), 1000) as i64
}

/// Integer credits (LLMHub), at `credits.per_usd` credits per USD, rounded down.
pub(crate) fn credits(s: &AppState, nanos: i64) -> i64 {
    s.credits.nanos_to_credits(nanos)
}

pub(crate) fn currency(s: &AppState) -> String {
    s.credits.config().currency.clone()
}

/// The one place the usage APIs read an account's balance.
pub(crate) async fn credits_for(s: &AppState, account_id: &str) -> Result<CreditView, ApiError> {
    s.credits.view(account_id).await
}

/// What the account can still spend: balance minus what requests in flight hold, nano-USD.
pub(crate) async fn spendable_nanos(s: &AppState, account_id: &str) -> Result<i64, ApiError> {
    let v = credits_for(s, account_id).await?;
    Ok(v.balance_nanos - v.held_nanos)
}
