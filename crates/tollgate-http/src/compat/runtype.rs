//! Runtype: `GET /v1/model-usage` (statistics with a time series; empty buckets appear with
//! zeros) and `GET /v1/model-usage/{modelConfigId}` (a model config and its recent requests,
//! newest first, paged by cursor). Costs are JSON numbers in USD of the model cost; `platform*`
//! is what ran on the gateway's provider keys, `user*` on the account's own keys
//! (`platformCost + userCost = totalCost`).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{Datelike, Duration, NaiveDate};
use serde::Serialize;

use super::model_configs::{self, config_id, ModelConfig};
use super::{page_params, usd};
use crate::error::ApiError;
use crate::extract::UsageQuery;
use crate::state::SharedState;
use tollgate_core::attribution::Tags;
use tollgate_core::calendar::{
    self as time, day_start, format_date, local_date, Grid, Unit, MAX_MS, MIN_MS,
};
use tollgate_core::money::div_round_half_up;
use tollgate_core::rollup::{Dims, RecordFilter, Sums};

/// Most time-series buckets one request may ask for.
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub start_date: String,
    pub end_date: String,
    pub data_source: &'static str,
    pub granularity: &'static str,
    pub period: String,
    pub timezone: String,
}

#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total_cost: f64,
    pub total_requests: i64,
    pub total_tokens: i64,
    pub platform_cost: f64,
    pub platform_tokens: i64,
    pub user_cost: f64,
    pub user_tokens: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelStats {
    pub avg_cost_per_request: f64,
    pub model_id: String,
    pub provider: String,
    pub request_count: i64,
    pub total_cost: f64,
    pub total_tokens: i64,
    pub model_name: String,
    pub model_config_id: String,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub cost: f64,
    pub date: String,
    pub requests: i64,
    pub tokens: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub meta: Meta,
    pub summary: Summary,
    pub usage_by_model: BTreeMap<String, ModelStats>,
    pub time_series: Vec<Point>,
}

/// First and last local dates (inclusive) of a preset period.
pub fn period_dates(period: &str, today: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    let d = |n: i64| today - Duration::days(n);
    Some(match period {
        "today" => (today, today),
        "yesterday" => (d(1), d(1)),
        "last_7_days" => (d(6), today),
        "last_30_days" => (d(29), today),
        "current_month" => (time::month_first(today), today),
        "last_month" => {
            let first = time::prev_month_first(today);
            (first, time::month_first(today) - Duration::days(1))
        }
        "current_year" => (NaiveDate::from_ymd_opt(today.year(), 1, 1)?, today),
        _ => return None,
    })
}

/// The preset periods, as error messages list them.
pub(crate) const PERIODS: &str =
    "today, yesterday, last_7_days, last_30_days, current_month, last_month, current_year";

fn cost_of(v: &Sums) -> i64 {
    v.cost_nanos
}

/// The range and buckets a Runtype statistics request asks for (`period` or `startDate` /
/// `endDate`, `granularity`, `timezone`); the dashboard's chart reads the same range.
pub(crate) struct Range {
    pub tz: chrono_tz::Tz,
    pub unit: Unit,
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub period: String,
    pub grid: Grid,
}

