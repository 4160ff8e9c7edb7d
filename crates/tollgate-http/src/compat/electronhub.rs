//! ElectronHub: `GET /v1/user/models` (per-model breakdown, all time unless `start`/`end`) and
//! `GET /v1/user/me` (remaining credits, all-time tokens, daily request history, requests per
//! endpoint). ElectronHub's credits are USD: money fields are JSON numbers in USD.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::Duration;
use serde::Serialize;

use super::{page_params, usd};
use crate::error::ApiError;
use crate::extract::UsageQuery;
use crate::state::SharedState;
use tollgate_core::attribution::Tags;
use tollgate_core::calendar::{self as time, day_start, local_date, Grid, Unit, MAX_MS, MIN_MS};
use tollgate_core::record::Status;
use tollgate_core::rollup::{Dims, RecordFilter, Sums};

#[derive(Debug, Serialize)]
pub struct ModelEntry {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_cost: f64,
    pub owned_by: String,
}

#[derive(Debug, Serialize)]
pub struct ModelBreakdown {
    pub total_consumption: f64,
    pub models: BTreeMap<String, ModelEntry>,
    pub last_updated: String,
}

pub async fn models(
    State(s): State<SharedState>,
    q: UsageQuery,
) -> Result<Json<ModelBreakdown>, ApiError> {
    let (_caller, p) = (&q.caller, &q.p);
    let tz = p.timezone()?;
    let start = p.instant("start", tz, false)?.unwrap_or(MIN_MS);
    let end = p.instant("end", tz, true)?.unwrap_or(MAX_MS);
    if end <= start {
        return Err(ApiError::invalid("end", "`end` must be after `start`"));
    }
    let scope = q.scope(&s).await?;
    q.read_your_writes(&s).await;
    let dims = Dims {
        model: true,
        provider: true,
        ..Dims::default()
    };
    let rows = s.engine.totals(scope.filter(), dims, start, end).await?;
    // Sum per model first (a model may have been served by more than one provider).
    let mut per_model: BTreeMap<String, (Sums, String)> = BTreeMap::new();
    let mut total = Sums::default();
    for (g, v) in rows {
        let model = g.model.unwrap_or_default();
        let provider = g.provider.unwrap_or_default();
        let e = per_model
            .entry(model)
            .or_insert_with(|| (Sums::default(), provider));
        e.0.add(&v);
        total.add(&v);
    }
    let models = per_model
        .into_iter()
        .map(|(model, (v, provider))| {
            // Who makes the model, from the price table (as metered); else the provider.
            let owned_by = s
                .engine
                .prices
                .get(&model)
                .map(|p| p.owned_by.clone())
                .filter(|o| !o.is_empty())
                .unwrap_or(provider);
            let entry = ModelEntry {
                requests: v.requests,
                input_tokens: v.input_tokens,
                output_tokens: v.output_tokens,
                total_cost: usd(v.charged_nanos),
                owned_by,
            };
            (model, entry)
        })
        .collect();
    let latest = s
        .engine
        .store
        .records_page(scope.records(MIN_MS, MAX_MS), None, true, 1)
        .await?;
    let last_ms = latest
        .first()
        .map(|r| r.finished_at_ms)
        .unwrap_or_else(|| s.engine.clock.now_ms());
    Ok(Json(ModelBreakdown {
        total_consumption: usd(total.charged_nanos),
        models,
        last_updated: time::rfc3339(chrono_tz::UTC, last_ms, false),
    }))
}

#[derive(Debug, Serialize)]
pub struct TokenUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

#[derive(Debug, Serialize)]
pub struct HistoryRow {
    pub date: String,
    pub requests: i64,
}

#[derive(Debug, Serialize)]
pub struct Me {
    /// Not modelled by tollgate.
    pub subscription: Option<()>,
    /// Credits remaining, in USD.
    pub credits: f64,
    pub usage: TokenUsage,
    pub history: Vec<HistoryRow>,
    pub endpoints: BTreeMap<String, i64>,
}

/// The endpoints tollgate serves, always listed (0 when unused).
const ENDPOINTS: [&str; 4] = ["chat.completions", "embeddings", "messages", "responses"];

