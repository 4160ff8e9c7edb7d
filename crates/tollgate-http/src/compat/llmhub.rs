//! `GET /v1/usage`: LLMHub's billing-period summary and CrossModel's day/week/month windows in
//! one object (their field names do not collide), and `GET /v1/usage/models`: LLMHub's per-model
//! breakdown.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::Duration;
use serde::Serialize;

use super::{credits, currency, micro};
use crate::error::ApiError;
use crate::extract::UsageQuery;
use crate::state::SharedState;
use tollgate_core::calendar::{
    self as time, day_start, local_date, monday_of, month_first, next_month_first, Grid, Unit,
};
use tollgate_core::rollup::{Dims, Sums};

#[derive(Debug, Serialize)]
pub struct DailyRow {
    pub date: String,
    pub requests: i64,
    pub tokens: i64,
    pub credits: i64,
}

#[derive(Debug, Serialize, Default)]
pub struct Window {
    pub cost_micro: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub request_count: i64,
    pub success_count: i64,
}

impl Window {
    fn from(s: &Sums) -> Window {
        Window {
            cost_micro: micro(s.charged_nanos),
            prompt_tokens: s.input_tokens,
            completion_tokens: s.output_tokens,
            total_tokens: s.total_tokens(),
            request_count: s.requests,
            success_count: s.success,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UsageSummary {
    // LLMHub
    pub period_start: String,
    pub period_end: String,
    pub total_requests: i64,
    pub total_tokens: i64,
    pub total_credits_used: i64,
    pub credits_remaining: i64,
    pub daily_breakdown: Vec<DailyRow>,
    // CrossModel
    pub currency: String,
    pub daily: Window,
    pub weekly: Window,
    pub monthly: Window,
    // tollgate
    pub timezone: String,
}

pub async fn usage(
    State(s): State<SharedState>,
    q: UsageQuery,
) -> Result<Json<UsageSummary>, ApiError> {
    let (_caller, p) = (&q.caller, &q.p);
    let tz = p.timezone()?;
    let scope = q.scope(&s).await?;
    q.read_your_writes(&s).await;

    let now = s.engine.clock.now_ms();
    let today = local_date(tz, now);
    let (month, next_month) = (month_first(today), next_month_first(today));
    let monday = monday_of(today);
    let (period_start, period_end) = (day_start(tz, month), day_start(tz, next_month));
    let (week_start, week_end) = (
        day_start(tz, monday),
        day_start(tz, monday + Duration::days(7)),
    );
    let (day_start_ms, day_end) = (
        day_start(tz, today),
        day_start(tz, today + Duration::days(1)),
    );

    // Day buckets spanning the month and the ISO week (which may start in the previous month
    // or end in the next): one rollup read answers every number.
    let grid = Grid::new(
        tz,
        Unit::Day,
        period_start.min(week_start),
        period_end.max(week_end),
        64,
    )
    .map_err(|_| ApiError::internal("calendar grid too large"))?;
    let rows = s
        .engine
        .bucketed(scope.filter(), Dims::default(), &grid.bounds)
        .await?;
    let mut per_day = vec![Sums::default(); grid.len()];
    for ((i, _), v) in rows {
        per_day[i].add(&v);
    }
    let sum_in = |a: i64, b: i64| {
        let mut t = Sums::default();
        for (i, v) in per_day.iter().enumerate() {
            if grid.start(i) >= a && grid.end(i) <= b {
                t.add(v);
            }
        }
        t
    };
    let month_sums = sum_in(period_start, period_end);
    let mut daily_breakdown = Vec::new();
    for (i, v) in per_day.iter().enumerate().rev() {
        let (a, b) = (grid.start(i), grid.end(i));
        let in_month = a >= period_start && b <= period_end;
        // Days of the period up to today, and any later day that already has usage.
        if in_month && (a <= now || v.requests > 0) {
            daily_breakdown.push(DailyRow {
                date: grid.label(i),
                requests: v.requests,
                tokens: v.total_tokens(),
                credits: credits(&s, v.charged_nanos),
            });
        }
    }
    Ok(Json(UsageSummary {
        period_start: time::rfc3339(tz, period_start, false),
        period_end: time::rfc3339(tz, period_end - 1000, false),
        total_requests: month_sums.requests,
        total_tokens: month_sums.total_tokens(),
        total_credits_used: credits(&s, month_sums.charged_nanos),
        credits_remaining: credits(&s, s.engine.spendable_nanos(&scope.account_id).await?),
        daily_breakdown,
        currency: currency(&s),
        daily: Window::from(&sum_in(day_start_ms, day_end)),
        weekly: Window::from(&sum_in(week_start, week_end)),
        monthly: Window::from(&month_sums),
        timezone: tz.name().to_string(),
    }))
}

#[derive(Debug, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub credits_used: i64,
}

#[derive(Debug, Serialize)]
pub struct ModelsResponse {
    pub object: &'static str,
    pub data: Vec<ModelRow>,
    pub period_start: String,
    pub period_end: String,
}

/// The billing period (current calendar month) unless `start` / `end` narrow it.
pub async fn models(
    State(s): State<SharedState>,
    q: UsageQuery,
) -> Result<Json<ModelsResponse>, ApiError> {
    let (_caller, p) = (&q.caller, &q.p);
    let tz = p.timezone()?;
    let today = local_date(tz, s.engine.clock.now_ms());
    let start = p
        .instant("start", tz, false)?
        .unwrap_or_else(|| day_start(tz, month_first(today)));
    let end = p
        .instant("end", tz, true)?
        .unwrap_or_else(|| day_start(tz, next_month_first(today)));
    if end <= start {
        return Err(ApiError::invalid("end", "`end` must be after `start`"));
    }
    let scope = q.scope(&s).await?;
    q.read_your_writes(&s).await;
    let dims = Dims {
        model: true,
        ..Dims::default()
    };
    let by_model: BTreeMap<String, Sums> = s
        .engine
        .totals(scope.filter(), dims, start, end)
        .await?
        .into_iter()
        .map(|(g, v)| (g.model.unwrap_or_default(), v))
        .collect();
    let mut rows: Vec<(String, Sums)> = by_model.into_iter().collect();
    // Most credits first, as LLMHub's example; ties by name.
    rows.sort_by(|a, b| {
        b.1.charged_nanos
            .cmp(&a.1.charged_nanos)
            .then_with(|| a.0.cmp(&b.0))
    });
    Ok(Json(ModelsResponse {
        object: "list",
        data: rows
            .into_iter()
            .map(|(model, v)| ModelRow {
                model,
                requests: v.requests,
                prompt_tokens: v.input_tokens,
                completion_tokens: v.output_tokens,
                total_tokens: v.total_tokens(),
                credits_used: credits(&s, v.charged_nanos),
            })
            .collect(),
        period_start: time::rfc3339(tz, start, false),
        period_end: time::rfc3339(tz, end - 1000, false),
    }))
}