pub(crate) fn range(s: &SharedState, p: &crate::params::Params) -> Result<Range, ApiError> {
    let tz = p.timezone()?;
    let unit = match p.get("granularity")? {
        None => Unit::Day,
        Some(g) => match Unit::parse(g) {
            Some(u) if u != Unit::Minute => u,
            _ => {
                return Err(ApiError::invalid(
                    "granularity",
                    format!("`granularity` must be one of hour, day, week, month, got `{g}`"),
                ))
            }
        },
    };
    let today = local_date(tz, s.engine.clock.now_ms());
    let (start_date, end_date) = (p.date("startDate")?, p.date("endDate")?);
    let (first, last, period) = if start_date.is_some() || end_date.is_some() {
        let last = end_date.unwrap_or(today);
        let first = start_date.unwrap_or(last - Duration::days(29));
        (first, last, "custom".to_string())
    } else {
        let name = p.get("period")?.unwrap_or("last_30_days");
        let (a, b) = period_dates(name, today).ok_or_else(|| {
            ApiError::invalid(
                "period",
                format!("`period` must be one of {PERIODS}, got `{name}`"),
            )
        })?;
        (a, b, name.to_string())
    };
    if first > last {
        return Err(ApiError::invalid(
            "startDate",
            "`startDate` must not be after `endDate`",
        ));
    }
    let (start, end) = (
        day_start(tz, first),
        day_start(tz, last + Duration::days(1)),
    );
    let grid = Grid::new(tz, unit, start, end, MAX_BUCKETS).map_err(|e| {
        ApiError::invalid(
            "granularity",
            format!(
                "about {} {} buckets: at most {MAX_BUCKETS}; use a coarser granularity or a shorter range",
                e.0,
                unit.as_str()
            ),
        )
    })?;
    Ok(Range {
        tz,
        unit,
        first,
        last,
        period,
        grid,
    })
}