pub async fn me(State(s): State<SharedState>, q: UsageQuery) -> Result<Json<Me>, ApiError> {
    let (_caller, p) = (&q.caller, &q.p);
    let tz = p.timezone()?;
    let days = p.int("days", 1, 366)?.unwrap_or(30);
    let scope = q.scope(&s).await?;
    q.read_your_writes(&s).await;

    let today = local_date(tz, s.engine.clock.now_ms());
    let first = today - Duration::days(days - 1);
    let (hist_start, hist_end) = (
        day_start(tz, first),
        day_start(tz, today + Duration::days(1)),
    );
    let grid = Grid::new(tz, Unit::Day, hist_start, hist_end, 400)
        .map_err(|_| ApiError::invalid("days", "too many days"))?;
    // Buckets: all time before the history, each history day, and after it.
    let mut bounds = vec![MIN_MS];
    bounds.extend(&grid.bounds);
    bounds.push(MAX_MS);
    let dims = Dims {
        endpoint: true,
        ..Dims::default()
    };
    let rows = s.engine.bucketed(scope.filter(), dims, &bounds).await?;
    let mut endpoints: BTreeMap<String, i64> =
        ENDPOINTS.iter().map(|e| (e.to_string(), 0)).collect();
    let mut all = Sums::default();
    let mut per_day = vec![0i64; grid.len()];
    for ((i, g), v) in rows {
        all.add(&v);
        *endpoints.entry(g.endpoint.unwrap_or_default()).or_default() += v.requests;
        if i >= 1 && i <= grid.len() {
            per_day[i - 1] += v.requests;
        }
    }
    Ok(Json(Me {
        subscription: None,
        credits: usd(s.engine.spendable_nanos(&scope.account_id).await?),
        usage: TokenUsage {
            input_tokens: all.input_tokens,
            output_tokens: all.output_tokens,
        },
        history: per_day
            .iter()
            .enumerate()
            .map(|(i, &requests)| HistoryRow {
                date: grid.label(i),
                requests,
            })
            .collect(),
        endpoints,
    }))
}

/// One row of ElectronHub's request log.
#[derive(Debug, Serialize)]
pub struct LogRow {
    pub id: String,
    /// The key, masked: prefix, an ellipsis and its last four characters.
    pub key: String,
    pub key_id: String,
    pub model: String,
    /// The endpoint, e.g. `chat.completions`.
    pub route: String,
    /// What the account was debited, in USD (like the other ElectronHub money fields).
    pub credits: f64,
    /// Unix seconds.
    pub timestamp: i64,
    pub status: String,
    /// Client addresses are not recorded.
    pub ip: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// The end user the request named (`x-tollgate-user`, `user`, `metadata.user_id`); both
    /// fields are left out when the request named none, so the seed shape is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `x-tollgate-tags`, as an object.
    #[serde(skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

#[derive(Debug, Serialize)]
pub struct Logs {
    pub object: &'static str,
    pub data: Vec<LogRow>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// ElectronHub's log statuses are success, cancelled and error: a request the gateway refused, or
/// died serving, is an error there (the export and Runtype keep the exact status).
fn log_status(s: Status) -> &'static str {
    match s {
        Status::Success => "success",
        Status::Cancelled => "cancelled",
        Status::Error | Status::Interrupted | Status::Refused => "error",
    }
}

/// `GET /v1/user/logs`: the account's requests, newest first, `limit` (1–1000, default 50) per
/// page, continued with `cursor`; optional `start`/`end`, `model`, `key_id`.
pub async fn logs(State(s): State<SharedState>, q: UsageQuery) -> Result<Json<Logs>, ApiError> {
    let (_caller, p) = (&q.caller, &q.p);
    let tz = p.timezone()?;
    let (limit, cursor) = page_params(p, "next_cursor")?;
    let start = p.instant("start", tz, false)?.unwrap_or(MIN_MS);
    let end = p.instant("end", tz, true)?.unwrap_or(MAX_MS);
    if end <= start {
        return Err(ApiError::invalid("end", "`end` must be after `start`"));
    }
    let scope = q.scope(&s).await?;
    q.read_your_writes(&s).await;
    let filter = RecordFilter {
        model: p.get("model")?.map(str::to_string),
        ..scope.records(start, end)
    };
    let (records, next_cursor) = s.engine.newest_page(filter, cursor, limit).await?;
    let has_more = next_cursor.is_some();
    let keys: BTreeMap<String, String> = s
        .engine
        .store
        .list_keys(Some(scope.account_id.clone()))
        .await?
        .into_iter()
        .map(|k| (k.id, format!("{}…{}", k.prefix, k.last4)))
        .collect();
    Ok(Json(Logs {
        object: "list",
        data: records
            .into_iter()
            .map(|r| LogRow {
                key: keys.get(&r.key_id).cloned().unwrap_or_default(),
                credits: usd(r.charged_nanos),
                timestamp: r.created_at_ms.div_euclid(1000),
                status: log_status(r.status).to_string(),
                ip: None,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                model: r.model_requested,
                user: r.user,
                tags: r.tags,
                route: r.endpoint.as_str().to_string(),
                key_id: r.key_id,
                id: r.request_id,
            })
            .collect(),
        has_more,
        next_cursor,
    }))
}
