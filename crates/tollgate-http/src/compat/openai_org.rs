//! OpenAI's Admin usage API, for admin keys: `GET /v1/organization/usage/completions` (chat
//! completions and messages), `GET /v1/organization/usage/embeddings` and
//! `GET /v1/organization/costs` (every request). The organization is the whole gateway; a
//! project is an account (`project_id` = account id), `api_key_id` a tollgate key id, `user_id`
//! the end user a request named (`x-tollgate-user`, OpenAI `user`, Anthropic
//! `metadata.user_id`; null for usage that named none), and `user_ids` filters by it. tollgate
//! has no batch API: `batch` is false when grouped by. Usage
//! resolution is one minute: the data read runs from `start_time` floored to the minute to
//! `end_time` rounded up to the minute, so a request made in the current minute is counted.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;

use super::usd;
use crate::extract::Admin;
use crate::params::Params;
use crate::state::{AppState, RequestCtx, SharedState};
use tollgate_core::calendar::{Grid, Unit, MAX_MS};
use tollgate_core::calendar::{HOUR_MS, MINUTE_MS};
use tollgate_core::record::Endpoint;
use tollgate_core::rollup::{AttrFilter, Dims, GroupKey, RollupFilter, Sums};
use tollgate_core::Code;

use crate::error::ApiError;

#[derive(Debug, Serialize)]
pub struct Bucket {
    pub object: &'static str,
    pub start_time: i64,
    pub end_time: i64,
    pub results: Vec<Value>,
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub object: &'static str,
    pub data: Vec<Bucket>,
    pub has_more: bool,
    pub next_page: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completions,
    Embeddings,
    Costs,
}

impl Kind {
    /// The endpoints whose requests this report counts (empty: all).
    fn endpoints(self) -> Vec<Endpoint> {
        match self {
            Kind::Completions => vec![
                Endpoint::ChatCompletions,
                Endpoint::Messages,
                Endpoint::Responses,
            ],
            Kind::Embeddings => vec![Endpoint::Embeddings],
            Kind::Costs => Vec::new(),
        }
    }
}

pub async fn completions(
    State(s): State<SharedState>,
    Admin(_): Admin,
    RawQuery(q): RawQuery,
    Extension(ctx): Extension<RequestCtx>,
) -> Result<Json<Page>, ApiError> {
    page(&s, &ctx, Kind::Completions, &Params::parse(q.as_deref()))
        .await
        .map(Json)
}

pub async fn embeddings(
    State(s): State<SharedState>,
    Admin(_): Admin,
    RawQuery(q): RawQuery,
    Extension(ctx): Extension<RequestCtx>,
) -> Result<Json<Page>, ApiError> {
    page(&s, &ctx, Kind::Embeddings, &Params::parse(q.as_deref()))
        .await
        .map(Json)
}

pub async fn costs(
    State(s): State<SharedState>,
    Admin(_): Admin,
    RawQuery(q): RawQuery,
    Extension(ctx): Extension<RequestCtx>,
) -> Result<Json<Page>, ApiError> {
    page(&s, &ctx, Kind::Costs, &Params::parse(q.as_deref()))
        .await
        .map(Json)
}

/// (unit, default buckets per page, max buckets per page)
fn width(kind: Kind, w: &str) -> Option<(Unit, i64, i64)> {
    match (kind, w) {
        (_, "1d") => Some((Unit::Day, 7, 31)),
        (Kind::Completions | Kind::Embeddings, "1h") => Some((Unit::Hour, 24, 168)),
        (Kind::Completions | Kind::Embeddings, "1m") => Some((Unit::Minute, 60, 1440)),
        _ => None,
    }
}