pub async fn stats(State(s): State<SharedState>, q: UsageQuery) -> Result<Json<Stats>, ApiError> {
    let p = &q.p;
    let Range {
        tz,
        unit,
        first,
        last,
        period,
        grid,
    } = range(&s, p)?;
    let scope = q.scope(&s).await?;
    let mut filter = scope.filter();
    if let Some(id) = p.get("modelConfigId")? {
        let cfg = model_configs::resolve(&s, &scope, id, "modelConfigId").await?;
        filter.models = vec![cfg.model_id];
        filter.providers = vec![cfg.provider];
    }
    q.read_your_writes(&s).await;

    let dims = Dims {
        model: true,
        provider: true,
        source: true,
        ..Dims::default()
    };
    let rows = s.engine.bucketed(filter, dims, &grid.bounds).await?;
    let mut per_bucket = vec![Sums::default(); grid.len()];
    let mut per_route: BTreeMap<(String, String), Sums> = BTreeMap::new();
    let (mut platform, mut user, mut total) = (Sums::default(), Sums::default(), Sums::default());
    for ((i, g), v) in rows {
        per_bucket[i].add(&v);
        total.add(&v);
        if g.source.as_deref() == Some("user") {
            user.add(&v);
        } else {
            platform.add(&v);
        }
        let route = (g.model.unwrap_or_default(), g.provider.unwrap_or_default());
        per_route.entry(route).or_default().add(&v);
    }
    // Keyed by model id; a model served by several providers is keyed `provider/model`.
    let mut providers_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (m, _) in per_route.keys() {
        *providers_of.entry(m.as_str()).or_default() += 1;
    }
    let mut usage_by_model = BTreeMap::new();
    for ((model, provider), v) in &per_route {
        let key = if providers_of.get(model.as_str()).copied().unwrap_or(0) > 1 {
            format!("{provider}/{model}")
        } else {
            model.clone()
        };
        let avg = if v.requests > 0 {
            div_round_half_up(i128::from(cost_of(v)), i128::from(v.requests)) as i64
        } else {
            0
        };
        usage_by_model.insert(
            key,
            ModelStats {
                avg_cost_per_request: usd(avg),
                model_id: model.clone(),
                provider: provider.clone(),
                request_count: v.requests,
                total_cost: usd(cost_of(v)),
                total_tokens: v.total_tokens(),
                model_name: model_configs::display_name(&s, model),
                model_config_id: config_id(provider, model),
            },
        );
    }
    Ok(Json(Stats {
        meta: Meta {
            start_date: format_date(first),
            end_date: format_date(last),
            data_source: "tollgate-rollups",
            granularity: unit.as_str(),
            period,
            timezone: tz.name().to_string(),
        },
        summary: Summary {
            total_cost: usd(cost_of(&total)),
            total_requests: total.requests,
            total_tokens: total.total_tokens(),
            platform_cost: usd(cost_of(&platform)),
            platform_tokens: platform.total_tokens(),
            user_cost: usd(cost_of(&user)),
            user_tokens: user.total_tokens(),
        },
        usage_by_model,
        time_series: per_bucket
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                cost: usd(cost_of(v)),
                date: grid.label(i),
                requests: v.requests,
                tokens: v.total_tokens(),
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailsMeta {
    pub data_source: &'static str,
    pub limit: usize,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentUsage {
    pub id: String,
    pub timestamp: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// USD, the model cost.
    pub estimated_cost: f64,
    /// Milliseconds from arrival to the last byte.
    pub execution_time: i64,
    pub status: String,
    /// The end user the request named, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    pub meta: DetailsMeta,
    pub model_config: ModelConfig,
    pub recent_usage: Vec<RecentUsage>,
}

pub async fn details(
    State(s): State<SharedState>,
    Path(id): Path<String>,
    q: UsageQuery,
) -> Result<Json<Details>, ApiError> {
    let p = &q.p;
    let tz = p.timezone()?;
    let (limit, cursor) = page_params(p, "nextCursor")?;
    let start = match p.date("startDate")? {
        Some(d) => day_start(tz, d),
        None => MIN_MS,
    };
    let end = match p.date("endDate")? {
        Some(d) => day_start(tz, d + Duration::days(1)),
        None => MAX_MS,
    };
    let scope = q.scope(&s).await?;
    let cfg = model_configs::resolve(&s, &scope, &id, "modelConfigId").await?;
    q.read_your_writes(&s).await;
    let filter = RecordFilter {
        model: Some(cfg.model_id.clone()),
        provider: Some(cfg.provider.clone()),
        ..scope.records(start, end)
    };
    let (records, next_cursor) = s.engine.newest_page(filter, cursor, limit).await?;
    let has_more = next_cursor.is_some();
    Ok(Json(Details {
        meta: DetailsMeta {
            data_source: "tollgate-records",
            limit,
            has_more,
            next_cursor,
        },
        model_config: cfg,
        recent_usage: records
            .into_iter()
            .map(|r| RecentUsage {
                timestamp: time::rfc3339(tz, r.created_at_ms, true),
                prompt_tokens: r.input_tokens,
                completion_tokens: r.output_tokens,
                total_tokens: r.input_tokens + r.output_tokens,
                estimated_cost: usd(r.cost_nanos),
                execution_time: r.latency_ms,
                status: r.status.as_str().to_string(),
                user: r.user,
                tags: r.tags,
                id: r.request_id,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::rollup::RecordCursor;

    fn d(s: &str) -> NaiveDate {
        time::parse_date(s).unwrap()
    }

    #[test]
    fn presets() {
        let today = d("2028-03-01");
        assert_eq!(period_dates("today", today), Some((today, today)));
        assert_eq!(
            period_dates("yesterday", today),
            Some((d("2028-02-29"), d("2028-02-29")))
        );
        assert_eq!(
            period_dates("last_7_days", today),
            Some((d("2028-02-24"), today))
        );
        assert_eq!(
            period_dates("last_30_days", today),
            Some((d("2028-02-01"), today))
        );
        assert_eq!(
            period_dates("current_month", today),
            Some((d("2028-03-01"), today))
        );
        assert_eq!(
            period_dates("last_month", today),
            Some((d("2028-02-01"), d("2028-02-29")))
        );
        assert_eq!(
            period_dates("current_year", today),
            Some((d("2028-01-01"), today))
        );
        assert_eq!(
            period_dates("last_month", d("2028-01-15")),
            Some((d("2027-12-01"), d("2027-12-31")))
        );
        assert_eq!(period_dates("forever", today), None);
    }

    #[test]
    fn cursors_round_trip() {
        let c = RecordCursor {
            created_at_ms: 1_835_395_200_000,
            request_id: "req_ab.cd".into(),
        };
        assert_eq!(RecordCursor::decode(&c.encode()), Some(c));
        assert_eq!(RecordCursor::decode("nope"), None);
        assert_eq!(RecordCursor::decode("12."), None);
    }
}
