//! `GET /v1/usage/insights`: where the account's money leaks in a period (duplicates, retry
//! loops, abandoned responses, growing conversations, the model mix, the prompt cache), each
//! with its cost and a page of the records behind it. Thin: the range is read here, the
//! analyses are the engine's (`Engine::insights`) and core's (`insights::analyze`).

use axum::extract::State;
use axum::Json;
use chrono::Duration;
use serde_json::{json, Value};
use tollgate_core::calendar::{self as time, day_start, local_date};
use tollgate_core::insights::Paging;
use tollgate_engine::insights::InsightsQuery;

use crate::compat::runtype::{period_dates, PERIODS};
use crate::error::ApiError;
use crate::extract::UsageQuery;
use crate::state::SharedState;

/// The sections of the answer, in order; `section=` narrows the answer to one of them.
pub const SECTIONS: [&str; 6] = [
    "duplicates",
    "retry_loops",
    "unused_responses",
    "conversation_growth",
    "model_mix",
    "cache",
];

/// The longest period one query may read: a year (each query is a scan of the records).
const MAX_RANGE_MS: i64 = 366 * 86_400_000;

pub async fn insights(
    State(s): State<SharedState>,
    q: UsageQuery,
) -> Result<Json<Value>, ApiError> {
    let p = &q.p;
    let tz = p.timezone()?;
    let now = s.engine.clock.now_ms();
    let (start, end, period) = match (p.instant("start", tz, false)?, p.instant("end", tz, true)?) {
        (None, None) => {
            let name = p.get("period")?.unwrap_or("last_30_days");
            let (first, last) = period_dates(name, local_date(tz, now)).ok_or_else(|| {
                ApiError::invalid(
                    "period",
                    format!("`period` must be one of {PERIODS}, got `{name}`"),
                )
            })?;
            let end = day_start(tz, last + Duration::days(1));
            (day_start(tz, first), end, name.to_string())
        }
        (start, end) => {
            let end = end.unwrap_or(now);
            (
                start.unwrap_or(end - 30 * 86_400_000),
                end,
                "custom".to_string(),
            )
        }
    };
    if start >= end {
        return Err(ApiError::invalid("start", "`start` must be before `end`"));
    }
    if end - start > MAX_RANGE_MS {
        return Err(ApiError::invalid(
            "start",
            "the range is longer than 366 days; ask for a shorter one",
        ));
    }
    let section = match p.get("section")? {
        None => None,
        Some(name) if SECTIONS.contains(&name) => Some(name),
        Some(name) => {
            return Err(ApiError::invalid(
                "section",
                format!(
                    "`section` must be one of {}, got `{name}`",
                    SECTIONS.join(", ")
                ),
            ))
        }
    };
    let max_tokens =
        i64::try_from(tollgate_core::record::bounds::MAX_TOKENS_PER_REQUEST).unwrap_or(i64::MAX);
    let history_cap = p.int("history_cap", 0, max_tokens)?;
    let limit = p.int("limit", 0, 1000)?.unwrap_or(20);
    let offset = p.int("offset", 0, i64::from(u32::MAX))?.unwrap_or(0);
    let scope = q.scope(&s).await?;
    if !scope.users.is_empty() || scope.tag.is_some() {
        let param = if scope.tag.is_some() { "tag" } else { "user" };
        return Err(ApiError::invalid(
            param,
            "the insights cover an account or one of its keys; `user` and `tag` are not supported here",
        ));
    }
    q.read_your_writes(&s).await;
    let found = s
        .engine
        .insights(InsightsQuery {
            account_id: scope.account_id.clone(),
            key_id: scope.key_id.clone(),
            start_ms: start,
            end_ms: end,
            history_cap_tokens: history_cap.and_then(|c| u64::try_from(c).ok()),
            paging: Paging {
                offset: usize::try_from(offset).unwrap_or(0),
                limit: usize::try_from(limit).unwrap_or(20),
            },
        })
        .await?;
    let mut body = serde_json::to_value(&found).map_err(ApiError::internal)?;
    if let (Some(keep), Some(o)) = (section, body.as_object_mut()) {
        o.retain(|k, _| !SECTIONS.contains(&k.as_str()) || k == keep);
    }
    let meta = json!({
        "object": "usage.insights",
        "account_id": scope.account_id,
        "key_id": scope.key_id,
        "start": time::rfc3339(tz, start, false),
        "end": time::rfc3339(tz, end, false),
        "period": period,
        "timezone": tz.name(),
        "fingerprints": if s.engine.fingerprinting() { "on" } else { "off" },
    });
    if let (Some(b), Value::Object(m)) = (body.as_object_mut(), meta) {
        for (k, v) in m {
            b.insert(k, v);
        }
    }
    Ok(Json(body))
}