async fn page(s: &AppState, ctx: &RequestCtx, kind: Kind, p: &Params) -> Result<Page, ApiError> {
    let tz = p.timezone()?;
    let max_secs = MAX_MS / 1000;
    let start = p.int("start_time", 0, max_secs)?.ok_or_else(|| {
        ApiError::invalid("start_time", "`start_time` (Unix seconds) is required")
    })?;
    let now_ms = s.engine.clock.now_ms();
    let end_given = p.int("end_time", 0, max_secs)?;
    let end = end_given.unwrap_or(now_ms.div_euclid(1000).max(start + 1));
    if end <= start {
        return Err(ApiError::invalid(
            "end_time",
            "`end_time` must be after `start_time`",
        ));
    }
    let w = p.get("bucket_width")?.unwrap_or("1d");
    let (unit, default_limit, max_limit) = width(kind, w).ok_or_else(|| {
        let allowed = if kind == Kind::Costs {
            "1d"
        } else {
            "1m, 1h or 1d"
        };
        ApiError::invalid(
            "bucket_width",
            format!("`bucket_width` must be {allowed}, got `{w}`"),
        )
    })?;
    let limit = p.int("limit", 1, max_limit)?.unwrap_or(default_limit) as usize;
    let mut dims = Dims::default();
    let (mut by_batch, mut by_line_item) = (false, false);
    for g in p.all("group_by") {
        match (kind, g.as_str()) {
            (_, "project_id") => dims.account = true,
            (Kind::Completions | Kind::Embeddings, "api_key_id") => dims.key = true,
            (Kind::Completions | Kind::Embeddings, "model") => dims.model = true,
            (Kind::Completions | Kind::Embeddings, "user_id") => dims.user = true,
            (Kind::Completions, "batch") => by_batch = true,
            (Kind::Costs, "line_item") => {
                by_line_item = true;
                dims.model = true;
            }
            _ => {
                let allowed = match kind {
                    Kind::Costs => "project_id, line_item",
                    Kind::Completions => "project_id, user_id, api_key_id, model, batch",
                    Kind::Embeddings => "project_id, user_id, api_key_id, model",
                };
                return Err(ApiError::invalid(
                    "group_by",
                    format!("`group_by` values must be among {allowed}, got `{g}`"),
                ));
            }
        }
    }
    let mut filter = RollupFilter::default();
    let mut projects = p.all("project_ids");
    if let Some(a) = p.get("account_id")? {
        if s.engine.store.get_account(a).await?.is_none() {
            return Err(
                ApiError::new(Code::NotFound, format!("no account `{a}`")).with_param("account_id")
            );
        }
        projects.push(a.to_string());
    }
    if !projects.is_empty() {
        filter.accounts = Some(projects);
    }
    filter.key_ids = p.all("api_key_ids");
    if let Some(k) = p.get("key_id")? {
        filter.key_ids.push(k.to_string());
    }
    filter.models = p.all("models");
    filter.endpoints = kind.endpoints();
    let users = p.users("user_ids")?;
    if !users.is_empty() {
        filter.attribution = AttrFilter::Users(users);
    }

    // Pages are runs of `limit` buckets; `page` is where the next run starts.
    let range_start = start * 1000;
    let range_end = end * 1000;
    // Without `end_time` the data runs to now, to the millisecond (`end_time` shows the second).
    let data_end = match end_given {
        Some(_) => range_end,
        None => range_end.max(now_ms + 1),
    };
    let page_start = match p.get("page")? {
        None => range_start,
        Some(v) => v
            .strip_prefix("page_")
            .and_then(|n| n.parse::<i64>().ok())
            .map(|secs| secs * 1000)
            .filter(|t| (range_start..data_end).contains(t))
            .ok_or_else(|| {
                ApiError::invalid(
                    "page",
                    "`page` must be a `next_page` from a previous response",
                )
            })?,
    };
    let floor_min = |t: i64| t.div_euclid(MINUTE_MS) * MINUTE_MS;
    let page_start_min = floor_min(page_start);
    // Rounded up: the minute the range ends in is read whole, so a request made a moment ago
    // (in the current, unfinished minute) is in the last bucket. Pages split at whole minutes
    // below this, so no minute is read by two pages.
    let range_end_min =
        floor_min(data_end.saturating_add(MINUTE_MS - 1)).max(page_start_min + MINUTE_MS);
    // Enough time for `limit + 1` buckets (a local day is at most 26 hours), so the grid shows
    // whether more follow without walking the whole range.
    let longest = match unit {
        Unit::Minute => MINUTE_MS,
        Unit::Hour => 2 * HOUR_MS,
        _ => 26 * HOUR_MS,
    };
    let window_end = range_end_min.min(page_start_min + (limit as i64 + 2) * longest);
    let grid = Grid::new(tz, unit, page_start_min, window_end, 4 * limit + 8)
        .map_err(|_| ApiError::internal("organization usage grid too large"))?;
    let n = grid.len().min(limit);
    let has_more = grid.len() > limit;
    let bounds: Vec<i64> = grid.bounds[..=n].to_vec();
    ctx.read_your_writes(s).await;
    let rows = s.engine.bucketed(filter, dims, &bounds).await?;
    let mut per_bucket: Vec<BTreeMap<GroupKey, Sums>> = vec![BTreeMap::new(); n];
    for ((i, g), v) in rows {
        per_bucket[i].entry(g).or_default().add(&v);
    }
    let secs = |ms: i64| ms.div_euclid(1000);
    let mut data = Vec::with_capacity(n);
    for (i, groups) in per_bucket.into_iter().enumerate() {
        // The requested start, not the minute it was floored to, opens the first bucket.
        let a = if i == 0 && page_start == range_start {
            range_start
        } else {
            bounds[i]
        };
        let b = if bounds[i + 1] == range_end_min {
            range_end
        } else {
            bounds[i + 1]
        };
        let results = groups
            .into_iter()
            .filter(|(_, v)| v.requests > 0)
            .map(|(g, v)| match kind {
                Kind::Completions => completion_result(&g, &v, by_batch),
                Kind::Embeddings => embedding_result(&g, &v),
                Kind::Costs => cost_result(&g, &v, by_line_item),
            })
            .collect();
        data.push(Bucket {
            object: "bucket",
            start_time: secs(a),
            end_time: secs(b),
            results,
        });
    }
    let next_page = has_more.then(|| format!("page_{}", secs(grid.bounds[n])));
    Ok(Page {
        object: "page",
        data,
        has_more,
        next_page,
    })
}

fn completion_result(g: &GroupKey, v: &Sums, by_batch: bool) -> Value {
    serde_json::json!({
        "object": "organization.usage.completions.result",
        "input_tokens": v.input_tokens,
        "output_tokens": v.output_tokens,
        "input_cached_tokens": v.cached_tokens,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": v.requests,
        "project_id": g.account_id,
        "user_id": g.user,
        "api_key_id": g.key_id,
        "model": g.model,
        "batch": if by_batch { Value::Bool(false) } else { Value::Null },
        "service_tier": Value::Null,
    })
}

fn embedding_result(g: &GroupKey, v: &Sums) -> Value {
    serde_json::json!({
        "object": "organization.usage.embeddings.result",
        "input_tokens": v.input_tokens,
        "num_model_requests": v.requests,
        "project_id": g.account_id,
        "user_id": g.user,
        "api_key_id": g.key_id,
        "model": g.model,
    })
}

fn cost_result(g: &GroupKey, v: &Sums, by_line_item: bool) -> Value {
    serde_json::json!({
        "object": "organization.costs.result",
        "amount": {"value": usd(v.charged_nanos), "currency": "usd"},
        "line_item": if by_line_item { g.model.clone().map(Value::String).unwrap_or(Value::Null) } else { Value::Null },
        "project_id": g.account_id,
    })
}
